//! Accounts in the database.

use sqlx::FromRow;

use super::{now_ms, password, Db};
use aiedge_core::views::UserView;
use aiedge_core::Role;

/// A user row as stored. Holds the password hash, so it is deliberately not `Serialize`:
/// only [`UserView`] leaves the server.
#[derive(FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    role: String,
    password_hash: String,
    created_at: i64,
    disabled_at: Option<i64>,
}

impl UserRow {
    fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            role: Role::parse(&self.role).unwrap_or(Role::User),
            created_at_ms: self.created_at,
            disabled: self.disabled_at.is_some(),
        }
    }
}

const COLUMNS: &str = "id, email, name, role, password_hash, created_at, disabled_at";

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("{0}")]
    Internal(String),
}

/// The name shown when none was given: the part of the email before the `@`.
fn default_name(email: &str) -> String {
    email.split('@').next().unwrap_or(email).to_string()
}

/// Creates an account with an email that is already normalised and a checked password.
pub async fn create(db: &Db, email: &str, password: &str, name: Option<&str>, role: Role) -> Result<UserView, RegisterError> {
    let phc = password::hash(password.to_string()).await.map_err(RegisterError::Internal)?;
    let row = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.to_string(),
        name: name.map(str::to_string).unwrap_or_else(|| default_name(email)),
        role: role.as_str().to_string(),
        password_hash: phc,
        created_at: now_ms(),
        disabled_at: None,
    };
    let inserted = sqlx::query(
        r#"insert into users (id, email, name, role, password_hash, created_at)
           values ($1, $2, $3, $4, $5, $6)"#,
    )
    .bind(&row.id)
    .bind(&row.email)
    .bind(&row.name)
    .bind(&row.role)
    .bind(&row.password_hash)
    .bind(row.created_at)
    .execute(&db.writer)
    .await;
    match inserted {
        Ok(_) => {
            tracing::info!(user_id = %row.id, role = %row.role, "account created");
            Ok(row.view())
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(RegisterError::EmailTaken),
        Err(e) => Err(RegisterError::Internal(e.to_string())),
    }
}

/// Registration from the web form: always a plain user.
pub async fn register(db: &Db, email: &str, password: &str, name: Option<&str>) -> Result<UserView, RegisterError> {
    create(db, email, password, name, Role::User).await
}

async fn find_row_by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("select {COLUMNS} from users where email = $1")).bind(email).fetch_optional(&db.pool).await
}

/// The account for these credentials, or `None`. Unknown emails cost a hash verification
/// too, so timing does not reveal which emails have accounts.
pub async fn authenticate(db: &Db, email: &str, password: &str) -> Result<Option<UserView>, sqlx::Error> {
    let Some(row) = find_row_by_email(db, email).await? else {
        password::burn_verify_time(password).await;
        return Ok(None);
    };
    if password::verify(password.to_string(), row.password_hash.clone()).await {
        Ok(Some(row.view()))
    } else {
        Ok(None)
    }
}

pub async fn find_by_id(db: &Db, id: &str) -> Result<Option<UserView>, sqlx::Error> {
    let row = sqlx::query_as::<_, UserRow>(&format!("select {COLUMNS} from users where id = $1")).bind(id).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| r.view()))
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<UserView>, sqlx::Error> {
    Ok(find_row_by_email(db, email).await?.map(|r| r.view()))
}

/// Every account, oldest first.
pub async fn list(db: &Db) -> Result<Vec<UserView>, sqlx::Error> {
    let rows = sqlx::query_as::<_, UserRow>(&format!("select {COLUMNS} from users order by created_at, email")).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(UserRow::view).collect())
}

/// Accounts whose email or name contains `text` (any case), at most `limit`, oldest first.
pub async fn search(db: &Db, text: &str, limit: i64) -> Result<Vec<UserView>, sqlx::Error> {
    // `like` patterns escaped, so a `%` or `_` in the search is itself.
    let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    let rows = sqlx::query_as::<_, UserRow>(&format!(
        "select {COLUMNS} from users where lower(email) like $1 escape '\\' or lower(name) like $1 escape '\\'
         order by created_at, email limit $2"
    ))
    .bind(format!("%{escaped}%"))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(UserRow::view).collect())
}

