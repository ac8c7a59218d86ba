//! Accounts as the pages see them: the signed-in user, form errors, and the server functions
//! behind the register, login and logout forms.
//!
//! Every form works without the WASM: a plain `<form>` post reaches the same server function,
//! which answers a browser (`Accept: text/html`) with a redirect back to the form carrying
//! error codes and the typed email in the query, and answers the hydrated app with the errors
//! as data. Error *codes*, never messages, travel in URLs, so nobody can craft a link that
//! makes our page say something we did not write.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use crate::backend;

pub use aiedge_core::views::UserView;
pub use aiedge_core::Role;

/// A reason a form was refused, as a stable code that is safe to put in a URL.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormError {
    EmailMissing,
    EmailInvalid,
    EmailTaken,
    PasswordTooShort,
    PasswordTooLong,
    NameTooLong,
    InvalidCredentials,
    /// The right password for an account an admin disabled (told only to who knows it).
    AccountDisabled,
    /// Changing one's password: the current one given is not it.
    WrongPassword,
    RateLimited,
    Internal,
}

/// Shortest and longest password we accept. The upper bound keeps Argon2 work bounded.
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 512;
pub const NAME_MAX_CHARS: usize = 80;

impl FormError {
    const ALL: [FormError; 11] = [
        FormError::EmailMissing,
        FormError::EmailInvalid,
        FormError::EmailTaken,
        FormError::PasswordTooShort,
        FormError::PasswordTooLong,
        FormError::NameTooLong,
        FormError::InvalidCredentials,
        FormError::AccountDisabled,
        FormError::WrongPassword,
        FormError::RateLimited,
        FormError::Internal,
    ];

    pub fn code(self) -> &'static str {
        match self {
            FormError::EmailMissing => "email_missing",
            FormError::EmailInvalid => "email_invalid",
            FormError::EmailTaken => "email_taken",
            FormError::PasswordTooShort => "password_too_short",
            FormError::PasswordTooLong => "password_too_long",
            FormError::NameTooLong => "name_too_long",
            FormError::InvalidCredentials => "invalid_credentials",
            FormError::AccountDisabled => "account_disabled",
            FormError::WrongPassword => "wrong_password",
            FormError::RateLimited => "rate_limited",
            FormError::Internal => "internal",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    pub fn message(self) -> String {
        match self {
            FormError::EmailMissing => "Enter your email address.".into(),
            FormError::EmailInvalid => "That does not look like an email address.".into(),
            FormError::EmailTaken => "An account with this email already exists. Log in instead?".into(),
            FormError::PasswordTooShort => {
                format!("Use at least {PASSWORD_MIN_CHARS} characters.")
            }
            FormError::PasswordTooLong => {
                format!("Use at most {PASSWORD_MAX_CHARS} characters.")
            }
            FormError::NameTooLong => format!("Use at most {NAME_MAX_CHARS} characters."),
            FormError::InvalidCredentials => "Wrong email or password.".into(),
            FormError::AccountDisabled => "This account is disabled. Ask an administrator to enable it.".into(),
            FormError::WrongPassword => "That is not your current password.".into(),
            FormError::RateLimited => "Too many sign-in attempts. Wait a minute, then try again.".into(),
            FormError::Internal => "Something went wrong on our side. Try again.".into(),
        }
    }
}

/// Field-by-field errors of a form. Empty means the form was accepted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FormErrors {
    pub email: Option<FormError>,
    pub password: Option<FormError>,
    pub name: Option<FormError>,
    /// An error about the form as a whole (wrong credentials, rate limited).
    pub form: Option<FormError>,
}

impl FormErrors {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.password.is_none() && self.name.is_none() && self.form.is_none()
    }

    pub fn form(error: FormError) -> Self {
        Self { form: Some(error), ..Self::default() }
    }

    /// The query pairs that carry these errors through a no-JS redirect.
    pub fn query_pairs(&self) -> Vec<(&'static str, &'static str)> {
        [("err_email", self.email), ("err_password", self.password), ("err_name", self.name), ("err_form", self.form)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|e| (k, e.code())))
            .collect()
    }

    /// Reads the errors back from a query, ignoring unknown codes.
    pub fn from_query(get: impl Fn(&str) -> Option<String>) -> Self {
        let read = |key: &str| get(key).and_then(|c| FormError::from_code(&c));
        Self { email: read("err_email"), password: read("err_password"), name: read("err_name"), form: read("err_form") }
    }
}

