//! A node's requests are outside input too. Arbitrary methods' bodies, job ids, times and
//! signatures (forged, missing, or real ones from an enrolled node's key over arbitrary bytes)
//! at every agent job route of a real server: each gets a 4xx answer, never a 5xx, and none
//! changes a job the node was not given.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fleet::{fixture, json, User};
use common::{DbKind, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::jobs::{request_signature, HDR_NODE, HDR_REQUEST_SIGNATURE, HDR_TIME, JOBS_PATH};

/// (method, action) of every per-job agent route.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "start"),
    ("POST", "progress"),
    ("POST", "return"),
    ("POST", "finish"),
    ("PUT", "result"),
    ("PUT", "log"),
    ("GET", "application"),
    ("GET", "input"),
];

#[derive(Debug, Clone)]
enum Signature {
    /// Made with the node's real key over the request as sent.
    Real,
    Forged(String),
    Missing,
}

#[derive(Debug, Clone)]
struct Case {
    route: usize,
    /// `None`: the real job's id.
    job: Option<String>,
    query: String,
    body: Vec<u8>,
    signature: Signature,
    /// Added to the current time, in ms.
    skew_ms: i64,
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        // Shaped like the agent's reports, with any values.
        (any::<i64>(), "\\PC{0,40}", any::<bool>(), "\\PC{0,200}").prop_map(|(attempt, outcome, user_error, text)| {
            serde_json::to_vec(&serde_json::json!({
                "attempt": attempt,
                "outcome": { outcome: { "error": text, "user_error": user_error, "rows": attempt } },
                "result_csv": text,
                "rows_done": attempt,
            }))
            .unwrap()
        }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..ROUTES.len(),
        proptest::option::of("[a-z0-9./%-]{0,40}"),
        prop_oneof![Just(String::new()), "\\?attempt=[0-9-]{0,12}", "\\?[a-z=&%0-9]{0,30}"],
        body(),
        prop_oneof![3 => Just(Signature::Real), 1 => "[0-9a-f]{0,70}".prop_map(Signature::Forged), 1 => Just(Signature::Missing)],
        prop_oneof![4 => Just(0i64), 1 => any::<i64>(), 1 => -600_000i64..600_000],
    )
        .prop_map(|(route, job, query, body, signature, skew_ms)| Case { route, job, query, body, signature, skew_ms })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_agent_requests_get_a_clear_refusal_and_change_nothing() {
    let server = TestServer::start(DbKind::Sqlite).await;
    let user = User::new(&server, "fuzz@example.org").await;
    json(user.upload("iris", "m.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    // An enrolled node with no agent: it never sends a heartbeat, so it is given no job.
    let (_, token) = user.add_node("target").await;
    let http = reqwest::Client::new();
    let facts = serde_json::json!({
        "hostname": "fuzz", "os": "Linux", "arch": "x86_64", "cpu_cores": 2,
        "total_memory_bytes": 1u64 << 32, "agent_version": "0.1.0",
    });
    let enrolled = json(
        http.post(server.url(shared::wire::REGISTER_PATH))
            .json(&serde_json::json!({ "token": token, "facts": facts }))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let (node_id, node_key) = (enrolled["node_id"].as_str().unwrap().to_string(), enrolled["node_key"].as_str().unwrap().to_string());
    let job = json(user.submit("iris", Some(b"a,b,c,d\n1,2,3,4\n".to_vec())).await, 201).await;
    let job_id = job["id"].as_str().unwrap().to_string();
    let before = user.job(&job_id).await;

    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config { cases: 160, failure_persistence: None, ..Config::default() });
    let answered = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&case(), |case| {
        let (method, action) = ROUTES[case.route];
        let id = case.job.clone().unwrap_or_else(|| job_id.clone());
        let path = format!("{JOBS_PATH}/{id}/{action}{}", case.query);
        let time = aiedge_store::now_ms().saturating_add(case.skew_ms);
        let sha = hex::encode(Sha256::digest(&case.body));
        let mut request = http
            .request(method.parse().unwrap(), format!("{}{path}", server.base))
            .header(HDR_NODE, &node_id)
            .header(HDR_TIME, time.to_string())
            .body(case.body.clone());
        match &case.signature {
            Signature::Real => request = request.header(HDR_REQUEST_SIGNATURE, request_signature(&node_key, method, &path, time, &sha)),
            Signature::Forged(sig) => request = request.header(HDR_REQUEST_SIGNATURE, sig),
            Signature::Missing => {}
        }
        // Paths that are not URLs (e.g. `%` without hex) never leave the client: nothing to check.
        let Ok(response) = tokio::task::block_in_place(|| handle.block_on(request.timeout(Duration::from_secs(20)).send())) else {
            return Ok(());
        };
        let status = response.status().as_u16();
        *answered.lock().unwrap().entry(status).or_default() += 1;
        prop_assert!((400..500).contains(&status), "{case:?} got {status}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let answered = answered.into_inner().unwrap();
    println!("answers by status: {answered:?}");
    // The run reached past the signature check (a real signature at an existing job) as well as
    // being refused at it.
    assert!(answered.get(&401).is_some_and(|n| *n > 0), "{answered:?}");
    assert!(answered.keys().any(|s| *s != 401), "{answered:?}");

    // Healthy, and the job the node was never given is as it was.
    assert_eq!(http.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    let after = user.job(&job_id).await;
    assert_eq!((&after["status"], &after["attempt"], &after["node"]), (&before["status"], &before["attempt"], &before["node"]), "{after}");
    assert_eq!(after["status"], Value::from("queued"));
    server.stop().await;
}
