//! Applications in the database. The artifacts themselves live in the server's artifact store;
//! rows only name them by key.

use sqlx::FromRow;

use super::{now_ms, Db};
use aiedge_core::views::{AppDetails, AppView};

#[derive(FromRow)]
struct AppRow {
    id: String,
    owner_id: String,
    name: String,
    kind: String,
    artifact_key: String,
    sha256: String,
    size_bytes: i64,
    details: String,
    runtime: Option<String>,
    features: Option<i64>,
    default_input_key: Option<String>,
    default_input_rows: Option<i64>,
    created_at: i64,
    deleted_at: Option<i64>,
}

/// An application with what the server needs besides the view.
#[derive(Clone, Debug)]
pub struct AppRecord {
    pub view: AppView,
    pub owner_id: String,
    pub artifact_key: String,
    pub runtime: Option<String>,
    pub features: Option<u64>,
    pub default_input_key: Option<String>,
    pub deleted_at: Option<i64>,
}

impl AppRow {
    fn record(self) -> Result<AppRecord, sqlx::Error> {
        let details: AppDetails = serde_json::from_str(&self.details).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(AppRecord {
            view: AppView {
                id: self.id,
                name: self.name,
                kind: self.kind,
                sha256: self.sha256,
                size_bytes: u64::try_from(self.size_bytes).unwrap_or(0),
                details,
                default_input_rows: self.default_input_rows.and_then(|r| u64::try_from(r).ok()),
                created_at_ms: self.created_at,
            },
            owner_id: self.owner_id,
            artifact_key: self.artifact_key,
            runtime: self.runtime,
            features: self.features.and_then(|f| u64::try_from(f).ok()),
            default_input_key: self.default_input_key,
            deleted_at: self.deleted_at,
        })
    }
}

const COLUMNS: &str = "id, owner_id, name, kind, artifact_key, sha256, size_bytes, details, runtime, features, default_input_key, default_input_rows, created_at, deleted_at";

/// A checked upload, ready to be recorded.
pub struct NewApp {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: shared::jobs::AppKind,
    pub artifact_key: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub details: AppDetails,
    pub runtime: Option<String>,
    pub features: Option<u64>,
    pub default_input: Option<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("you already have an application with this name")]
    NameTaken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub async fn create(db: &Db, app: NewApp) -> Result<AppView, CreateError> {
    let details = serde_json::to_string(&app.details).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let result = sqlx::query(
        "insert into applications (id, owner_id, name, kind, artifact_key, sha256, size_bytes, details, runtime, features, default_input_key, default_input_rows, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&app.id)
    .bind(&app.owner_id)
    .bind(&app.name)
    .bind(app.kind.as_str())
    .bind(&app.artifact_key)
    .bind(&app.sha256)
    .bind(i64::try_from(app.size_bytes).unwrap_or(i64::MAX))
    .bind(details)
    .bind(&app.runtime)
    .bind(app.features.map(|f| f as i64))
    .bind(app.default_input.as_ref().map(|(k, _)| k.clone()))
    .bind(app.default_input.as_ref().map(|(_, rows)| *rows as i64))
    .bind(now_ms())
    .execute(&db.writer)
    .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(CreateError::NameTaken),
        other => other?,
    };
    get(db, &app.id).await?.map(|r| r.view).ok_or(CreateError::Db(sqlx::Error::RowNotFound))
}

pub async fn get(db: &Db, id: &str) -> Result<Option<AppRecord>, sqlx::Error> {
    let row: Option<AppRow> =
        sqlx::query_as(&format!("select {COLUMNS} from applications where id = $1")).bind(id).fetch_optional(&db.pool).await?;
    row.map(AppRow::record).transpose()
}

/// A user's live application by id or, failing that, by name.
pub async fn find(db: &Db, owner_id: &str, id_or_name: &str) -> Result<Option<AppRecord>, sqlx::Error> {
    let row: Option<AppRow> = sqlx::query_as(&format!(
        "select {COLUMNS} from applications where owner_id = $1 and deleted_at is null and (id = $2 or name = $2) order by (id = $2) desc limit 1"
    ))
    .bind(owner_id)
    .bind(id_or_name)
    .fetch_optional(&db.pool)
    .await?;
    row.map(AppRow::record).transpose()
}

/// A user's live applications, newest first.
pub async fn list(db: &Db, owner_id: &str) -> Result<Vec<AppView>, sqlx::Error> {
    let rows: Vec<AppRow> = sqlx::query_as(&format!(
        "select {COLUMNS} from applications where owner_id = $1 and deleted_at is null order by created_at desc, id"
    ))
    .bind(owner_id)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter().map(|r| r.record().map(|r| r.view)).collect()
}

/// Marks a user's application deleted. False when there is no such live application of theirs.
pub async fn delete(db: &Db, id: &str, owner_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update applications set deleted_at = $1 where id = $2 and owner_id = $3 and deleted_at is null")
        .bind(now_ms())
        .bind(id)
        .bind(owner_id)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() > 0)
}
