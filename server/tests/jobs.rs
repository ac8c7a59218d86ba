//! Applications and jobs end to end: the real server, real `node-agent` processes, the real
//! RabbitMQ, SQLite and PostgreSQL. Uploads and submissions go through the JSON API with a
//! personal token, the way a script would; results are compared with onnxruntime's outputs
//! (computed when the fixtures were made, see scripts/make_fixtures.py).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::fleet::{assert_same_predictions, bundle, fixture, json, Agent, User};
use common::{DbKind, TestServer};
use serde_json::Value;

on_both_databases!(
    models_and_scripts_run_on_a_node,
    bad_uploads_are_refused_and_change_nothing,
    only_owners_and_their_nodes_get_at_jobs,
    small_jobs_take_the_short_way,
    a_burst_of_submissions_is_recorded_whole,
    finish_reports_are_recorded_in_groups
);

mod waiting {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_waiting_job_says_why_and_sh_bundles_run(super::DbKind::Sqlite).await
    }
}

mod balancer {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_balancer_picks_spreads_and_respects_constraints(super::DbKind::Sqlite).await
    }
}

const DOUBLER: &str = r#"import csv, os
with open(os.environ["AIEDGE_INPUT"]) as f, open(os.environ["AIEDGE_OUTPUT"], "w") as out:
    rows = list(csv.reader(f))
    out.write("row,double\n")
    for i, r in enumerate(rows[1:]):
        out.write(f"{i},{2 * float(r[0])}\n")
print("doubled", len(rows) - 1, "rows")
"#;

