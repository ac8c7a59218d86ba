//! Throttles on the endpoints that guessing attacks go for. Login is limited per client address
//! (so one address cannot spray many accounts) and per account *from each address*, under a
//! much higher ceiling per account across all addresses (so many addresses cannot hammer one).
//! An attacker therefore cannot lock a victim out: their failures spend their own address's
//! budget, and an address the account signed in from before is not held to the ceiling.
//! Registration is limited per address, since each one costs an Argon2 hash. The limiters are
//! in-memory GCRA buckets from `governor`; a multi-server deployment would want a shared store.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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
/// Addresses remembered as an account's own (signed in from before), at most; then forgotten.
const KNOWN_MAX: usize = 100_000;

fn keyed<K: Hash + Eq + Clone>(per_minute: u32) -> DefaultKeyedRateLimiter<K> {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

fn check_key<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Duration> {
    limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

pub struct LoginLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account_ip: DefaultKeyedRateLimiter<(String, IpAddr)>,
    per_account: DefaultKeyedRateLimiter<String>,
    /// (account, address) pairs that signed in successfully since the server started.
    known: Mutex<HashSet<(String, IpAddr)>>,
}

impl LoginLimiter {
    /// Counts one attempt; `Err` holds how long to wait.
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), Duration> {
        check_key(&self.per_ip, &ip)?;
        let pair = (account.to_string(), ip);
        check_key(&self.per_account_ip, &pair)?;
        if self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&pair) {
            return Ok(());
        }
        check_key(&self.per_account, &pair.0)
    }

    /// The account signed in from `ip`: from now on that address is not held to the account's
    /// ceiling, so attempts from elsewhere cannot lock its owner out.
    pub fn signed_in(&self, ip: IpAddr, account: &str) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert((account.to_string(), ip));
    }
}

pub struct IpLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl IpLimiter {
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        check_key(&self.per_ip, &ip)
    }
}

pub struct Limits {
    pub login: LoginLimiter,
    pub register: IpLimiter,
}

impl Limits {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            login: LoginLimiter {
                per_ip: keyed(config.login_per_ip),
                per_account_ip: keyed(config.login_per_account),
                per_account: keyed(config.login_per_account.saturating_mul(ACCOUNT_CEILING_FACTOR)),
                known: Mutex::default(),
            },
            register: IpLimiter { per_ip: keyed(config.register_per_ip) },
        }
    }

    /// Forgets keys whose buckets are full again, so memory stays bounded.
    pub fn prune(&self) {
        self.login.per_ip.retain_recent();
        self.login.per_account_ip.retain_recent();
        self.login.per_account.retain_recent();
        self.register.per_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attacker_cannot_lock_the_owner_out() {
        let limits = Limits::new(LimitConfig { login_per_ip: 1000, login_per_account: 2, register_per_ip: 1 });
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        limits.login.signed_in(owner, "x@example.org");
        // The attacker's guesses spend the attacker's own budget for the account...
        assert!(limits.login.check(attacker, "x@example.org").is_ok());
        assert!(limits.login.check(attacker, "x@example.org").is_ok());
        let wait = limits.login.check(attacker, "x@example.org").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        // ...not the owner's, nor another account's.
        assert!(limits.login.check(owner, "x@example.org").is_ok());
        assert!(limits.login.check(attacker, "y@example.org").is_ok());
    }

    #[test]
    fn many_addresses_meet_the_accounts_ceiling_but_its_owner_does_not() {
        let limits = Limits::new(LimitConfig { login_per_ip: 1000, login_per_account: 1, register_per_ip: 1 });
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        limits.login.signed_in(owner, "x@example.org");
        let ceiling = ACCOUNT_CEILING_FACTOR as usize;
        let bots: Vec<IpAddr> = (1..=ceiling + 1).map(|i| format!("10.0.0.{i}").parse().unwrap()).collect();
        let allowed = bots.iter().filter(|ip| limits.login.check(**ip, "x@example.org").is_ok()).count();
        assert_eq!(allowed, ceiling, "a botnet gets the ceiling, not one guess per address");
        assert!(limits.login.check(owner, "x@example.org").is_ok(), "the owner's own address still gets in");
    }

    #[test]
    fn address_limit_applies_across_accounts() {
        let limits = Limits::new(LimitConfig { login_per_ip: 2, login_per_account: 100, register_per_ip: 1 });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limits.login.check(a, "1@example.org").is_ok());
        assert!(limits.login.check(a, "2@example.org").is_ok());
        assert!(limits.login.check(a, "3@example.org").is_err());
        assert!(limits.register.check(a).is_ok());
        assert!(limits.register.check(a).is_err());
    }
}
