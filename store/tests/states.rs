//! The schema holds every state column to the words `aiedge_core` knows, on both engines: each
//! word is written and read back, and a word outside the set is refused and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aiedge_core::{AdminState, AttemptOutcome, JobStatus, NodeStatus, Role};
use aiedge_store::{now_ms, users};
use common::{TestDb, ENGINES};

async fn count(db: &aiedge_store::Db, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&db.pool).await.unwrap();
    n
}

#[tokio::test]
async fn state_columns_take_only_known_words() {
    for engine in ENGINES {
        let t = TestDb::new(engine).await;
        let db = &t.db;
        let owner = users::create(db, "owner@example.org", "a long password", None, Role::User).await.unwrap();
        let now = now_ms();
        sqlx::query("insert into nodes (id, owner_id, name, created_at) values ('n1', $1, 'box', $2)")
            .bind(&owner.id)
            .bind(now)
            .execute(&db.writer)
            .await
            .unwrap();
        for s in NodeStatus::ALL {
            sqlx::query("update nodes set status = $1 where id = 'n1'").bind(s.as_str()).execute(&db.writer).await.unwrap();
        }
        for s in AdminState::ALL {
            sqlx::query("update nodes set admin_state = $1 where id = 'n1'").bind(s.as_str()).execute(&db.writer).await.unwrap();
        }
        sqlx::query(
            "insert into applications (id, owner_id, name, kind, artifact_key, sha256, size_bytes, details, created_at)
             values ('a1', $1, 'm', 'onnx', 'k', 'h', 1, '{}', $2)",
        )
        .bind(&owner.id)
        .bind(now)
        .execute(&db.writer)
        .await
        .unwrap();
        let insert_job = |id: &'static str, status: &'static str| {
            sqlx::query(
                "insert into jobs (id, owner_id, app_id, status, input_key, input_name, created_at) values ($1, $2, 'a1', $3, 'in', 'in.csv', $4)",
            )
            .bind(id)
            .bind(owner.id.clone())
            .bind(status)
            .bind(now)
        };
        insert_job("j1", JobStatus::Queued.as_str()).execute(&db.writer).await.unwrap();
        for s in JobStatus::ALL {
            sqlx::query("update jobs set status = $1 where id = 'j1'").bind(s.as_str()).execute(&db.writer).await.unwrap();
            sqlx::query("insert into job_events (id, job_id, at, status, attempt, message) values ($1, 'j1', $2, $3, 0, 'm')")
                .bind(format!("e-{s}"))
                .bind(now)
                .bind(s.as_str())
                .execute(&db.writer)
                .await
                .unwrap();
        }
        sqlx::query(
            "insert into job_attempts (job_id, attempt, node_id, node_name, dispatched_at, outcome) values ('j1', 1, 'n1', 'box', $1, 'dispatched')",
        )
        .bind(now)
        .execute(&db.writer)
        .await
        .unwrap();
        for s in AttemptOutcome::ALL {
            sqlx::query("update job_attempts set outcome = $1 where job_id = 'j1'").bind(s.as_str()).execute(&db.writer).await.unwrap();
        }

        // Words outside the sets (a typo, another case) are refused, and nothing changes.
        let before = count(db, "select count(*) from jobs").await;
        assert!(insert_job("j2", "Queued").execute(&db.writer).await.is_err(), "{engine:?}: a job inserted as 'Queued'");
        assert_eq!(count(db, "select count(*) from jobs").await, before);
        for (sql, what) in [
            ("update jobs set status = 'done' where id = 'j1'", "jobs.status"),
            ("update job_attempts set outcome = 'gone' where job_id = 'j1'", "job_attempts.outcome"),
            ("update nodes set status = 'asleep' where id = 'n1'", "nodes.status"),
            ("update nodes set admin_state = 'paused' where id = 'n1'", "nodes.admin_state"),
            (
                "insert into job_events (id, job_id, at, status, attempt, message) values ('x', 'j1', 0, 'lost', 0, 'm')",
                "job_events.status",
            ),
            (
                "insert into node_events (id, node_id, at, from_status, to_status, reason) values ('x', 'n1', 0, 'active', 'gone', 'r')",
                "node_events.to_status",
            ),
        ] {
            assert!(sqlx::query(sql).execute(&db.writer).await.is_err(), "{engine:?}: {what} took a word outside its set");
        }
        let (status,): (String,) = sqlx::query_as("select status from jobs where id = 'j1'").fetch_one(&db.pool).await.unwrap();
        assert_eq!(status, JobStatus::ALL.last().unwrap().as_str(), "{engine:?}");
    }
}