async fn models_and_scripts_run_on_a_node(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "ml@example.org").await;
    let (node_id, token) = user.add_node("box-1").await;
    let _agent = Agent::start(&server, &token, "box-1", &["--max-jobs", "2"]);
    user.wait_node_active(&node_id).await;

    // An ONNX classifier: its input shape and output columns are shown at upload.
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    let app =
        json(user.upload("iris", "iris_logreg.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), Some(iris.clone())).await, 201)
            .await;
    assert_eq!(app["kind"], "onnx");
    assert_eq!(app["details"]["features"], 4);
    assert_eq!(app["details"]["columns"], serde_json::json!(["row", "label", "prob_0", "prob_1", "prob_2"]));
    assert_eq!(app["default_input_rows"], 150);

    // With an uploaded input, and with the default one.
    let job = json(user.submit("iris", Some(iris)).await, 201).await;
    assert_eq!(job["status"], "queued");
    let default_job = json(user.submit(app["id"].as_str().unwrap(), None).await, 201).await;
    for job in [&job, &default_job] {
        let done = user.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["node_id"], node_id.as_str());
        assert_eq!(done["result_rows"], 150);
        let res = user.get(&format!("/api/v1/jobs/{}/result", job["id"].as_str().unwrap())).await;
        assert_eq!(res.status(), 200);
        let disposition = res.headers()["content-disposition"].to_str().unwrap().to_string();
        assert!(disposition.starts_with("attachment; filename=\"iris-") && disposition.ends_with("-predictions.csv\""), "{disposition}");
        assert_same_predictions(&res.text().await.unwrap(), &std::fs::read_to_string(fixture("iris_logreg.expected.csv")).unwrap());
    }

    // A regressor.
    json(user.upload("diabetes", "diabetes_linreg.onnx", std::fs::read(fixture("diabetes_linreg.onnx")).unwrap(), None).await, 201).await;
    let job = json(user.submit("diabetes", Some(std::fs::read(fixture("diabetes.csv")).unwrap())).await, 201).await;
    let done = user.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let csv = user.get(&format!("/api/v1/jobs/{}/result", job["id"].as_str().unwrap())).await.text().await.unwrap();
    assert_same_predictions(&csv, &std::fs::read_to_string(fixture("diabetes_linreg.expected.csv")).unwrap());

    // A python3 script: its output comes back, and so does what it printed.
    let manifest = "entry = \"python3 double.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 30\n";
    let app = json(user.upload("doubler", "doubler.zip", bundle(manifest, &[("double.py", DOUBLER)]), None).await, 201).await;
    assert_eq!(app["kind"], "script");
    assert_eq!(app["details"]["runtime"], "python3");
    let job = json(user.submit("doubler", Some(b"x\n1.5\n-2\n".to_vec())).await, 201).await;
    let done = user.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let out = user.get(&format!("/api/v1/jobs/{}/result", job["id"].as_str().unwrap())).await.text().await.unwrap();
    assert_eq!(out, "row,double\n0,3.0\n1,-4.0\n");
    let log = user.get(&format!("/api/v1/jobs/{}/log", job["id"].as_str().unwrap())).await.text().await.unwrap();
    assert!(log.contains("doubled 2 rows"), "{log}");

    // Attack: a script that makes its output a link to a file of the machine (the agent's state
    // file with its node key, in the real attack; /etc/passwd here) gets no result back.
    let thief = "entry = \"python3 t.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 30\n";
    let steal = "import os\nos.symlink('/etc/passwd', os.environ['AIEDGE_OUTPUT'])\n";
    json(user.upload("thief", "t.zip", bundle(thief, &[("t.py", steal)]), None).await, 201).await;
    let job = json(user.submit("thief", Some(b"x\n1\n".to_vec())).await, 201).await;
    let done = user.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("is a link"), "{done}");
    assert_eq!(done["attempt"], 1, "the script's own doing: not tried on another node");
    let res = user.get(&format!("/api/v1/jobs/{}/result", job["id"].as_str().unwrap())).await;
    assert_eq!(res.status(), 409, "no result exists");

    // Over the time limit: killed, and the job says why.
    let sleeper = "entry = \"python3 s.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 1\n";
    json(user.upload("sleeper", "s.zip", bundle(sleeper, &[("s.py", "import time\ntime.sleep(60)\n")]), None).await, 201).await;
    // Over the memory limit: killed (or a MemoryError), and the job says why.
    let hog = "entry = \"python3 h.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 30\nmemory_mb = 64\n";
    json(user.upload("hog", "h.zip", bundle(hog, &[("h.py", "x = bytearray(2 * 1024 * 1024 * 1024)\n")]), None).await, 201).await;
    let slow = json(user.submit("sleeper", Some(b"x\n1\n".to_vec())).await, 201).await;
    let fat = json(user.submit("hog", Some(b"x\n1\n".to_vec())).await, 201).await;
    let slow = user.wait_job(slow["id"].as_str().unwrap()).await;
    assert_eq!(slow["status"], "failed");
    assert!(slow["error"].as_str().unwrap().contains("time limit"), "{slow}");
    let fat = user.wait_job(fat["id"].as_str().unwrap()).await;
    assert_eq!(fat["status"], "failed");
    assert!(fat["error"].as_str().unwrap().contains("memory"), "{fat}");

    // Cancel: a queued job (no free slot for the script, as the sleeper takes long) ends cancelled.
    json(
        user.upload("sleeper2", "s2.zip", bundle(&sleeper.replace("= 1\n", "= 30\n"), &[("s.py", "import time\ntime.sleep(60)\n")]), None)
            .await,
        201,
    )
    .await;
    let long = json(user.submit("sleeper2", Some(b"x\n1\n".to_vec())).await, 201).await;
    let id = long["id"].as_str().unwrap();
    let start = Instant::now();
    while user.get(&format!("/api/v1/jobs/{id}")).await.json::<Value>().await.unwrap()["status"] != "running" {
        assert!(start.elapsed() < Duration::from_secs(20), "never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled =
        json(user.http.post(user.url(&format!("/api/v1/jobs/{id}/cancel"))).bearer_auth(&user.token).send().await.unwrap(), 200).await;
    assert_eq!(cancelled["status"], "cancelled");
    // The agent hears it on its next progress report and frees the slot: the next job runs.
    let next = json(user.submit("iris", None).await, 201).await;
    assert_eq!(user.wait_job(next["id"].as_str().unwrap()).await["status"], "succeeded");
    let again =
        json(user.http.post(user.url(&format!("/api/v1/jobs/{id}/cancel"))).bearer_auth(&user.token).send().await.unwrap(), 409).await;
    assert_eq!(again["error"]["code"], "already_finished");

    server.stop().await;
}

async fn bad_uploads_are_refused_and_change_nothing(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "careless@example.org").await;
    let model = std::fs::read(fixture("iris_logreg.onnx")).unwrap();
    // (what, file name, file, default input, error code, message fragment)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<Vec<u8>>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("truncated", "t.onnx", std::fs::read(fixture("bad_truncated.onnx")).unwrap(), None, "invalid_model", ""),
        ("unknown op", "u.onnx", std::fs::read(fixture("bad_op.onnx")).unwrap(), None, "invalid_model", "Frobnicate"),
        // 187 bytes that ask tract for 28.8 GB while loading: refused by the checker's limit,
        // the server untouched.
        (
            "memory bomb",
            "b.onnx",
            std::fs::read(fixture("bad_memory_bomb.onnx")).unwrap(),
            None,
            "invalid_model",
            "needs more than 1024 MiB",
        ),
        ("empty", "e.onnx", Vec::new(), None, "empty_file", ""),
        ("wrong columns", "m.onnx", model.clone(), Some(b"a,b,c\n1,2,3\n".to_vec()), "invalid_csv", "3"),
        ("not numbers", "m.onnx", model.clone(), Some(b"a,b,c,d\n1,2,x,4\n".to_vec()), "invalid_csv", "not a number"),
        ("empty csv", "m.onnx", model.clone(), Some(b"a,b,c,d\n".to_vec()), "invalid_csv", "no rows"),
        (
            "evil path",
            "b.zip",
            bundle("entry = \"python3 a.py\"\nruntime = \"python3\"\noutput = \"o.csv\"\n", &[("../evil", "x")]),
            None,
            "invalid_bundle",
            "../evil",
        ),
        (
            "unknown runtime",
            "b.zip",
            bundle("entry = \"ruby a.rb\"\nruntime = \"ruby\"\noutput = \"o.csv\"\n", &[("a.rb", "")]),
            None,
            "invalid_bundle",
            "ruby",
        ),
        (
            "no manifest",
            "b.zip",
            {
                let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                z.start_file("a.py", zip::write::SimpleFileOptions::default()).unwrap();
                z.finish().unwrap().into_inner()
            },
            None,
            "invalid_bundle",
            "aiedge.toml",
        ),
        (
            "zip bomb",
            "b.zip",
            {
                let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
                z.start_file("aiedge.toml", opts).unwrap();
                z.write_all(b"entry = \"python3 a.py\"\nruntime = \"python3\"\noutput = \"o.csv\"\n").unwrap();
                z.start_file("zeros", opts).unwrap();
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..300 {
                    z.write_all(&chunk).unwrap();
                }
                z.finish().unwrap().into_inner()
            },
            None,
            "invalid_bundle",
            "size",
        ),
    ];
    for (what, filename, bytes, input, code, mention) in cases {
        let res = user.upload(what, filename, bytes, input).await;
        let body = json(res, 422).await;
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(mention), "{what}: {body}");
    }
    // Nothing was recorded, nothing was left on disk.
    assert_eq!(json(user.get("/api/v1/applications").await, 200).await, serde_json::json!([]));
    let staging = server.data_dir.path().join("staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let artifacts = server.data_dir.path().join("artifacts");
    assert!(!artifacts.join("apps").exists() || std::fs::read_dir(artifacts.join("apps")).unwrap().count() == 0);

    // A job's input is checked against the model too.
    json(user.upload("iris", "m.onnx", model, None).await, 201).await;
    let res = json(user.submit("iris", Some(b"a,b\n1,2\n".to_vec())).await, 422).await;
    assert_eq!(res["error"]["code"], "invalid_csv");
    let res = json(user.submit("iris", None).await, 422).await;
    assert_eq!(res["error"]["code"], "missing_input");
    let res = json(user.submit("no-such-app", None).await, 404).await;
    assert_eq!(res["error"]["code"], "not_found");
    // A text field is refused once it is too long; a pool that is no pool. (64 KiB, not more:
    // the server answers before it has read the body, and a client still sending megabytes
    // may see the connection closed instead of the answer.)
    let form = reqwest::multipart::Form::new().text("application", "x".repeat(64 << 10));
    let res = json(user.post_form("/api/v1/jobs", form).await, 422).await;
    assert_eq!(res["error"]["code"], "bad_field");
    let form = reqwest::multipart::Form::new().text("application", "iris").text("pool", "everyone's");
    let res = json(user.post_form("/api/v1/jobs", form).await, 422).await;
    assert_eq!(res["error"]["code"], "bad_pool");
    assert_eq!(json(user.get("/api/v1/jobs").await, 200).await, serde_json::json!([]));
    server.stop().await;
}

