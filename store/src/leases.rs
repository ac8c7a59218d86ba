//! Leases, replicas and the deployment's identity: what several server processes on one
//! database need to agree on who does the work that must happen once.
//!
//! A lease row names its holder, a term and a beat counter. The holder raises the beat every
//! renewal; another replica that sees `(term, beat)` unchanged for the lease's time takes it
//! over with a compare-and-set on exactly the pair it saw, raising the term. Each replica
//! times what it sees by its own clock, so no two machines' clocks are ever compared.
//!
//! A [`Fence`] is a term the caller believes it holds. Fenced writes begin their transaction by
//! touching the lease row at that term ([`hold`]): if another replica took over, the touch
//! finds no row and the write fails with [`Fenced`], changing nothing. On PostgreSQL the touch
//! also locks the row until the transaction ends, so a takeover waits for the fenced write to
//! commit and never overlaps it; on SQLite there is one writer anyway.

use sqlx::{Any, Transaction};

use crate::Db;

/// The lease of the work that must happen once per deployment.
pub const PRIMARY: &str = "primary";

/// A lease row as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    /// Empty when its last holder let it go.
    pub holder: String,
    pub term: i64,
    pub beat: i64,
    pub renewed_at: i64,
}

impl Lease {
    /// True when its last holder released it: a successor need not wait.
    pub fn is_released(&self) -> bool {
        self.holder.is_empty()
    }
}

/// A term of a lease that a writer believes it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub name: &'static str,
    pub term: i64,
}

/// A fenced write found that its term is over: another replica holds the lease.
#[derive(Debug, thiserror::Error)]
#[error("the {name} lease moved on: term {term} is over, nothing was written")]
pub struct Fenced {
    pub name: &'static str,
    pub term: i64,
}

/// True when `err` is a fenced write's refusal ([`Fenced`]).
pub fn is_fenced(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<Fenced>()))
}

/// Checks, inside `tx`, that `fence`'s term is still the lease's, and keeps the lease from
/// changing hands until `tx` ends (PostgreSQL row lock). Nothing to check without a fence
/// (tools and tests that write as the only process).
pub async fn hold(tx: &mut Transaction<'_, Any>, fence: Option<&Fence>) -> Result<(), sqlx::Error> {
    let Some(fence) = fence else { return Ok(()) };
    let touched = sqlx::query("update leases set term = term where name = $1 and term = $2")
        .bind(fence.name)
        .bind(fence.term)
        .execute(&mut **tx)
        .await?;
    if touched.rows_affected() == 1 {
        Ok(())
    } else {
        Err(sqlx::Error::Io(std::io::Error::other(Fenced { name: fence.name, term: fence.term })))
    }
}

type LeaseRow = (String, String, i64, i64, i64);

fn lease((name, holder, term, beat, renewed_at): LeaseRow) -> Lease {
    Lease { name, holder, term, beat, renewed_at }
}

/// The lease `name`, if anyone ever took it.
pub async fn read(db: &Db, name: &str) -> Result<Option<Lease>, sqlx::Error> {
    let row: Option<LeaseRow> = sqlx::query_as("select name, holder, term, beat, renewed_at from leases where name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(lease))
}

/// Takes the lease `name` for `replica`: the first term when nobody ever held it (`seen` is
/// `None`), else the next one, provided the lease is still exactly at the `(term, beat)` seen.
/// Returns the new term, or `None` when someone else moved first.
pub async fn take(db: &Db, name: &str, replica: &str, seen: Option<(i64, i64)>, now: i64) -> Result<Option<i64>, sqlx::Error> {
    match seen {
        None => {
            let done = sqlx::query(
                "insert into leases (name, holder, term, beat, renewed_at) values ($1, $2, 1, 0, $3) on conflict (name) do nothing",
            )
            .bind(name)
            .bind(replica)
            .bind(now)
            .execute(&db.writer)
            .await?;
            Ok((done.rows_affected() == 1).then_some(1))
        }
        Some((term, beat)) => {
            let row: Option<(i64,)> = sqlx::query_as(
                "update leases set holder = $1, term = term + 1, beat = 0, renewed_at = $2
                 where name = $3 and term = $4 and beat = $5 returning term",
            )
            .bind(replica)
            .bind(now)
            .bind(name)
            .bind(term)
            .bind(beat)
            .fetch_optional(&db.writer)
            .await?;
            Ok(row.map(|(t,)| t))
        }
    }
}

/// Raises the beat of `replica`'s term. False when the term is over (someone took over).
pub async fn renew(db: &Db, name: &str, replica: &str, term: i64, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update leases set beat = beat + 1, renewed_at = $1 where name = $2 and holder = $3 and term = $4")
        .bind(now)
        .bind(name)
        .bind(replica)
        .bind(term)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets go of the lease at the end of `replica`'s term, so a successor takes it at once. The
/// term stays: writes fenced by it still pass until a successor raises it.
pub async fn release(db: &Db, name: &str, replica: &str, term: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update leases set holder = '', beat = beat + 1 where name = $1 and holder = $2 and term = $3")
        .bind(name)
        .bind(replica)
        .bind(term)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A server process as it reports itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// Where it serves HTTP.
    pub address: String,
    pub started_at: i64,
    pub seen_at: i64,
}

/// Records that `replica` is alive now (inserting it the first time).
pub async fn announce(db: &Db, replica: &Replica) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into replicas (id, host, pid, version, address, started_at, seen_at) values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (id) do update set seen_at = excluded.seen_at",
    )
    .bind(&replica.id)
    .bind(&replica.host)
    .bind(replica.pid)
    .bind(&replica.version)
    .bind(&replica.address)
    .bind(replica.started_at)
    .bind(replica.seen_at)
    .execute(&db.writer)
    .await?;
    Ok(())
}

/// The replicas heard from since `since`, oldest first.
pub async fn replicas(db: &Db, since: i64) -> Result<Vec<Replica>, sqlx::Error> {
    let rows: Vec<(String, String, i64, String, String, i64, i64)> = sqlx::query_as(
        "select id, host, pid, version, address, started_at, seen_at from replicas where seen_at >= $1 order by started_at, id",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, host, pid, version, address, started_at, seen_at)| Replica { id, host, pid, version, address, started_at, seen_at })
        .collect())
}

/// Removes a replica that stopped (or was last heard before `before`).
pub async fn forget(db: &Db, id: Option<&str>, before: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from replicas where id = $1 or seen_at < $2")
        .bind(id.unwrap_or_default())
        .bind(before)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected())
}

/// This deployment's identity, made on first use: every replica on the database reads the same.
pub async fn deployment_id(db: &Db, now: i64) -> Result<String, sqlx::Error> {
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    sqlx::query("insert into deployment (id, created_at) select $1, $2 where not exists (select 1 from deployment)")
        .bind(&fresh)
        .bind(now)
        .execute(&db.writer)
        .await?;
    let (id,): (String,) = sqlx::query_as("select id from deployment order by created_at, id limit 1").fetch_one(&db.writer).await?;
    Ok(id)
}
