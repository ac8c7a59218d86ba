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

/// `server status`: the lease holder and its term, and every replica heard from in the last
/// minute: the holder marked `*`, one silent for over 15 s `?`. Read from the database, so it works from any machine that
/// reaches it.
pub async fn status(db: &Db, now: i64) -> anyhow::Result<String> {
    use std::fmt::Write;
    let lease = aiedge_store::leases::read(db, aiedge_store::leases::PRIMARY).await?;
    let replicas = aiedge_store::leases::replicas(db, now - 60_000).await?;
    let mut out = String::new();
    let ago = |at: i64| format!("{:.1} s ago", (now - at).max(0) as f64 / 1000.0);
    match &lease {
        None => writeln!(out, "lease: never taken (no server has run on this database)")?,
        Some(l) if l.is_released() => writeln!(out, "lease: free (released at term {}); the next replica to look takes it", l.term)?,
        Some(l) => writeln!(out, "lease: held by {} in term {} (renewed {}, beat {})", l.holder, l.term, ago(l.renewed_at), l.beat)?,
    }
    // A replica reports itself every 5 s; three missed reports mean it stopped or is cut off.
    let live = |r: &aiedge_store::leases::Replica| now - r.seen_at <= 15_000;
    let silent = replicas.iter().filter(|r| !live(r)).count();
    writeln!(out, "replicas: {} live, {silent} silent for over 15 s (killed, or cut off from the database)", replicas.len() - silent)?;
    for r in &replicas {
        let holder = lease.as_ref().is_some_and(|l| l.holder == r.id);
        writeln!(
            out,
            "  {} {}  {}  pid {}  {}  version {}  up since {}  seen {}",
            if holder {
                "*"
            } else if live(r) {
                " "
            } else {
                "?"
            },
            r.id,
            r.host,
            r.pid,
            r.address,
            r.version,
            ago(r.started_at),
            ago(r.seen_at)
        )?;
    }
    Ok(out)
}