async fn only_owners_and_their_nodes_get_at_jobs(db: DbKind) {
    let server = TestServer::start(db).await;
    let mut alice = User::new(&server, "alice@example.org").await;
    let mallory = User::new(&server, "mallory@example.org").await;
    let (a_node, a_token) = alice.add_node("alice-box").await;
    let (m_node, m_token) = mallory.add_node("mallory-box").await;
    let a_agent = Agent::start(&server, &a_token, "alice-box", &[]);
    let m_agent = Agent::start(&server, &m_token, "mallory-box", &[]);
    alice.wait_node_active(&a_node).await;
    mallory.wait_node_active(&m_node).await;

    json(
        alice
            .upload(
                "iris",
                "iris.onnx",
                std::fs::read(fixture("iris_logreg.onnx")).unwrap(),
                Some(std::fs::read(fixture("iris.csv")).unwrap()),
            )
            .await,
        201,
    )
    .await;
    let job = json(alice.submit("iris", None).await, 201).await;
    let id = job["id"].as_str().unwrap();
    let done = alice.wait_job(id).await;
    assert_eq!(done["status"], "succeeded");
    // Mallory's node is private to her (as every node is until its owner shares it): Alice's
    // job ran on Alice's node, whatever Mallory's claims.
    let ran_on = done["node_id"].as_str().unwrap().to_string();
    assert_eq!(ran_on, a_node, "{done}");
    let (other_node, other_key) = if ran_on == a_node { (m_node.clone(), m_agent.key()) } else { (a_node.clone(), a_agent.key()) };

    // Mallory sees nothing of it.
    for path in [format!("/api/v1/jobs/{id}"), format!("/api/v1/jobs/{id}/result"), format!("/api/v1/jobs/{id}/log")] {
        assert_eq!(mallory.get(&path).await.status(), 404, "{path}");
    }
    let res = mallory.http.post(mallory.url(&format!("/api/v1/jobs/{id}/cancel"))).bearer_auth(&mallory.token).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(json(mallory.get("/api/v1/jobs").await, 200).await, serde_json::json!([]));
    assert_eq!(mallory.web.get(&format!("/live/jobs?job={id}")).await.status(), 404);
    // Not with the web session either: the job page answers as for a missing job.
    let page = mallory.web.get(&format!("/jobs/{id}")).await.text().await.unwrap();
    assert!(!page.contains("iris"), "job page leaked");

    // The other node cannot fetch the job's files, even correctly signed with its own key;
    // unsigned or badly signed requests are refused outright.
    let signed = |node: &str, key: &str, path: &str| {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let sig = shared::jobs::request_signature(key, "GET", path, time, shared::jobs::EMPTY_SHA256);
        reqwest::Client::new()
            .get(server.url(path))
            .header(shared::jobs::HDR_NODE, node)
            .header(shared::jobs::HDR_TIME, time.to_string())
            .header(shared::jobs::HDR_REQUEST_SIGNATURE, sig)
    };
    let attempt = done["attempt"].as_u64().unwrap();
    for what in ["application", "input"] {
        let path = format!("/agent/v1/jobs/{id}/{what}?attempt={attempt}");
        assert_eq!(signed(&other_node, &other_key, &path).send().await.unwrap().status(), 409, "{what}");
        assert_eq!(signed(&ran_on, &other_key, &path).send().await.unwrap().status(), 401, "{what}");
        assert_eq!(reqwest::get(server.url(&path)).await.unwrap().status(), 401);
    }

    // A revoked API token stops working at once.
    let tokens: Value = alice.web.http.get(alice.web.url("/api/tokens/mine")).send().await.unwrap().json().await.unwrap();
    let token_id = tokens[0]["id"].as_str().unwrap();
    assert_eq!(alice.get("/api/v1/applications").await.status(), 200);
    assert_eq!(alice.web.call("/api/tokens/revoke", &[("id", token_id)]).await.status(), 200);
    let res = json(alice.get("/api/v1/applications").await, 401).await;
    assert_eq!(res["error"]["code"], "unauthorized");
    // An admin can mint a token from the CLI for automation; it works like one made in the app.
    let state = server::build_state(&server.config).await.unwrap();
    let printed = server::admin_cli::create_token(&state, "alice@example.org", "ci").await.unwrap();
    let minted = printed.lines().last().unwrap();
    let res = alice.http.get(alice.url("/api/v1/jobs")).bearer_auth(minted).send().await.unwrap();
    assert_eq!(json(res, 200).await.as_array().unwrap().len(), 1);
    assert!(server::admin_cli::create_token(&state, "nobody@example.org", "ci").await.is_err());
    // Mallory cannot revoke Alice's tokens.
    assert_eq!(mallory.web.call("/api/tokens/revoke", &[("id", token_id)]).await.status(), 404);

    alice.token = minted.to_string();
    pools_are_private_until_shared(&alice, a_agent, &a_node, &mallory, &m_node).await;
    server.stop().await;
}

