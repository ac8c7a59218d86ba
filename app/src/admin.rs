//! The admin dashboard's data. Every function here refuses non-admins (403) and anonymous
//! callers (401) on its own, whatever page called it.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::auth::UserView;
#[cfg(feature = "ssr")]
use crate::backend;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdminDashboard {
    pub users: Vec<UserView>,
    pub admins: usize,
}

/// Everything the admin page shows.
#[server(endpoint = "admin/overview", input = server_fn::codec::GetUrl)]
pub async fn admin_overview() -> Result<AdminDashboard, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    let users = aiedge_store::users::list(&state.db).await.map_err(backend::internal)?;
    let admins = users.iter().filter(|u| u.is_admin()).count();
    Ok(AdminDashboard { users, admins })
}

/// One account's stored bytes, as last measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountStorage {
    /// The account's email; `None` for what belongs to no account (orphans, uploads underway).
    pub email: Option<String>,
    pub bytes: i64,
    pub objects: i64,
    pub jobs: i64,
}

/// Storage used, per account and in all.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StorageReport {
    /// Largest first; the part no account owns among them.
    pub accounts: Vec<AccountStorage>,
    /// Files and database-kept artifacts, in all.
    pub stored_bytes: i64,
    /// The database's size on disk now (rows, indexes, artifacts kept in it).
    pub database_bytes: i64,
    /// When the lease holder last measured; `None` before its first measurement.
    pub measured_at_ms: Option<i64>,
}

/// Storage used per account, as the lease holder last measured it, and the database's size now.
#[server(endpoint = "admin/storage", input = server_fn::codec::GetUrl)]
pub async fn admin_storage() -> Result<StorageReport, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    let latest = aiedge_store::storage::latest(&state.db).await.map_err(backend::internal)?;
    let database_bytes = aiedge_store::storage::database_bytes(&state.db).await.map_err(backend::internal)?;
    let measured_at_ms = latest.first().map(|m| m.measured_at);
    let accounts: Vec<AccountStorage> = latest
        .into_iter()
        .map(|m| AccountStorage {
            // An account deleted since the measurement shows by id until the next one.
            email: if m.usage.owner_id.is_empty() { None } else { Some(m.email.unwrap_or(m.usage.owner_id)) },
            bytes: m.usage.bytes,
            objects: m.usage.objects,
            jobs: m.usage.jobs,
        })
        .collect();
    let stored_bytes = accounts.iter().map(|a| a.bytes).sum();
    Ok(StorageReport { accounts, stored_bytes, database_bytes, measured_at_ms })
}

/// Accounts shown at once on the admin page.
pub const ACCOUNTS_PAGE: i64 = 200;

/// Accounts whose email or name contains `q` (all when empty), oldest first.
#[server(endpoint = "admin/accounts", input = server_fn::codec::GetUrl)]
pub async fn admin_accounts(#[server(default)] q: String) -> Result<Vec<UserView>, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    aiedge_store::users::search(&state.db, q.trim(), ACCOUNTS_PAGE).await.map_err(backend::internal)
}

/// Disables (`disabled` = "true") or enables an account (see `aiedge_services::accounts`).
#[server(endpoint = "admin/set-disabled")]
pub async fn set_account_disabled(id: String, disabled: String) -> Result<(), ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    let disabled = match disabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(ServerFnError::new("disabled must be true or false")),
    };
    aiedge_services::accounts::set_disabled(&state.db, state.events.as_ref(), &admin, &id, disabled).await.map_err(backend::refused)?;
    leptos_axum::redirect("/admin#accounts");
    Ok(())
}

/// Makes an account an admin or a user.
#[server(endpoint = "admin/set-role")]
pub async fn set_account_role(id: String, role: String) -> Result<(), ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    let role = aiedge_core::Role::parse(&role).ok_or_else(|| ServerFnError::new("role must be user or admin"))?;
    aiedge_services::accounts::set_role(&state.db, &admin, &id, role).await.map_err(backend::refused)?;
    leptos_axum::redirect("/admin#accounts");
    Ok(())
}

