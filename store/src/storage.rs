//! Storage used per account: who owns which stored object, the sizes of the artifacts kept in
//! the database, and the latest measurement (made by the lease holder, read by admin pages).

use crate::db::Backend;
use crate::Db;

/// What owns stored objects, by the key prefixes the server stores them under.
#[derive(Debug, Default)]
pub struct Owners {
    /// (application id, owner): `apps/<id>/…`.
    pub apps: Vec<(String, String)>,
    /// (job id, owner, input key): `jobs/<id>/…`, and the input the job reads.
    pub jobs: Vec<(String, String, String)>,
    /// (schedule id, owner): `schedules/<id>/…`.
    pub schedules: Vec<(String, String)>,
}

pub async fn owners(db: &Db) -> Result<Owners, sqlx::Error> {
    let apps = sqlx::query_as("select id, owner_id from applications").fetch_all(&db.pool).await?;
    let jobs = sqlx::query_as("select id, owner_id, input_key from jobs").fetch_all(&db.pool).await?;
    let schedules = sqlx::query_as("select id, owner_id from schedules").fetch_all(&db.pool).await?;
    Ok(Owners { apps, jobs, schedules })
}

/// Every artifact kept in the database, by key, with its length in characters (bytes for the
/// ASCII CSV they hold).
pub async fn inline_sizes(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("select key, length(content) from inline_artifacts").fetch_all(&db.pool).await
}

/// One account's storage (owner `""`: no account's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub owner_id: String,
    pub bytes: i64,
    pub objects: i64,
    pub jobs: i64,
}

/// Replaces the last measurement with `usage`, taken at `measured_at`.
pub async fn record(db: &Db, usage: &[Usage], measured_at: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    sqlx::query("delete from storage_usage").execute(&mut *tx).await?;
    for u in usage {
        sqlx::query("insert into storage_usage (owner_id, bytes, objects, jobs, measured_at) values ($1, $2, $3, $4, $5)")
            .bind(&u.owner_id)
            .bind(u.bytes)
            .bind(u.objects)
            .bind(u.jobs)
            .bind(measured_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// A row of the latest measurement, with the account's email while it exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    pub usage: Usage,
    pub email: Option<String>,
    pub measured_at: i64,
}

/// The latest measurement, largest first.
pub async fn latest(db: &Db) -> Result<Vec<Measured>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "select s.owner_id, s.bytes, s.objects, s.jobs, s.measured_at, u.email
         from storage_usage s left join users u on u.id = s.owner_id
         order by s.bytes desc, s.owner_id",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(owner_id, bytes, objects, jobs, measured_at, email)| Measured {
            usage: Usage { owner_id, bytes, objects, jobs },
            email,
            measured_at,
        })
        .collect())
}

/// The database's own size on disk, in bytes.
pub async fn database_bytes(db: &Db) -> Result<i64, sqlx::Error> {
    let sql = match db.backend {
        Backend::Postgres => "select pg_database_size(current_database())",
        Backend::Sqlite => "select page_count * page_size from pragma_page_count(), pragma_page_size()",
    };
    let (bytes,): (i64,) = sqlx::query_as(sql).fetch_one(&db.pool).await?;
    Ok(bytes)
}