/// With Alice's node gone, her jobs wait rather than run on Mallory's private node; once Mallory
/// shares it with her by name, they run there, and Alice sees it only as "a shared node". A job
/// Alice keeps to her own nodes never goes there. Nobody else changes another's sharing.
async fn pools_are_private_until_shared(alice: &User, mut a_agent: Agent, a_node: &str, mallory: &User, m_node: &str) {
    a_agent.kill();
    alice.wait_node_status(a_node, "dead", Duration::from_secs(30)).await;
    let waiting = json(alice.submit("iris", None).await, 201).await;
    let waiting = waiting["id"].as_str().unwrap();
    // Dispatch rounds run at least once a second; several have passed with a node idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = alice.job(waiting).await;
    assert_eq!(job["status"], "queued", "{job}");

    // Only the owner (or an admin) decides; anyone else is told the node does not exist.
    async fn share(who: &User, node: &str, sharing: &str, users: &str) -> reqwest::Response {
        who.web.call("/api/nodes/share", &[("id", node), ("sharing", sharing), ("users", users)]).await
    }
    assert_eq!(share(alice, m_node, "everyone", "").await.status(), 404);
    let res = share(mallory, m_node, "users", "nobody@example.org").await;
    assert_eq!(res.status(), 422, "an unknown account is refused");
    assert_eq!(mallory.node(m_node).await["sharing"], "private", "and nothing changed");

    // Kept to Alice's own nodes, a job never leaves them.
    let form = reqwest::multipart::Form::new().text("application", "iris").text("pool", "own");
    let own_only = json(alice.post_form("/api/v1/jobs", form).await, 201).await;
    assert_eq!(own_only["pool"], "own");
    let own_only = own_only["id"].as_str().unwrap();

    assert_eq!(share(mallory, m_node, "users", "Alice@Example.org").await.status(), 200);
    assert_eq!(mallory.node(m_node).await["sharing"], "users");
    let done = alice.wait_job(waiting).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["node_id"], m_node);
    assert_eq!(done["node_name"], "a shared node", "another owner's node is not named");
    let detail: Value = alice.web.get(&format!("/api/jobs/detail?id={waiting}")).await.json().await.unwrap();
    assert!(!detail.to_string().contains("mallory-box"), "the job's page names no other owner's node: {detail}");
    let job = alice.job(own_only).await;
    assert_eq!(job["status"], "queued", "kept to her own nodes: {job}");
    assert_eq!(
        alice.http.post(alice.url(&format!("/api/v1/jobs/{own_only}/cancel"))).bearer_auth(&alice.token).send().await.unwrap().status(),
        200
    );
}