/// Sets a new password and ends every session of the account.
pub async fn set_password(db: &Db, id: &str, password: &str) -> Result<(), RegisterError> {
    let phc = password::hash(password.to_string()).await.map_err(RegisterError::Internal)?;
    sqlx::query("update users set password_hash = $1 where id = $2")
        .bind(phc)
        .bind(id)
        .execute(&db.writer)
        .await
        .map_err(|e| RegisterError::Internal(e.to_string()))?;
    super::sessions::delete_for_user(db, id).await.map_err(|e| RegisterError::Internal(e.to_string()))?;
    tracing::info!(user_id = %id, "password changed");
    Ok(())
}

/// Disables (`true`) or enables an account; a disabled one's sessions end at once. Returns
/// whether the account exists.
pub async fn set_disabled(db: &Db, id: &str, disabled: bool) -> Result<bool, sqlx::Error> {
    let at = disabled.then(now_ms);
    let done = sqlx::query("update users set disabled_at = $1 where id = $2").bind(at).bind(id).execute(&db.writer).await?;
    if disabled {
        super::sessions::delete_for_user(db, id).await?;
    }
    Ok(done.rows_affected() > 0)
}

/// Changes an account's role and ends its sessions (they carried the old one). Returns whether
/// the account exists.
pub async fn set_role(db: &Db, id: &str, role: Role) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update users set role = $1 where id = $2").bind(role.as_str()).bind(id).execute(&db.writer).await?;
    super::sessions::delete_for_user(db, id).await?;
    Ok(done.rows_affected() > 0)
}

/// Changes a user's role and password (the admin CLI's "create or reset").
pub async fn set_role_and_password(db: &Db, id: &str, role: Role, password: &str) -> Result<(), RegisterError> {
    sqlx::query("update users set role = $1 where id = $2")
        .bind(role.as_str())
        .bind(id)
        .execute(&db.writer)
        .await
        .map_err(|e| RegisterError::Internal(e.to_string()))?;
    // Every session of the account ends there, so an old password's sessions don't outlive it.
    set_password(db, id, password).await
}

/// What [`delete`] removed: the counts for the log, and what the caller does once the
/// transaction is committed (announce the ends, revoke the nodes, delete the files).
#[derive(Debug, Default)]
pub struct DeletedAccount {
    pub email: String,
    /// The account's jobs that were queued, dispatched or running.
    pub unfinished_jobs: Vec<String>,
    /// All its jobs, the unfinished ones included.
    pub jobs: u64,
    pub applications: u64,
    pub schedules: u64,
    /// Its nodes, removed (their broker users are still to be revoked).
    pub nodes: Vec<String>,
    /// Other accounts' jobs that were dispatched to or running on those nodes: queued again
    /// (`true`) or failed for good, out of attempts (`false`).
    pub moved_jobs: Vec<(String, bool)>,
    pub api_tokens: u64,
    pub sessions: u64,
    /// Where the artifact store keeps the account's files: `apps/<id>` and `jobs/<id>` (each
    /// whole, every attempt's uploads included), and the inputs sent with its jobs.
    pub artifact_prefixes: Vec<String>,
    pub artifact_keys: Vec<String>,
}

