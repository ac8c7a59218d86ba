//! Throttles on the endpoints that guessing attacks go for. Login is limited per client address
//! (so one address cannot spray many accounts) and per account *from each address*, under a
//! much higher ceiling per account across all addresses (so many addresses cannot hammer one).
//! An attacker therefore cannot lock a victim out: their failures spend their own address's
//! budget, and an address the account signed in from before is not held to the ceiling.
//! Registration is limited per address, since each one costs an Argon2 hash.
//!
//! The buckets live in the database ([`aiedge_store::rate_limits`]), so every server replica
//! spends the same budget: an attacker gains nothing by spreading guesses across replicas.

use std::net::IpAddr;
use std::time::Duration;

use aiedge_store::rate_limits::{self, Quota};
use aiedge_store::{Db, SqlError};

/// Attempts allowed per minute, per key. Bursts up to the same number are allowed.
#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    pub login_per_ip: u32,
    /// Per account, from one address.
    pub login_per_account: u32,
    pub register_per_ip: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self { login_per_ip: 20, login_per_account: 5, register_per_ip: 10 }
    }
}

/// The ceiling per account across all addresses, as a multiple of the per-address limit.
const ACCOUNT_CEILING_FACTOR: u32 = 10;
/// An address the account has not signed in from for this long is held to the ceiling again.
const KNOWN_FOR_MS: i64 = 90 * 24 * 3600 * 1000;
/// The longest account name a key holds: an email address is at most 320 bytes, and a longer
/// one only shares its bucket with other over-long guesses.
const ACCOUNT_KEY_MAX: usize = 320;

/// `Ok(None)`: go on. `Ok(Some(wait))`: refused, retry after `wait`.
pub type Verdict = Result<Option<Duration>, SqlError>;

pub struct Limits {
    config: LimitConfig,
}

fn account_key(account: &str) -> &str {
    let mut end = account.len().min(ACCOUNT_KEY_MAX);
    while !account.is_char_boundary(end) {
        end -= 1;
    }
    &account[..end]
}

impl Limits {
    pub fn new(config: LimitConfig) -> Self {
        Self { config }
    }

    /// Counts one sign-in attempt (or a password check) for `account` from `ip`.
    pub async fn login(&self, db: &Db, ip: IpAddr, account: &str) -> Verdict {
        let now = aiedge_store::now_ms();
        let account = account_key(account);
        let per_ip = Quota { per_minute: self.config.login_per_ip };
        if let Some(wait) = rate_limits::take(db, &format!("login-ip:{ip}"), per_ip, now).await? {
            return Ok(Some(wait));
        }
        let per_pair = Quota { per_minute: self.config.login_per_account };
        if let Some(wait) = rate_limits::take(db, &format!("login-pair:{ip} {account}"), per_pair, now).await? {
            return Ok(Some(wait));
        }
        if rate_limits::signed_in_before(db, account, &ip.to_string()).await? {
            return Ok(None);
        }
        let ceiling = Quota { per_minute: self.config.login_per_account.saturating_mul(ACCOUNT_CEILING_FACTOR) };
        rate_limits::take(db, &format!("login-account:{account}"), ceiling, now).await
    }

    /// The account signed in from `ip`: from now on that address is not held to the account's
    /// ceiling, so attempts from elsewhere cannot lock its owner out.
    pub async fn signed_in(&self, db: &Db, ip: IpAddr, account: &str) -> Result<(), SqlError> {
        rate_limits::remember_sign_in(db, account_key(account), &ip.to_string(), aiedge_store::now_ms()).await
    }

    /// Counts one registration from `ip`.
    pub async fn register(&self, db: &Db, ip: IpAddr) -> Verdict {
        let quota = Quota { per_minute: self.config.register_per_ip };
        rate_limits::take(db, &format!("register-ip:{ip}"), quota, aiedge_store::now_ms()).await
    }

    /// Forgets full buckets and long-unused sign-in addresses, so the tables stay small.
    pub async fn prune(db: &Db) -> Result<u64, SqlError> {
        let now = aiedge_store::now_ms();
        rate_limits::prune(db, now, now - KNOWN_FOR_MS).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/limits.db", dir.path().display())).await.unwrap();
        (db, dir)
    }

    fn refused(verdict: Verdict) -> bool {
        verdict.unwrap().is_some()
    }

    #[tokio::test]
    async fn an_attacker_cannot_lock_the_owner_out() {
        let (db, _dir) = db().await;
        let limits = Limits::new(LimitConfig { login_per_ip: 1000, login_per_account: 2, register_per_ip: 1 });
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        limits.signed_in(&db, owner, "x@example.org").await.unwrap();
        // The attacker's guesses spend the attacker's own budget for the account...
        assert!(!refused(limits.login(&db, attacker, "x@example.org").await));
        assert!(!refused(limits.login(&db, attacker, "x@example.org").await));
        let wait = limits.login(&db, attacker, "x@example.org").await.unwrap().expect("third guess refused");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
        // ...not the owner's, nor another account's.
        assert!(!refused(limits.login(&db, owner, "x@example.org").await));
        assert!(!refused(limits.login(&db, attacker, "y@example.org").await));
    }

    #[tokio::test]
    async fn many_addresses_meet_the_accounts_ceiling_but_its_owner_does_not() {
        let (db, _dir) = db().await;
        let limits = Limits::new(LimitConfig { login_per_ip: 1000, login_per_account: 1, register_per_ip: 1 });
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        limits.signed_in(&db, owner, "x@example.org").await.unwrap();
        let ceiling = ACCOUNT_CEILING_FACTOR as usize;
        let mut allowed = 0;
        for i in 1..=ceiling + 1 {
            let bot: IpAddr = format!("10.0.0.{i}").parse().unwrap();
            allowed += usize::from(!refused(limits.login(&db, bot, "x@example.org").await));
        }
        assert_eq!(allowed, ceiling, "a botnet gets the ceiling, not one guess per address");
        assert!(!refused(limits.login(&db, owner, "x@example.org").await), "the owner's own address still gets in");
    }

    #[tokio::test]
    async fn address_limit_applies_across_accounts() {
        let (db, _dir) = db().await;
        let limits = Limits::new(LimitConfig { login_per_ip: 2, login_per_account: 100, register_per_ip: 1 });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!refused(limits.login(&db, a, "1@example.org").await));
        assert!(!refused(limits.login(&db, a, "2@example.org").await));
        assert!(refused(limits.login(&db, a, "3@example.org").await));
        assert!(!refused(limits.register(&db, a).await));
        assert!(refused(limits.register(&db, a).await));
    }

    #[test]
    fn over_long_accounts_are_cut_at_a_character() {
        let long = "é".repeat(400);
        let key = account_key(&long);
        assert!(key.len() <= ACCOUNT_KEY_MAX && key.chars().all(|c| c == 'é'));
    }
}