/// Normalises an email (trim, lowercase) and checks its shape. Deliberately simple: the only
/// real test of an address is mail reaching it; this catches typos and junk.
pub fn normalize_email(raw: &str) -> Result<String, FormError> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(FormError::EmailMissing);
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FormError::EmailInvalid);
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(FormError::EmailInvalid);
    };
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(FormError::EmailInvalid);
    }
    Ok(email)
}

/// Checks a new password's length, counted in characters rather than bytes.
pub fn check_password(password: &str) -> Result<(), FormError> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        Err(FormError::PasswordTooShort)
    } else if n > PASSWORD_MAX_CHARS {
        Err(FormError::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// Only same-site paths are followed after login, so `?next=` cannot send a user elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from a URL ("/\t/evil" is "//evil": another site), and
        // read a backslash as a slash; a path with none of them that starts with exactly one
        // slash stays on this site.
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.chars().any(|c| c == '\\' || c.is_control()) && n.len() <= 2048 => {
            n.to_string()
        }
        _ => "/home".to_string(),
    }
}

/// Creates an account and signs it in.
#[server(endpoint = "auth/register")]
pub async fn register(
    #[server(default)] email: String,
    #[server(default)] password: String,
    #[server(default)] name: Option<String>,
) -> Result<FormErrors, ServerFnError> {
    let state = backend::state()?;
    let ip = backend::client_ip();
    if let Some(wait) = state.limits.register(&state.db, ip).await.map_err(backend::internal)? {
        return backend::rate_limited("/register", wait, &[("email", &email)]);
    }

    let mut errors = FormErrors::default();
    let email_norm = normalize_email(&email).map_err(|e| errors.email = Some(e)).ok();
    let _ = check_password(&password).map_err(|e| errors.password = Some(e));
    let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > NAME_MAX_CHARS) {
        errors.name = Some(FormError::NameTooLong);
    }
    let keep = [("email", email.as_str()), ("name", name.as_deref().unwrap_or(""))];
    let Some(email_norm) = email_norm.filter(|_| errors.is_empty()) else {
        return Ok(backend::form_refused("/register", &errors, &keep));
    };

    let user = match aiedge_store::users::register(&state.db, &email_norm, &password, name.as_deref()).await {
        Ok(user) => user,
        Err(aiedge_store::users::RegisterError::EmailTaken) => {
            let errors = FormErrors { email: Some(FormError::EmailTaken), ..FormErrors::default() };
            return Ok(backend::form_refused("/register", &errors, &keep));
        }
        Err(aiedge_store::users::RegisterError::Internal(e)) => {
            return Err(backend::internal(e));
        }
    };
    backend::sessions::sign_in(&user, false).await?;
    leptos_axum::redirect("/home");
    Ok(FormErrors::default())
}

/// Signs a user in. A wrong email and a wrong password get the same answer.
#[server(endpoint = "auth/login")]
pub async fn login(
    #[server(default)] email: String,
    #[server(default)] password: String,
    #[server(default)] remember: Option<String>,
    #[server(default)] next: Option<String>,
) -> Result<FormErrors, ServerFnError> {
    let state = backend::state()?;
    let keep = [("email", email.as_str()), ("next", next.as_deref().unwrap_or(""))];
    let account_key = email.trim().to_lowercase();
    let ip = backend::client_ip();
    if let Some(wait) = state.limits.login(&state.db, ip, &account_key).await.map_err(backend::internal)? {
        return backend::rate_limited("/login", wait, &keep);
    }

    let user = match normalize_email(&email) {
        Ok(email) => aiedge_store::users::authenticate(&state.db, &email, &password).await.map_err(backend::internal)?,
        Err(_) => {
            // Still spend the hashing time, so a malformed address is not told apart by timing.
            aiedge_store::password::burn_verify_time(&password).await;
            None
        }
    };
    let Some(user) = user else {
        return Ok(backend::form_refused("/login", &FormErrors::form(FormError::InvalidCredentials), &keep));
    };
    if user.disabled {
        return Ok(backend::form_refused("/login", &FormErrors::form(FormError::AccountDisabled), &keep));
    }
    state.limits.signed_in(&state.db, ip, &account_key).await.map_err(backend::internal)?;
    let remember = remember.is_some_and(|r| !r.is_empty() && r != "false" && r != "off");
    backend::sessions::sign_in(&user, remember).await?;
    leptos_axum::redirect(&safe_next(next.as_deref()));
    Ok(FormErrors::default())
}