async fn the_balancer_picks_spreads_and_respects_constraints(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "fleet@example.org").await;
    let (fast, fast_token) = user.add_node("fast").await;
    let (slow, slow_token) = user.add_node("slow").await;
    // Pinned benchmark results make the scores differ by far more than load noise can.
    let _fast = Agent::start(&server, &fast_token, "fast", &["--max-jobs", "8", "--fixed-events-per-sec", "90000", "--no-scripts"]);
    let _slow = Agent::start(&server, &slow_token, "slow", &["--max-jobs", "8", "--fixed-events-per-sec", "2000"]);
    user.wait_node_active(&fast).await;
    user.wait_node_active(&slow).await;
    json(
        user.upload(
            "iris",
            "iris.onnx",
            std::fs::read(fixture("iris_logreg.onnx")).unwrap(),
            Some(std::fs::read(fixture("iris.csv")).unwrap()),
        )
        .await,
        201,
    )
    .await;

    // One job: the better node, and the decision lists both with their scores.
    let job = json(user.submit("iris", None).await, 201).await;
    let done = user.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["node_id"], fast.as_str(), "{done}");
    let detail: Value = user
        .web
        .http
        .get(user.web.url(&format!("/api/jobs/detail?id={}", job["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let candidates = detail["decision"]["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "{detail}");
    assert_eq!(detail["decision"]["chosen"], fast.as_str());

    // A burst spreads over both nodes: jobs in flight count against a node, and a node takes no
    // more than its slots. To make it one burst whatever the machine's speed, the jobs wait in
    // the queue while no node may take them, then both nodes open in one statement.
    let state = server::build_state(&server.config).await.unwrap();
    let set_both = |to: &'static str| {
        let (db, fast, slow) = (state.db.clone(), fast.clone(), slow.clone());
        async move {
            sqlx::query("update nodes set admin_state = $1 where id in ($2, $3)")
                .bind(to)
                .bind(&fast)
                .bind(&slow)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    };
    set_both("disabled").await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(json(user.submit("iris", None).await, 201).await["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &ids {
        assert_eq!(user.get(&format!("/api/v1/jobs/{id}")).await.json::<Value>().await.unwrap()["status"], "queued");
    }
    set_both("enabled").await;
    let mut on = std::collections::HashMap::<String, usize>::new();
    for id in &ids {
        let j = user.wait_job(id).await;
        assert_eq!(j["status"], "succeeded");
        *on.entry(j["node_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    // The fast node has 8 slots: at most 8 of the 12 fit, the rest go to the slow node.
    assert!(on.get(&fast).copied().unwrap_or(0) <= 8 && on.get(&slow).copied().unwrap_or(0) >= 4, "{on:?}");

    // A script job never goes to the node that refuses scripts, however good its score.
    let manifest = "entry = \"python3 double.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\n";
    json(user.upload("doubler", "d.zip", bundle(manifest, &[("double.py", DOUBLER)]), None).await, 201).await;
    for _ in 0..3 {
        let job = json(user.submit("doubler", Some(b"x\n1\n".to_vec())).await, 201).await;
        let j = user.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!((j["status"].as_str(), j["node_id"].as_str()), (Some("succeeded"), Some(slow.as_str())), "{j}");
    }

    // A disabled node gets nothing; with the other one disabled too, jobs wait in the queue.
    let admin_state = |id: &str, state: &str| {
        let (id, state) = (id.to_string(), state.to_string());
        let cfg = server.config.clone();
        async move {
            let st = server::build_state(&cfg).await.unwrap();
            aiedge_store::nodes::set_admin_state(&st.db, &id, state.parse().unwrap()).await.unwrap();
        }
    };
    admin_state(&fast, "disabled").await;
    let job = json(user.submit("iris", None).await, 201).await;
    assert_eq!(user.wait_job(job["id"].as_str().unwrap()).await["node_id"], slow.as_str());
    admin_state(&slow, "disabled").await;
    let waiting = json(user.submit("iris", None).await, 201).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still: Value = user.get(&format!("/api/v1/jobs/{}", waiting["id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(still["status"], "queued", "{still}");
    // As soon as a node is eligible again the job goes out.
    admin_state(&slow, "enabled").await;
    let j = user.wait_job(waiting["id"].as_str().unwrap()).await;
    assert_eq!((j["status"].as_str(), j["node_id"].as_str()), (Some("succeeded"), Some(slow.as_str())));
    server.stop().await;
}

/// The first `n` data rows of a CSV, with its header.
fn head_rows(csv: &str, n: usize) -> String {
    csv.lines().take(n + 1).map(|l| format!("{l}\n")).collect()
}

/// A finish report for `job`'s attempt, signed as `node` with `key`, the way an agent sends it.
async fn signed_finish(server: &TestServer, node: &str, key: &str, job: &str, report: &Value) -> reqwest::Response {
    use sha2::Digest;
    let path = format!("{}/{job}/finish", shared::jobs::JOBS_PATH);
    let body = serde_json::to_vec(report).unwrap();
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let sha = hex::encode(sha2::Sha256::digest(&body));
    let sig = shared::jobs::request_signature(key, "POST", &path, time, &sha);
    reqwest::Client::new()
        .post(server.url(&path))
        .header(shared::jobs::HDR_NODE, node)
        .header(shared::jobs::HDR_TIME, time.to_string())
        .header(shared::jobs::HDR_REQUEST_SIGNATURE, sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Small inputs and results live in the database and ride in the job message and the finish
/// report; an agent with the model loaded reports such a job only once, when it is done. Large
/// ones still go through files. `?wait=` answers when the job ends, or when the wait is up.
async fn small_jobs_take_the_short_way(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "quick@example.org").await;
    let (node_id, token) = user.add_node("box-q").await;
    let agent = Agent::start(&server, &token, "box-q", &[]);
    user.wait_node_active(&node_id).await;
    let iris = std::fs::read_to_string(fixture("iris.csv")).unwrap();
    let expected = std::fs::read_to_string(fixture("iris_logreg.expected.csv")).unwrap();
    json(user.upload("iris", "iris.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    let state = server::build_state(&server.config).await.unwrap();
    let events = |id: String| {
        let pool = state.db.pool.clone();
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as("select status, at from job_events where job_id = $1 order by at, id")
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
            rows
        }
    };

    // The first job loads the model (started, then run); the second finds it loaded and is
    // reported once, when done. Both look the same from outside: a full timeline and the result.
    for n in [3, 5] {
        let job = json(user.submit("iris", Some(head_rows(&iris, n).into_bytes())).await, 201).await;
        let id = job["id"].as_str().unwrap();
        let done = json(user.get(&format!("/api/v1/jobs/{id}?wait=30")).await, 200).await;
        assert_eq!(done["status"], "succeeded", "the wait ended before the job: {done}");
        assert_eq!(done["result_rows"], n);
        let csv = user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap();
        assert_same_predictions(&csv, &head_rows(&expected, n));
        let timeline = events(id.to_string()).await;
        let statuses: Vec<&str> = timeline.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(statuses, ["queued", "dispatched", "running", "succeeded"], "{timeline:?}");
        assert!(timeline.windows(2).all(|w| w[0].1 <= w[1].1), "{timeline:?}");
        assert!(done["started_at_ms"].as_i64().unwrap() >= done["dispatched_at_ms"].as_i64().unwrap() - 5, "{done}");
    }
    // Nothing of them touched the disk: inputs and results are in the database.
    let artifacts = server.data_dir.path().join("artifacts");
    for dir in ["inputs", "jobs"] {
        let entries = std::fs::read_dir(artifacts.join(dir)).map(|d| d.count()).unwrap_or(0);
        assert_eq!(entries, 0, "{dir}");
    }
    let (inline,): (i64,) = sqlx::query_as("select count(*) from inline_artifacts").fetch_one(&state.db.pool).await.unwrap();
    assert_eq!(inline, 4);

    // An input over 64 KiB is a file, and so is its result; the job runs the same.
    let body: String = iris.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let big = format!("{}\n{}", iris.lines().next().unwrap(), body.repeat(30));
    assert!(big.len() > shared::jobs::INLINE_MAX);
    let job = json(user.submit("iris", Some(big.into_bytes())).await, 201).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = json(user.get(&format!("/api/v1/jobs/{id}?wait=30")).await, 200).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result_rows"], 4500);
    let csv = user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap();
    assert_eq!(csv.lines().count(), 4501);
    assert_eq!(std::fs::read_dir(artifacts.join("inputs")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(artifacts.join("jobs")).unwrap().count(), 1);

    // With the agent paused, a job waits in the node's queue: `?wait=` answers when the wait is
    // up, with the job as it is.
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let job = json(user.submit("iris", Some(head_rows(&iris, 2).into_bytes())).await, 201).await;
    let id = job["id"].as_str().unwrap().to_string();
    let waited = json(user.get(&format!("/api/v1/jobs/{id}?wait=0.5")).await, 200).await;
    assert!(["queued", "dispatched"].contains(&waited["status"].as_str().unwrap()), "{waited}");
    let dispatched = user.wait_job_until(&id, Duration::from_secs(5), |j| j["status"] == "dispatched").await;
    let attempt = dispatched["attempt"].as_u64().unwrap();
    let key = agent.key();
    let report = |attempt: u64, result: String| serde_json::json!({"attempt": attempt, "outcome": "succeeded", "rows": 1, "result_csv": result, "ran_ms": 3, "instance": "test"});

    // Fencing holds for a report that skips `start`: another attempt's, or a result over the
    // inline limit, changes nothing.
    let res = json(signed_finish(&server, &node_id, &key, &id, &report(attempt + 1, "row,label\n0,1\n".into())).await, 200).await;
    assert_eq!(res["proceed"], false, "{res}");
    let res = signed_finish(&server, &node_id, &key, &id, &report(attempt, "x".repeat(shared::jobs::INLINE_MAX + 1))).await;
    assert_eq!(res.status(), 413);
    // A body far over any report's size: from a node that does not exist it is refused as
    // unauthorized before it is read (reading it first would answer 413); from a real node
    // whose signature cannot be checked without it, as too large.
    // Over the report cap (2 × 64 KiB + 16 KiB), and small enough for loopback's socket buffers,
    // so the client has sent it all when the answer comes.
    let big = vec![b'x'; 256 << 10];
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis().to_string();
    let path = format!("{}/{id}/finish", shared::jobs::JOBS_PATH);
    for (who, status) in [("no-such-node", 401), (node_id.as_str(), 413)] {
        let res = reqwest::Client::new()
            .post(server.url(&path))
            .header(shared::jobs::HDR_NODE, who)
            .header(shared::jobs::HDR_TIME, &time)
            .header(shared::jobs::HDR_REQUEST_SIGNATURE, "0".repeat(64))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{who}");
    }
    assert_eq!(user.job(&id).await["status"], "dispatched");
    // The live attempt's report: started and finished in one step, and the same report again
    // (its answer lost) is accepted without storing anything twice.
    for _ in 0..2 {
        let res = json(signed_finish(&server, &node_id, &key, &id, &report(attempt, "row,label\n0,1\n".into())).await, 200).await;
        assert_eq!(res["proceed"], true, "{res}");
    }
    let done = user.job(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let statuses: Vec<String> = events(id.clone()).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses, ["queued", "dispatched", "running", "succeeded"]);
    assert_eq!(user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap(), "row,label\n0,1\n");
    let (inline,): (i64,) = sqlx::query_as("select count(*) from inline_artifacts").fetch_one(&state.db.pool).await.unwrap();
    assert_eq!(inline, 6);

    // Resumed, the agent runs the queued message, is told the job is already done, and goes on
    // with new work.
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    let next = json(user.submit("iris", Some(head_rows(&iris, 1).into_bytes())).await, 201).await;
    let next = json(user.get(&format!("/api/v1/jobs/{}?wait=30", next["id"].as_str().unwrap())).await, 200).await;
    assert_eq!(next["status"], "succeeded", "{next}");
    assert_eq!(user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap(), "row,label\n0,1\n");
    // A wait for a finished job answers at once; a bad wait is a clear error.
    assert_eq!(json(user.get(&format!("/api/v1/jobs/{id}?wait=30")).await, 200).await["status"], "succeeded");
    assert_eq!(json(user.get(&format!("/api/v1/jobs/{id}?wait=-1")).await, 400).await["error"]["code"], "bad_wait");
    server.stop().await;
}

/// Submissions are recorded in groups (`jobs::Intake`, one multi-row insert per table): in a
/// burst each job keeps its own input and its own first timeline event, and a submission that
/// cannot be recorded fails alone while the rest of its group is recorded.
async fn a_burst_of_submissions_is_recorded_whole(db: DbKind) {
    use aiedge_store::{jobs, Db};

    let server = TestServer::start(db).await;
    let user = User::new(&server, "burst@example.org").await;
    json(user.upload("iris", "iris.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    // No node: every job stays queued. Each input is different, so a mix-up would show.
    let inputs: Vec<String> = (0..48).map(|i| format!("a,b,c,d\n5.1,3.5,1.4,{i}\n")).collect();
    let answers = futures_util::future::join_all(inputs.iter().map(|csv| user.submit("iris", Some(csv.clone().into_bytes())))).await;
    let mut submitted = std::collections::HashMap::new();
    for (res, csv) in answers.into_iter().zip(&inputs) {
        let job = json(res, 201).await;
        assert_eq!((job["status"].as_str(), job["input_rows"].as_u64()), (Some("queued"), Some(1)), "{job}");
        submitted.insert(job["id"].as_str().unwrap().to_string(), csv.clone());
    }
    let db = Db::connect(&server.config.database_url()).await.unwrap();
    let recorded: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "select j.id, j.status, i.content, (select count(*) from job_events e where e.job_id = j.id and e.status = 'queued') from jobs j
         left join inline_artifacts i on i.key = j.input_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(recorded.len(), submitted.len());
    for (id, status, content, queued_events) in &recorded {
        assert_eq!((status.as_str(), content.as_ref(), *queued_events), ("queued", submitted.get(id), 1), "job {id}");
    }

    // One bad submission (its owner does not exist) in a group of good ones. The group forms
    // while this intake's writer connection is held (on SQLite; PostgreSQL's writers do not
    // queue, so there the group may not form, and the outcome must be the same).
    let intake = jobs::Intake::start(&db);
    let owner = aiedge_store::users::find_by_email(&db, "burst@example.org").await.unwrap().unwrap();
    let iris = aiedge_store::apps::find(&db, &owner.id, "iris").await.unwrap().unwrap().view;
    let held = db.writer.acquire().await.unwrap();
    let tries: Vec<_> = (0..10)
        .map(|i| {
            let (intake, mut owner, iris) = (intake.clone(), owner.clone(), iris.clone());
            if i == 5 {
                owner.id = "nobody".into();
            }
            tokio::spawn(async move {
                let key = format!("inline:inputs/direct-{i}.csv");
                let new = jobs::NewJob {
                    owner: &owner,
                    app: &iris,
                    input_key: &key,
                    input_name: "direct.csv",
                    input_rows: Some(1),
                    max_attempts: 1,
                    pool: aiedge_core::Pool::Shared,
                    inline_input: Some("a,b,c,d\n1,2,3,4\n"),
                };
                jobs::create(&intake, new).await.map(|job| job.id)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    for (i, done) in futures_util::future::join_all(tries).await.into_iter().enumerate() {
        let done = done.unwrap();
        assert_eq!(done.is_err(), i == 5, "submission {i}: {done:?}");
    }
    let (jobs_now, inputs_now, events_now): (i64, i64, i64) =
        sqlx::query_as("select (select count(*) from jobs), (select count(*) from inline_artifacts), (select count(*) from job_events)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((jobs_now, inputs_now, events_now), (48 + 9, 48 + 9, 48 + 9));
    server.stop().await;
}

/// Successes that carry their results are recorded in groups (`jobs::Finishes`): each report
/// keeps its own fencing inside the group (a wrong attempt is refused, the same report twice is
/// accepted and stored once), and a report that cannot be written fails alone while the rest
/// of its group is recorded.
async fn finish_reports_are_recorded_in_groups(db: DbKind) {
    use aiedge_core::Verdict;
    use aiedge_store::jobs::{self, InlineSuccess};

    let server = TestServer::start(db).await;
    let user = User::new(&server, "finishes@example.org").await;
    let (node_id, token) = user.add_node("box-f").await;
    let agent = Agent::start(&server, &token, "box-f", &["--max-jobs", "4", "--queue-ahead", "0"]);
    user.wait_node_active(&node_id).await;
    json(user.upload("iris", "iris.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    // The agent paused: four jobs wait dispatched to its node, and this test reports for it.
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut jobs_ = Vec::new();
    for i in 0..4 {
        let job = json(user.submit("iris", Some(format!("a,b,c,d\n5.1,3.5,1.4,{i}\n").into_bytes())).await, 201).await;
        let id = job["id"].as_str().unwrap().to_string();
        let job = user.wait_job_until(&id, Duration::from_secs(10), |j| j["status"] == "dispatched").await;
        jobs_.push((id, job["attempt"].as_i64().unwrap() as i32));
    }
    let state = server::build_state(&server.config).await.unwrap();
    // The last job's result key is taken already: its insert fails, and with it its group.
    let (stuck, stuck_attempt) = jobs_[3].clone();
    sqlx::query("insert into inline_artifacts (key, content, created_at) values ($1, 'x', 0)")
        .bind(format!("inline:jobs/{stuck}/attempt-{stuck_attempt}/result.csv"))
        .execute(&state.db.pool)
        .await
        .unwrap();
    let success = |(id, attempt): &(String, i32), result: &str| InlineSuccess {
        id: id.clone(),
        node_id: node_id.clone(),
        attempt: *attempt,
        rows: 1,
        result: result.to_string(),
        unstarted: Some(jobs::Unstarted { instance: Some("test".into()), ran_ms: 2 }),
    };
    let reports = vec![
        success(&jobs_[0], "row,label\n0,a\n"),
        success(&jobs_[0], "row,label\n0,a\n"),
        success(&(jobs_[1].0.clone(), jobs_[1].1 + 1), "row,label\n0,wrong\n"),
        success(&jobs_[1], "row,label\n0,b\n"),
        success(&jobs_[2], "row,label\n0,c\n"),
        success(&jobs_[3], "row,label\n0,d\n"),
    ];
    // The group forms while the writer connection of these finishes is held (on SQLite;
    // PostgreSQL's writers do not queue, and the outcome must be the same).
    let finishes = jobs::Finishes::start(&state.db);
    let held = state.db.writer.acquire().await.unwrap();
    let tries: Vec<_> = reports
        .into_iter()
        .map(|r| {
            let finishes = finishes.clone();
            tokio::spawn(async move { finishes.write(r).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let verdicts: Vec<_> = futures_util::future::join_all(tries).await.into_iter().map(|t| t.unwrap()).collect();
    assert!(matches!(verdicts[0], Ok(Verdict::Proceed)) && matches!(verdicts[1], Ok(Verdict::Proceed)), "{verdicts:?}");
    assert!(matches!(&verdicts[2], Ok(Verdict::Stop(why)) if why.contains("another attempt")), "{verdicts:?}");
    assert!(matches!(verdicts[3], Ok(Verdict::Proceed)) && matches!(verdicts[4], Ok(Verdict::Proceed)), "{verdicts:?}");
    assert!(verdicts[5].is_err(), "{verdicts:?}");

    for ((id, _), result) in jobs_.iter().zip(["row,label\n0,a\n", "row,label\n0,b\n", "row,label\n0,c\n"]) {
        let job = user.job(id).await;
        assert_eq!((job["status"].as_str(), job["result_rows"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
        assert_eq!(user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap(), result);
        let statuses: Vec<(String,)> = sqlx::query_as("select status from job_events where job_id = $1 order by at, id")
            .bind(id)
            .fetch_all(&state.db.pool)
            .await
            .unwrap();
        let statuses: Vec<&str> = statuses.iter().map(|(s,)| s.as_str()).collect();
        assert_eq!(statuses, ["queued", "dispatched", "running", "succeeded"], "{id}");
    }
    // The one that could not be written changed nothing.
    assert_eq!(user.job(&stuck).await["status"], "dispatched");
    let (results,): (i64,) =
        sqlx::query_as("select count(*) from inline_artifacts where key like 'inline:jobs/%'").fetch_one(&state.db.pool).await.unwrap();
    assert_eq!(results, 3 + 1, "three results and the key taken beforehand");
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    server.stop().await;
}

/// A job no node can take says why on its API answer and its page, counted per reason; once a
/// node that can take it comes, it runs (a bundle for `sh`, which every agent now offers).
async fn a_waiting_job_says_why_and_sh_bundles_run(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "patient@example.org").await;
    let (refusing_id, token) = user.add_node("no-scripts").await;
    let _refusing = Agent::start(&server, &token, "no-scripts", &["--no-scripts"]);
    user.wait_node_active(&refusing_id).await;
    let manifest = "entry = \"sh run.sh\"\nruntime = \"sh\"\noutput = \"o.csv\"\n";
    let script = "n=$(($(wc -l < \"$AIEDGE_INPUT\") - 1)); printf 'row,lines\\n0,%s\\n' \"$n\" > \"$AIEDGE_OUTPUT\"\n";
    json(user.upload("shell", "shell.zip", bundle(manifest, &[("run.sh", script)]), None).await, 201).await;
    let job = json(user.submit("shell", Some(b"a\n1\n2\n".to_vec())).await, 201).await;
    let id = job["id"].as_str().unwrap().to_string();

    let waiting = user.wait_job_until(&id, Duration::from_secs(20), |j| j["waiting"].is_string()).await;
    assert_eq!(waiting["status"], "queued");
    assert_eq!(waiting["waiting"], "1 node: the node does not run script jobs", "{waiting}");
    // The job's page says it too, before any script runs in the browser.
    let page = user.web.http.get(user.web.url(&format!("/jobs/{id}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("the node does not run script jobs"), "{page}");

    // A node that runs scripts: the job goes, and no longer waits.
    let (runner_id, token) = user.add_node("scripts").await;
    let _runner = Agent::start(&server, &token, "scripts", &[]);
    let done = user.wait_job(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["node_id"], runner_id.as_str());
    assert!(done.get("waiting").is_none(), "{done}");
    let result = user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap();
    assert_eq!(result, "row,lines\n0,2\n");
    server.stop().await;
}