/// What deleting an account removed, as the admin page reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountDeleted {
    pub email: String,
    pub jobs: u64,
    /// Of those, the ones that were queued, dispatched or running.
    pub cancelled_jobs: u64,
    pub applications: u64,
    pub schedules: u64,
    pub nodes: u64,
    /// Other accounts' jobs that were on its nodes, moved on.
    pub moved_jobs: u64,
    pub api_tokens: u64,
}

impl AccountDeleted {
    /// The page's query after a deletion: the browser is sent there, and the page reads it back
    /// ([`AccountDeleted::from_query`]) to say what was deleted.
    #[cfg(feature = "ssr")]
    pub fn to_query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("deleted", &self.email)
            .append_pair("jobs", &self.jobs.to_string())
            .append_pair("cancelled", &self.cancelled_jobs.to_string())
            .append_pair("apps", &self.applications.to_string())
            .append_pair("schedules", &self.schedules.to_string())
            .append_pair("nodes", &self.nodes.to_string())
            .append_pair("moved", &self.moved_jobs.to_string())
            .append_pair("tokens", &self.api_tokens.to_string())
            .finish()
    }

    /// What [`AccountDeleted::to_query`] wrote, from the page's query; `None` without `deleted`.
    pub fn from_query(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let email = get("deleted").filter(|e| !e.is_empty())?;
        let n = |k: &str| get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(Self {
            email,
            jobs: n("jobs"),
            cancelled_jobs: n("cancelled"),
            applications: n("apps"),
            schedules: n("schedules"),
            nodes: n("nodes"),
            moved_jobs: n("moved"),
            api_tokens: n("tokens"),
        })
    }

    /// "Deleted ada@example.org: 3 jobs (1 unfinished, cancelled), 1 application, …".
    pub fn message(&self) -> String {
        let count = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut text = format!(
            "Deleted {} and everything it owned: {} ({} unfinished, cancelled), {}, {} (removed), {}.",
            self.email,
            count(self.jobs, "job", "jobs"),
            self.cancelled_jobs,
            count(self.applications, "application", "applications"),
            count(self.nodes, "node", "nodes"),
            count(self.api_tokens, "API token", "API tokens"),
        );
        if self.schedules > 0 {
            text.push_str(&format!(" Its {} went too.", count(self.schedules, "schedule", "schedules")));
        }
        if self.moved_jobs > 0 {
            text.push_str(&format!(" {} of other accounts on its nodes moved on to other nodes.", count(self.moved_jobs, "job", "jobs")));
        }
        text
    }
}

/// Deletes an account with everything it owns, for good (see `aiedge_services::accounts::delete`
/// for what happens to its jobs, nodes and files). `confirm` must be `yes`: the form's
/// "I understand" box. A plain form post is sent back to the admin page, which says what went.
#[server(endpoint = "admin/delete-account")]
pub async fn delete_account(id: String, #[server(default)] confirm: String) -> Result<AccountDeleted, ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    if confirm != "yes" {
        return Err(backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, "tick “I understand” to delete the account"));
    }
    let deleted = aiedge_services::accounts::delete(&state.db, state.artifacts.as_ref(), state.events.as_ref(), &admin, &id)
        .await
        .map_err(backend::refused)?;
    let done = AccountDeleted {
        email: deleted.email,
        jobs: deleted.jobs,
        cancelled_jobs: deleted.unfinished_jobs.len() as u64,
        applications: deleted.applications,
        schedules: deleted.schedules,
        nodes: deleted.nodes.len() as u64,
        moved_jobs: deleted.moved_jobs.len() as u64,
        api_tokens: deleted.api_tokens,
    };
    leptos_axum::redirect(&format!("/admin?{}#accounts", done.to_query()));
    Ok(done)
}
