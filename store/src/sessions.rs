//! Server-side sessions: the `tower-sessions` store kept in our own database. Signing in and
//! out, and resolving the user of a request, are the web app's (`app::backend::sessions`).
//!
//! The cookie holds only a random session id; the store keys rows by the id's SHA-256, so a
//! leaked database holds no usable session. "Remember me" makes the session last 30 days of
//! inactivity; otherwise the cookie lasts as long as the browser session.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::Db;

/// The session key that holds the signed-in user's id.
pub const USER_ID: &str = "user_id";
/// How long a remembered session lasts without use.
pub const REMEMBER_FOR: time::Duration = time::Duration::days(30);
/// The cookie's name.
pub const COOKIE_NAME: &str = "aiedge_session";

#[derive(Clone, Debug)]
pub struct DbSessionStore {
    db: Db,
}

impl DbSessionStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Whether the session is still there and unexpired (a logout, a change of password or role,
    /// or expiry ends it).
    pub async fn is_live(&self, id: &Id) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as("select expires_at from sessions where id = $1 and expires_at > $2")
            .bind(key(id))
            .bind(super::now_ms())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deletes expired sessions; run now and then.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("delete from sessions where expires_at <= $1").bind(super::now_ms()).execute(&self.db.writer).await?;
        Ok(done.rows_affected())
    }
}

fn key(id: &Id) -> String {
    hex::encode(Sha256::digest(id.to_string().as_bytes()))
}

fn backend_err(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn user_id(record: &Record) -> Option<String> {
    record.data.get(USER_ID).and_then(|v| v.as_str()).map(str::to_string)
}

fn expiry_ms(record: &Record) -> i64 {
    (record.expiry_date.unix_timestamp_nanos() / 1_000_000) as i64
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data).map_err(backend_err)?;
        // Ids are 128 random bits, so a collision is all but impossible; still, never
        // overwrite someone else's session.
        loop {
            let done =
                sqlx::query("insert into sessions (id, user_id, data, expires_at) values ($1, $2, $3, $4) on conflict (id) do nothing")
                    .bind(key(&record.id))
                    .bind(user_id(record))
                    .bind(&data)
                    .bind(expiry_ms(record))
                    .execute(&self.db.writer)
                    .await
                    .map_err(backend_err)?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data).map_err(backend_err)?;
        sqlx::query(
            r#"insert into sessions (id, user_id, data, expires_at) values ($1, $2, $3, $4)
               on conflict (id) do update
               set user_id = excluded.user_id, data = excluded.data, expires_at = excluded.expires_at"#,
        )
        .bind(key(&record.id))
        .bind(user_id(record))
        .bind(data)
        .bind(expiry_ms(record))
        .execute(&self.db.writer)
        .await
        .map_err(backend_err)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(String, i64)> = sqlx::query_as("select data, expires_at from sessions where id = $1 and expires_at > $2")
            .bind(key(id))
            .bind(super::now_ms())
            .fetch_optional(&self.db.pool)
            .await
            .map_err(backend_err)?;
        let Some((data, expires_at)) = row else { return Ok(None) };
        let data = serde_json::from_str(&data).map_err(backend_err)?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at) * 1_000_000).map_err(backend_err)?;
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query("delete from sessions where id = $1").bind(key(id)).execute(&self.db.writer).await.map_err(backend_err)?;
        Ok(())
    }
}

/// Ends every session of a user (their password or role changed).
pub async fn delete_for_user(db: &Db, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from sessions where user_id = $1").bind(user_id).execute(&db.writer).await?;
    Ok(())
}
