//! Throttles on the endpoints that guessing attacks go for. Login is limited per client address
//! and per account (so one address cannot spray many accounts, and many addresses cannot hammer
//! one); registration per address, since each one costs an Argon2 hash. The limiters are
//! in-memory GCRA buckets from `governor`; a multi-server deployment would want a shared store.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Attempts allowed per minute, per key. Bursts up to the same number are allowed.
#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    pub login_per_ip: u32,
    pub login_per_account: u32,
    pub register_per_ip: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self { login_per_ip: 20, login_per_account: 5, register_per_ip: 10 }
    }
}

fn keyed<K: Hash + Eq + Clone>(per_minute: u32) -> DefaultKeyedRateLimiter<K> {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

fn check_key<K: Hash + Eq + Clone>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Duration> {
    limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

pub struct LoginLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
}

impl LoginLimiter {
    /// Counts one attempt; `Err` holds how long to wait.
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), Duration> {
        check_key(&self.per_ip, &ip)?;
        check_key(&self.per_account, &account.to_string())
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
            login: LoginLimiter { per_ip: keyed(config.login_per_ip), per_account: keyed(config.login_per_account) },
            register: IpLimiter { per_ip: keyed(config.register_per_ip) },
        }
    }

    /// Forgets keys whose buckets are full again, so memory stays bounded.
    pub fn prune(&self) {
        self.login.per_ip.retain_recent();
        self.login.per_account.retain_recent();
        self.register.per_ip.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_limit_applies_across_addresses() {
        let limits = Limits::new(LimitConfig { login_per_ip: 100, login_per_account: 2, register_per_ip: 1 });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.login.check(a, "x@example.org").is_ok());
        assert!(limits.login.check(b, "x@example.org").is_ok());
        let wait = limits.login.check(a, "x@example.org").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        // Another account from the same address is unaffected.
        assert!(limits.login.check(a, "y@example.org").is_ok());
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
