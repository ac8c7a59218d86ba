//! Usage analytics through a real server and agent, on SQLite and PostgreSQL: a person's session
//! (register, add a node, upload, run, download, cancel) shows on the admins' report by
//! functionality, channel, route, job outcome and node; rolling up twice or moving minutes into
//! hours counts nothing twice; only admins see it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fleet::{fixture, json, Agent, User};
use common::{DbKind, TestServer};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
const ROWS: &[u8] = b"a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n";

on_both_databases!(a_session_shows_on_the_usage_report, only_admins_see_usage);

/// How often `action` was used through `channel` ("web" or "api") in the report.
fn uses(report: &Value, action: &str, channel: &str) -> u64 {
    report["actions"].as_array().unwrap().iter().find(|a| a["action"] == action).map_or(0, |a| a[channel].as_u64().unwrap())
}

fn route<'a>(report: &'a Value, method: &str, path: &str) -> &'a Value {
    report["routes"].as_array().unwrap().iter().find(|r| r["method"] == method && r["route"] == path).unwrap_or_else(|| {
        panic!("{method} {path} missing from {}", report["routes"]);
    })
}

async fn a_session_shows_on_the_usage_report(db: DbKind) {
    let server = TestServer::start(db).await;
    let (admin, state) = server.signed_in_admin(PASSWORD).await;

    // A person's session: registered and adding a node in the browser, the rest with a token.
    let user = User::new(&server, "ada@example.org").await;
    let (node_id, token) = user.add_node("box").await;
    let _agent = Agent::start(&server, &token, "box", &[]);
    user.wait_node_active(&node_id).await;
    json(user.upload("iris", "m.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = json(user.submit("iris", Some(ROWS.to_vec())).await, 201).await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        assert_eq!(user.wait_job(id).await["status"], "succeeded");
        assert_eq!(user.get(&format!("/api/v1/jobs/{id}/result")).await.status(), 200);
    }
    // Refused: counted, as a 4xx of its route.
    assert_eq!(user.get("/api/v1/jobs/no-such-job/result").await.status(), 404);

    let report = |window: &'static str| {
        let admin = &admin;
        async move {
            let res = admin.http.get(admin.url(&format!("/api/admin/usage?window={window}"))).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let day = report("24h").await;
    assert_eq!(uses(&day, "register", "web"), 1, "{}", day["actions"]);
    assert_eq!(uses(&day, "add_node", "web"), 1);
    assert_eq!(uses(&day, "upload", "api"), 1);
    assert_eq!(uses(&day, "run", "api"), 3);
    assert_eq!(uses(&day, "download", "api"), 4);
    assert!(uses(&day, "log_in", "web") >= 1);
    // The user; the admin's only request so far was signing in, before which nobody was known
    // (and this report's own request is counted once it is answered).
    assert_eq!(day["active_users"], 1, "{day}");
    let requests: u64 = day["activity"].as_array().unwrap().iter().map(|p| p["web"].as_u64().unwrap() + p["api"].as_u64().unwrap()).sum();
    assert!(requests >= 10, "{}", day["activity"]);
    assert_eq!(day["activity"].as_array().unwrap().len(), 24);

    let submit = route(&day, "POST", "/api/v1/jobs");
    assert_eq!(submit["requests"], 3);
    assert!(submit["p50_ms"].as_f64().unwrap() > 0.0, "{submit}");
    let download = route(&day, "GET", "/api/v1/jobs/{id}/result");
    assert_eq!((download["requests"].as_u64(), download["refused"].as_u64()), (Some(4), Some(1)), "{download}");

    // The jobs ended, on the node, with their queue waits and run times.
    let jobs = day["jobs"].as_array().unwrap();
    let succeeded: u64 = jobs.iter().map(|p| p["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(succeeded, 3, "{}", day["jobs"]);
    assert!(jobs.iter().any(|p| p["run_p50_ms"].as_f64().is_some() && p["wait_p50_ms"].as_f64().is_some()), "{}", day["jobs"]);
    assert_eq!(day["jobs_per_node"][0]["label"], "box", "{}", day["jobs_per_node"]);
    assert_eq!(day["jobs_per_node"][0]["value"], 3.0);

    // Rolled up again, and with every minute moved into hours (as two hours later): the same
    // counts. Nothing is counted twice.
    let again = report("24h").await;
    assert_eq!(again["active_users"], 2, "the admin, once its first report was answered: {again}");
    assert_eq!(uses(&again, "run", "api"), 3);
    assert_eq!(again["jobs_per_node"][0]["value"], 3.0);
    let later = aiedge_store::now_ms() + 3 * 3_600_000;
    let moved = aiedge_services::usage::roll_up(&state.db, later).await.unwrap();
    assert!(moved.minutes_moved > 0, "{moved:?}");
    let month = report("30d").await;
    assert_eq!(uses(&month, "run", "api"), 3, "{}", month["actions"]);
    assert_eq!(uses(&month, "download", "api"), 4);
    assert_eq!(route(&month, "POST", "/api/v1/jobs")["requests"], 3);
    let succeeded: u64 = month["jobs"].as_array().unwrap().iter().map(|p| p["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(succeeded, 3);
    assert_eq!(month["activity"].as_array().unwrap().len(), 30);
    // That roll-up began a new minute while the node was active: a minute of it is counted for
    // its owner.
    assert!(moved.nodes_sampled >= 1, "{moved:?}");
    assert_eq!(month["node_hours"][0]["label"], "ada@example.org", "{}", month["node_hours"]);
    assert!(month["node_hours"][0]["value"].as_f64().unwrap() >= 1.0 / 60.0);

    // The page, drawn on the server: its charts are there before any script runs.
    let page = admin.get("/usage?window=7d").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for wanted in ["chart-requests", "chart-actions", "chart-jobs", "chart-job-times", "chart-node-jobs", "Run job", "<svg", "/api/v1/jobs"]
    {
        assert!(html.contains(wanted), "{wanted} missing from the Usage page");
    }
    server.stop().await;
}

async fn only_admins_see_usage(db: DbKind) {
    let server = TestServer::start(db).await;
    let anonymous = server.client();
    assert_eq!(anonymous.http.get(server.url("/api/admin/usage")).send().await.unwrap().status(), 401);
    assert_eq!(anonymous.get("/usage").await.status(), 303);
    let user = User::new(&server, "user@example.org").await;
    assert_eq!(user.web.http.get(server.url("/api/admin/usage")).send().await.unwrap().status(), 403);
    let page = user.web.get("/usage").await;
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("Admins only"));

    let (admin, _) = server.signed_in_admin(PASSWORD).await;
    let res = admin.http.get(server.url("/api/admin/usage?window=1y")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("24h, 7d or 30d"));
    // The default window is a day.
    let res = admin.http.get(server.url("/api/admin/usage")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["window"], "24h");
    server.stop().await;
}
