//! Password hashing with Argon2id at OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
//! Hashing takes tens of milliseconds of CPU, so it runs on the blocking pool, never on the
//! async threads that serve requests.

use std::sync::OnceLock;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn argon2() -> Argon2<'static> {
    // m = 19 MiB, t = 2, p = 1: OWASP's first recommended Argon2id configuration.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Hashes a password into a PHC string (algorithm, parameters, salt and hash together).
pub async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Checks a password against a stored PHC string. A malformed hash never matches.
pub async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).map(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok()).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash of nothing in particular, to verify against when the account does not exist, so a
/// wrong email takes as long to refuse as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2().hash_password(b"not a real password", &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

/// Spends the time of one verification and returns nothing.
pub async fn burn_verify_time(password: &str) {
    let phc = dummy_hash().to_string();
    let _ = verify(password.to_string(), phc).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_argon2id() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse".into(), phc.clone()).await);
        assert!(!verify("wrong horse".into(), phc).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }
}