/// Deletes an account and everything it owns, in one transaction (who may is the caller's
/// business: `aiedge_services::accounts::delete`). `None` when there is no such account.
///
/// In order: the jobs of other accounts that are live on the account's nodes are moved on as a
/// removed node's are (the attempt is lost, "node removed"; the job is queued again or, out of
/// attempts, fails); then the account's small artifacts kept in the database, its jobs (with
/// their timelines and attempts), its applications (after the jobs: `jobs.app_id` does not
/// cascade), its API tokens, its sessions, its nodes (with their tokens, transitions, history
/// and shares) and the account itself. Files in the artifact store are the caller's to delete,
/// after the commit: see [`DeletedAccount`].
///
/// IMPORTANT (PostgreSQL): the account's row, its nodes and the jobs touched are locked first
/// (`for update`), so a concurrent dispatch to one of its nodes, a job submitted for it or an
/// agent's report cannot slip in between the reads and the deletes: they wait for the commit
/// and then find nothing. SQLite has one writer, so nothing slips in there.
pub async fn delete(db: &Db, id: &str) -> Result<Option<DeletedAccount>, sqlx::Error> {
    use aiedge_core::AttemptOutcome;
    let lock = if db.backend == super::db::Backend::Postgres { " for update" } else { "" };
    let mut tx = db.writer.begin().await?;
    let email: Option<(String,)> =
        sqlx::query_as(&format!("select email from users where id = $1{lock}")).bind(id).fetch_optional(&mut *tx).await?;
    let Some((email,)) = email else { return Ok(None) };
    let mut deleted = DeletedAccount { email, ..Default::default() };

    let nodes: Vec<(String,)> =
        sqlx::query_as(&format!("select id from nodes where owner_id = $1 order by id{lock}")).bind(id).fetch_all(&mut *tx).await?;
    deleted.nodes = nodes.into_iter().map(|(n,)| n).collect();

    // Other accounts' jobs on those nodes move on, as from a removed node.
    let guests: Vec<(String, String, i32)> = sqlx::query_as(&format!(
        "select id, node_id, attempt from jobs
         where node_id in (select id from nodes where owner_id = $1) and owner_id <> $1 and status in ('dispatched', 'running')
         order by created_at, id{lock}"
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for (job, node, attempt) in guests {
        let after = super::jobs::end_attempt_in(&mut tx, &job, &node, attempt, AttemptOutcome::Lost, "node removed", true).await?;
        match after {
            super::jobs::AfterFailure::Requeued => deleted.moved_jobs.push((job, true)),
            super::jobs::AfterFailure::Failed => deleted.moved_jobs.push((job, false)),
            // Found live under the lock (or by the one writer) a moment ago: cannot happen.
            super::jobs::AfterFailure::NotLive => return Err(sqlx::Error::RowNotFound),
        }
    }

    let jobs: Vec<(String, String, String, i32)> =
        sqlx::query_as(&format!("select id, status, input_key, attempt from jobs where owner_id = $1 order by id{lock}"))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    let mut inline = Vec::new();
    for (job, status, input_key, attempt) in &jobs {
        if !super::state::<aiedge_core::JobStatus>(status)?.is_terminal() {
            deleted.unfinished_jobs.push(job.clone());
        }
        if input_key.starts_with(super::artifacts::INLINE_PREFIX) {
            inline.push(input_key.clone());
        } else {
            // An application's default input is removed with the application.
            deleted.artifact_keys.push(input_key.clone());
        }
        // What each attempt may have uploaded (see `server::agent_jobs`), kept in the database.
        for n in 1..=*attempt {
            for name in ["result.csv", "log.txt"] {
                inline.push(super::artifacts::inline_key(&format!("jobs/{job}/attempt-{n}/{name}")));
            }
        }
        deleted.artifact_prefixes.push(format!("jobs/{job}"));
    }
    for keys in inline.chunks(500) {
        let marks: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let sql = format!("delete from inline_artifacts where key in ({})", marks.join(", "));
        let mut query = sqlx::query(&sql);
        for key in keys {
            query = query.bind(key);
        }
        query.execute(&mut *tx).await?;
    }
    // Timelines and attempts go with their jobs (on delete cascade).
    deleted.jobs = sqlx::query("delete from jobs where owner_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();

    // Schedules name the account's applications: they go first, with their runs and stored
    // inputs (the ones kept in the database here; files under their prefix).
    let schedules: Vec<(String,)> = sqlx::query_as("select id from schedules where owner_id = $1").bind(id).fetch_all(&mut *tx).await?;
    deleted.artifact_prefixes.extend(schedules.iter().map(|(s,)| format!("schedules/{s}")));
    sqlx::query("delete from inline_artifacts where key in (select input_key from schedules where owner_id = $1)")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    deleted.schedules = sqlx::query("delete from schedules where owner_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    let apps: Vec<(String,)> = sqlx::query_as("select id from applications where owner_id = $1").bind(id).fetch_all(&mut *tx).await?;
    deleted.artifact_prefixes.extend(apps.iter().map(|(a,)| format!("apps/{a}")));
    deleted.applications = sqlx::query("delete from applications where owner_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    deleted.api_tokens = sqlx::query("delete from api_tokens where user_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    deleted.sessions = sqlx::query("delete from sessions where user_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    // Registration tokens, transitions, history and shares go with the nodes; other accounts'
    // finished jobs and attempts keep their rows, without the node (on delete set null).
    sqlx::query("delete from nodes where owner_id = $1").bind(id).execute(&mut *tx).await?;
    // Usage analytics keep their counts but not the account: its active hours go, and the
    // node-hours its nodes contributed are kept under no one's name.
    sqlx::query("delete from usage_users where user_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("update usage_nodes set owner_id = 'a deleted account' where owner_id = $1").bind(id).execute(&mut *tx).await?;
    // The shares of other owners' nodes with this account go with it.
    sqlx::query("delete from users where id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(deleted))
}