/// Changes the signed-in user's password: the current one first (tries count against the
/// sign-in limits), then a new one as registration checks it. Every session of the account ends
/// (a stolen cookie with it) and this browser gets a new one.
#[server(endpoint = "auth/password")]
pub async fn change_password(#[server(default)] current: String, #[server(default)] password: String) -> Result<FormErrors, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let ip = backend::client_ip();
    if let Some(wait) = state.limits.login(&state.db, ip, &user.email).await.map_err(backend::internal)? {
        return backend::rate_limited("/settings", wait, &[]);
    }
    if let Err(e) = check_password(&password) {
        return Ok(backend::form_refused("/settings", &FormErrors { password: Some(e), ..FormErrors::default() }, &[]));
    }
    if aiedge_store::users::authenticate(&state.db, &user.email, &current).await.map_err(backend::internal)?.is_none() {
        return Ok(backend::form_refused("/settings", &FormErrors::form(FormError::WrongPassword), &[]));
    }
    state.limits.signed_in(&state.db, ip, &user.email).await.map_err(backend::internal)?;
    aiedge_store::users::set_password(&state.db, &user.id, &password).await.map_err(backend::internal)?;
    backend::sessions::sign_in(&user, false).await?;
    leptos_axum::redirect("/settings?password=changed");
    Ok(FormErrors::default())
}

/// Ends the session, on the server and in the browser.
#[server(endpoint = "auth/logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    backend::sessions::sign_out().await?;
    leptos_axum::redirect("/");
    Ok(())
}

/// The signed-in user, if any.
#[server(endpoint = "auth/me", input = server_fn::codec::GetUrl)]
pub async fn current_user() -> Result<Option<UserView>, ServerFnError> {
    Ok(backend::current_user())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(normalize_email("  Alice@Example.ORG ").as_deref(), Ok("alice@example.org"));
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "alice",
            "@example.org",
            "alice@",
            "alice@localhost",
            "a b@example.org",
            "alice@exa mple.org",
            "alice@.example.org",
            "alice@example..org",
            "' or 1=1 --@x",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(normalize_email(""), Err(FormError::EmailMissing));
        let long = format!("{}@example.org", "a".repeat(300));
        assert_eq!(normalize_email(&long), Err(FormError::EmailInvalid));
    }

    #[test]
    fn password_length_counts_characters() {
        assert_eq!(check_password("1234567"), Err(FormError::PasswordTooShort));
        assert_eq!(check_password("12345678"), Ok(()));
        // Eight characters of two bytes each: long enough.
        assert_eq!(check_password("éééééééé"), Ok(()));
        assert_eq!(check_password(&"x".repeat(PASSWORD_MAX_CHARS + 1)), Err(FormError::PasswordTooLong));
    }

    #[test]
    fn error_codes_round_trip_through_the_query() {
        let errors = FormErrors {
            email: Some(FormError::EmailTaken),
            password: Some(FormError::PasswordTooShort),
            name: None,
            form: Some(FormError::RateLimited),
        };
        let pairs = errors.query_pairs();
        let back = FormErrors::from_query(|k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string()));
        assert_eq!(back, errors);
        assert_eq!(FormErrors::from_query(|_| Some("<script>".into())), FormErrors::default());
    }

    #[test]
    fn next_only_follows_local_paths() {
        assert_eq!(safe_next(Some("/admin")), "/admin");
        assert_eq!(safe_next(Some("//evil.example")), "/home");
        assert_eq!(safe_next(Some("https://evil.example")), "/home");
        assert_eq!(safe_next(Some("/\\evil.example")), "/home");
        // Browsers drop these characters, which turns the path into "//evil.example".
        for sneaky in ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "/\u{0}/evil.example"] {
            assert_eq!(safe_next(Some(sneaky)), "/home", "{sneaky:?}");
        }
        assert_eq!(safe_next(Some("/jobs?scope=all")), "/jobs?scope=all");
        assert_eq!(safe_next(None), "/home");
    }
}
