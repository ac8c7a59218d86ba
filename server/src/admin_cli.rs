//! `server admin create --email …`: the first admin, from the command line. The password comes
//! from a prompt, or from standard input with `--password-stdin` (for scripts). Running it for
//! an existing account makes that account an admin and sets the new password.

use std::io::{BufRead, IsTerminal};

use aiedge_store::{users, Db};
use anyhow::{bail, Context};
use app::auth::{check_password, normalize_email, Role};
use app::backend::AppState;

pub fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let again = rpassword::prompt_password("Again: ").context("reading the password")?;
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Creates or promotes the admin; returns what happened, for the caller to print.
pub async fn create_admin(db: &Db, email: &str, password: &str) -> anyhow::Result<String> {
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("email: {}", e.message()))?;
    check_password(password).map_err(|e| anyhow::anyhow!("password: {}", e.message()))?;
    match users::find_by_email(db, &email).await? {
        Some(existing) => {
            users::set_role_and_password(db, &existing.id, Role::Admin, password).await?;
            Ok(format!("{email} is now an admin, with the new password"))
        }
        None => {
            users::create(db, &email, password, None, Role::Admin).await?;
            Ok(format!("admin {email} created"))
        }
    }
}

/// `server node add`: adds a node for an existing account, private to it or shared with everyone,
/// and returns the text to print.
pub async fn add_node(state: &AppState, owner: &str, name: &str, sharing: aiedge_core::Sharing) -> anyhow::Result<String> {
    let email = normalize_email(owner).map_err(|e| anyhow::anyhow!("owner: {}", e.message()))?;
    let Some(user) = users::find_by_email(&state.db, &email).await? else {
        bail!("no account with email {email}");
    };
    let name = app::nodes::check_node_name(name).map_err(|m| anyhow::anyhow!("name: {m}"))?;
    let new = aiedge_store::nodes::add(&state.db, &state.settings.thermal, &state.settings.public_url, &user.id, &name).await?;
    aiedge_services::nodes::set_sharing(&state.db, state.events.as_ref(), &user, &new.node.id, sharing, &[]).await?;
    Ok(format!(
        "node {} ({}) added for {email}, {}\ntoken: {}\nexpires in 30 minutes\ninstall on the machine (as root):\n  {}\nor, where the agent is installed:\n  {}",
        new.node.name,
        new.node.id,
        if sharing == aiedge_core::Sharing::Everyone { "running everyone's jobs" } else { "running its owner's jobs only" },
        new.token,
        new.install,
        new.command
    ))
}

/// `server token create`: mints a personal API token for an existing account; returns the text
/// to print (the token itself on the last line, for scripts: `| tail -1`).
pub async fn create_token(state: &AppState, email: &str, name: &str) -> anyhow::Result<String> {
    let email = normalize_email(email).map_err(|e| anyhow::anyhow!("email: {}", e.message()))?;
    let Some(user) = users::find_by_email(&state.db, &email).await? else {
        bail!("no account with email {email}");
    };
    let name = app::jobs::check_name(name).map_err(|m| anyhow::anyhow!("name: {m}"))?;
    let new = aiedge_store::api_tokens::create(&state.db, &user.id, &name, None).await?;
    Ok(format!("API token {:?} created for {email} (shown only now):\n{}", new.token.name, new.secret))
}
