//! Rate-limit buckets in the database, so every server process on it spends one budget per key.
//!
//! Each key is a GCRA bucket (the algorithm `governor` implements in memory): attempts are
//! spaced `60 s / per_minute` apart on average, with bursts of up to `per_minute`. The state is
//! one number, the theoretical arrival time of the next free attempt, moved on by a single
//! upsert, so two replicas counting the same key at once are serialized by the row and never
//! both take its last attempt. The policy (which keys, which limits) is the caller's.

use std::time::Duration;

use crate::Db;

/// How often a key may be used: `per_minute` on average, in bursts of up to as many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
}

impl Quota {
    /// The spacing between attempts, in ms (at least 1).
    fn interval_ms(self) -> i64 {
        (60_000 / i64::from(self.per_minute.max(1))).max(1)
    }

    /// How far ahead of now the bucket's arrival time may be for one more attempt to pass.
    fn tolerance_ms(self) -> i64 {
        self.interval_ms() * (i64::from(self.per_minute.max(1)) - 1)
    }
}

/// Counts one attempt on `key` at `now` (ms). `Ok(None)` when it passes; `Ok(Some(wait))` when
/// the bucket is empty, with how long until the next attempt would pass. A refused attempt
/// changes nothing.
pub async fn take(db: &Db, key: &str, quota: Quota, now: i64) -> Result<Option<Duration>, sqlx::Error> {
    let (interval, tolerance) = (quota.interval_ms(), quota.tolerance_ms());
    // An attempt passes while the bucket's arrival time is at most `tolerance` ahead of now; it
    // then moves on by one interval, from now when the bucket has been idle (arrival time
    // passed). Both SET expressions see the row as it was.
    let (tat, allowed): (i64, i64) = sqlx::query_as(
        "insert into rate_buckets (key, tat, allowed) values ($1, $2 + $3, 1)
         on conflict (key) do update set
           allowed = case when rate_buckets.tat <= $2 + $4 then 1 else 0 end,
           tat = case when rate_buckets.tat <= $2 then $2 + $3
                      when rate_buckets.tat <= $2 + $4 then rate_buckets.tat + $3
                      else rate_buckets.tat end
         returning tat, allowed",
    )
    .bind(key)
    .bind(now)
    .bind(interval)
    .bind(tolerance)
    .fetch_one(&db.writer)
    .await?;
    if allowed == 1 {
        return Ok(None);
    }
    let wait_ms = (tat - now - tolerance).max(1);
    Ok(Some(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))))
}

/// Records that `account` signed in from `address` at `now`.
pub async fn remember_sign_in(db: &Db, account: &str, address: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into known_sign_ins (account, address, seen_at) values ($1, $2, $3)
         on conflict (account, address) do update set seen_at = excluded.seen_at",
    )
    .bind(account)
    .bind(address)
    .bind(now)
    .execute(&db.writer)
    .await?;
    Ok(())
}

/// True when `account` signed in from `address` before.
pub async fn signed_in_before(db: &Db, account: &str, address: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("select seen_at from known_sign_ins where account = $1 and address = $2")
        .bind(account)
        .bind(address)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.is_some())
}

/// Removes buckets that are full again at `now` (they hold nothing a fresh bucket would not)
/// and sign-in addresses not used since `forget_before`. Returns the rows removed.
pub async fn prune(db: &Db, now: i64, forget_before: i64) -> Result<u64, sqlx::Error> {
    let buckets = sqlx::query("delete from rate_buckets where tat <= $1").bind(now).execute(&db.writer).await?;
    let known = sqlx::query("delete from known_sign_ins where seen_at < $1").bind(forget_before).execute(&db.writer).await?;
    Ok(buckets.rows_affected() + known.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_admits_a_full_burst() {
        let quota = Quota { per_minute: 20 };
        assert_eq!(quota.interval_ms(), 3_000);
        // An idle bucket starts at now; after k attempts its arrival time is now + k * 3 s, and
        // the 20th attempt starts at now + 19 * 3 s, the tolerance.
        assert_eq!(quota.tolerance_ms(), 57_000);
        assert_eq!(Quota { per_minute: 0 }.tolerance_ms(), 0, "a zero quota still lets one through a minute");
    }
}
