//! Retention: finished jobs past `--retention-days` are deleted with everything that is theirs
//! alone, in batches; younger jobs, running ones and what applications own stay; files left
//! behind by a crash are found and removed; the job page says until when a job is kept; the
//! storage each account uses is measured and shown to admins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fleet::{fixture, json, User};
use common::{DbKind, TestServer};
use tokio_util::sync::CancellationToken;

const DAY_MS: i64 = 24 * 3600 * 1000;

async fn count(db: &aiedge_store::Db, sql: &str, id: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(&db.pool).await.unwrap();
    n
}

async fn old_jobs_go_with_what_is_theirs_and_nothing_else(kind: DbKind) {
    // The server's own pruner keeps jobs for a century here: the test prunes by hand.
    let server = TestServer::start_with(kind, |c| c.retention_days = 36_500).await;
    let user = User::new(&server, "keeper@example.org").await;
    let (_node, _agent) = user.node_with_agent(&server, "box-1").await;
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    let app = user.upload_iris().await;
    let app_id = app["id"].as_str().unwrap().to_string();

    // Four jobs: two with inputs of their own, one on the application's default input, one kept.
    let mut ids = Vec::new();
    for input in [Some(iris.clone()), Some(iris.clone()), None, Some(iris.clone())] {
        let job = json(user.submit("iris", input).await, 201).await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(user.wait_job(id).await["status"], "succeeded");
    }
    let state = server::build_state(&server.config).await.unwrap();
    let db = &state.db;

    // The job page says until when each is kept.
    let page = server.client();
    assert_eq!(page.login("keeper@example.org", common::fleet::PASSWORD).await.status(), 200);
    let html = page.get(&format!("/jobs/{}", ids[3])).await.text().await.unwrap();
    assert!(html.contains("data-testid=\"kept-until\"") && html.contains("Kept until"), "{html}");

    // The first three ended 40 days ago; the usage analytics count them first.
    let now = aiedge_store::now_ms();
    for id in &ids[..3] {
        sqlx::query("update jobs set finished_at = $1 where id = $2").bind(now - 40 * DAY_MS).bind(id).execute(&db.writer).await.unwrap();
    }
    let keys: Vec<(String,)> = sqlx::query_as("select input_key from jobs where id = $1 or id = $2")
        .bind(&ids[0])
        .bind(&ids[1])
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    aiedge_services::usage::roll_up(db, now).await.unwrap();
    let usage_before: (i64,) =
        sqlx::query_as("select cast(coalesce(sum(jobs), 0) as bigint) from usage_jobs").fetch_one(&db.pool).await.unwrap();

    let pruned = server::retention::prune(&state, None, now - 30 * DAY_MS, &cancel).await.unwrap();
    assert_eq!(pruned.jobs, 3);
    for id in &ids[..3] {
        assert_eq!(count(db, "select count(*) from jobs where id = $1", id).await, 0);
        assert_eq!(count(db, "select count(*) from job_events where job_id = $1", id).await, 0);
        assert_eq!(count(db, "select count(*) from job_attempts where job_id = $1", id).await, 0);
        assert_eq!(count(db, "select count(*) from inline_artifacts where key like '%' || $1 || '%'", id).await, 0);
        assert_eq!(user.get(&format!("/api/v1/jobs/{id}")).await.status(), 404);
    }
    for (key,) in &keys {
        assert_eq!(count(db, "select count(*) from inline_artifacts where key = $1", key).await, 0, "{key} stayed");
    }
    // The kept job, its result, and the application with its default input are all there.
    let res = user.get(&format!("/api/v1/jobs/{}/result", ids[3])).await;
    assert_eq!(res.status(), 200);
    let again = json(user.submit(&app_id, None).await, 201).await;
    assert_eq!(user.wait_job(again["id"].as_str().unwrap()).await["status"], "succeeded", "the default input went with a pruned job");
    let usage_after: (i64,) =
        sqlx::query_as("select cast(coalesce(sum(jobs), 0) as bigint) from usage_jobs").fetch_one(&db.pool).await.unwrap();
    assert_eq!(usage_after, usage_before, "pruning changed the usage counts");

    // A crash between a prune's commit and its file deletions leaves files no job names.
    let artifacts = server.data_dir.path().join("artifacts");
    std::fs::create_dir_all(artifacts.join("jobs/gone-job/attempt-1")).unwrap();
    std::fs::write(artifacts.join("jobs/gone-job/attempt-1/result.csv"), "row\n").unwrap();
    std::fs::create_dir_all(artifacts.join("inputs")).unwrap();
    std::fs::write(artifacts.join("inputs/gone-input.csv"), "a\n").unwrap();
    std::fs::create_dir_all(artifacts.join(format!("jobs/{}", ids[3]))).unwrap();
    // Too young to be sure: kept.
    assert_eq!(server::retention::sweep_orphans(&state, Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(server::retention::sweep_orphans(&state, Duration::ZERO).await.unwrap(), 2);
    assert!(!artifacts.join("jobs/gone-job").exists() && !artifacts.join("inputs/gone-input.csv").exists());
    assert!(artifacts.join(format!("jobs/{}", ids[3])).exists(), "a kept job's files went");
    server.stop().await;
}

/// More jobs than a batch: all go, a batch at a time, and the database ends with none of them.
async fn pruning_goes_batch_by_batch(kind: DbKind) {
    let server = TestServer::start_with(kind, |c| c.retention_days = 0).await;
    let user = User::new(&server, "many@example.org").await;
    user.upload_iris().await;
    let state = server::build_state(&server.config).await.unwrap();
    let db = &state.db;
    let (owner, app): (String, String) = sqlx::query_as("select owner_id, id from applications").fetch_one(&db.pool).await.unwrap();
    let total = server::retention::MAX_BATCH * 2 + 17;
    let old = aiedge_store::now_ms() - 400 * DAY_MS;
    let mut tx = db.writer.begin().await.unwrap();
    for i in 0..total {
        sqlx::query(
            "insert into jobs (id, owner_id, app_id, status, input_key, input_name, created_at, finished_at) values ($1, $2, $3, 'failed', 'inline:inputs/x.csv', 'x.csv', $4, $4)",
        )
        .bind(format!("bulk-{i}"))
        .bind(&owner)
        .bind(&app)
        .bind(old + i)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    aiedge_services::usage::roll_up(db, aiedge_store::now_ms()).await.unwrap();
    let pruned = server::retention::prune(&state, None, aiedge_store::now_ms() - DAY_MS, &CancellationToken::new()).await.unwrap();
    assert_eq!(pruned.jobs, total as u64);
    assert_eq!(aiedge_store::retention::finished_jobs(db).await.unwrap().finished, 0);
    server.stop().await;
}

/// Storage is measured per account, from the files and the artifacts kept in the database,
/// with what no account owns apart, and the admin page shows it.
async fn storage_is_measured_per_account(kind: DbKind) {
    let server = TestServer::start(kind).await;
    let model = std::fs::read(fixture("iris_logreg.onnx")).unwrap().len() as i64;
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    let ann = User::new(&server, "ann@example.org").await;
    let bob = User::new(&server, "bob@example.org").await;
    ann.upload_iris().await;
    bob.upload_iris().await;
    // No node: the job waits, its (small, database-kept) input stored all the same.
    json(ann.submit("iris", Some(iris.clone())).await, 201).await;
    let orphan = server.data_dir.path().join("artifacts/inputs/left-by-a-crash.csv");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, "12345").unwrap();

    let (admin, state) = server.signed_in_admin("admin password 1").await;
    let usage = aiedge_services::storage::measure(&state.db, state.artifacts.as_ref()).await.unwrap();
    let of = |owner: &str| usage.iter().find(|u| u.owner_id == owner).cloned().unwrap_or_default();
    let id_of = |email: &str| {
        let db = state.db.clone();
        let email = email.to_string();
        async move { sqlx::query_as::<_, (String,)>("select id from users where email = $1").bind(email).fetch_one(&db.pool).await.unwrap().0 }
    };
    let (ann_id, bob_id) = (id_of("ann@example.org").await, id_of("bob@example.org").await);
    let csv = iris.len() as i64;
    assert_eq!((of(&ann_id).bytes, of(&ann_id).objects, of(&ann_id).jobs), (model + 2 * csv, 3, 1), "model, default input, job input");
    assert_eq!((of(&bob_id).bytes, of(&bob_id).objects, of(&bob_id).jobs), (model + csv, 2, 0));
    assert_eq!((of("").bytes, of("").objects), (5, 1), "the orphan counts toward no account");

    let html = admin.get("/admin").await.text().await.unwrap();
    let storage = &html[html.find("data-testid=\"storage\"").expect("a storage card")..];
    for shown in ["ann@example.org", "bob@example.org", "no account", "data-testid=\"chart-storage\"", "Measured"] {
        assert!(storage.contains(shown), "{shown} missing from the storage card: {storage}");
    }
    assert!(storage.find("ann@example.org") < storage.find("bob@example.org"), "largest first");
    server.stop().await;
}

on_both_databases!(old_jobs_go_with_what_is_theirs_and_nothing_else, pruning_goes_batch_by_batch, storage_is_measured_per_account);
