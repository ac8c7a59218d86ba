//! A fresh, migrated database for each test: a SQLite file in a temp dir, or a PostgreSQL
//! database of its own that is dropped when the test ends, even when it fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aiedge_store::Db;
use sqlx::{Connection, Executor};

#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

fn postgres_admin_url() -> String {
    std::env::var("AIEDGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestDb {
    pub db: Db,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg_database) = match engine {
            Engine::Sqlite => (format!("sqlite://{}/test.db", dir.path().display()), None),
            Engine::Postgres => {
                let name = format!("aiedge_s_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_admin_url()))
                    .await
                    .expect("PostgreSQL reachable for tests (is it running?)");
                conn.execute(format!("create database {name}").as_str()).await.expect("create test database");
                (format!("{}/{name}", postgres_admin_url()), Some(name))
            }
        };
        let db = Db::connect(&url).await.expect("connect and migrate the test database");
        Self { db, _dir: dir, pg_database }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else { return };
        // Dropped on a thread of its own: this may run inside a runtime, or while a panic unwinds.
        let url = format!("{}/postgres", postgres_admin_url());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = conn.execute(format!("drop database if exists {name} with (force)").as_str()).await;
                }
            });
        })
        .join();
    }
}
