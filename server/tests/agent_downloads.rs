//! The agent downloads and the nodes API, against a real server: the manifest and checksums
//! describe exactly the files on offer, a download is those bytes, the installer carries this
//! server's address and parses as POSIX sh, and the install line `POST /api/v1/nodes` gives
//! holds a token that enrols a real agent. The installer itself runs for real in
//! `scripts/edge_test.sh` (it needs root and the cross-built agents).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::Command;

use common::{DbKind, TestServer};
use serde_json::{json, Value};
use sha2::Digest;

const ARM64: &str = "aarch64-unknown-linux-musl";

#[tokio::test]
async fn downloads_match_their_manifest_and_the_installer_knows_its_server() {
    let agents = tempfile::tempdir().unwrap();
    let binary = b"\x7fELF pretend aarch64 agent".repeat(1000);
    std::fs::write(agents.path().join(format!("node-agent-{ARM64}")), &binary).unwrap();
    std::fs::write(agents.path().join("node-agent-sparc-sun-solaris"), b"not a target we know").unwrap();
    std::fs::write(agents.path().join("VERSION"), "0.0.1\n").unwrap();
    let dir = agents.path().to_path_buf();
    let server = TestServer::start_with(DbKind::Sqlite, move |c| c.agents_dir = dir).await;
    let http = reqwest::Client::new();

    let manifest: Value = http.get(server.url("/agent/v1/manifest")).send().await.unwrap().json().await.unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&binary));
    assert_eq!(manifest["version"], "0.0.1", "the VERSION file beside the binaries");
    assert_eq!(manifest["agents"].as_array().unwrap().len(), 1, "only known targets are offered: {manifest}");
    let agent = &manifest["agents"][0];
    assert_eq!(agent["target"], ARM64);
    assert_eq!(agent["machines"], json!(["aarch64", "arm64"]));
    assert_eq!(agent["sha256"], sha.as_str());
    assert_eq!(agent["size_bytes"], binary.len());

    let sums = http.get(server.url("/agent/v1/checksums")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sums, format!("{sha}  node-agent-{ARM64}\n"), "sha256sum -c format");

    let res = http.get(server.url(agent["url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.headers()["x-checksum-sha256"], sha.as_str());
    assert_eq!(res.bytes().await.unwrap().as_ref(), binary.as_slice());
    // A resumed download: the rest of the file from an offset.
    let res = http.get(server.url(&format!("/agent/v1/download/{ARM64}"))).header("range", "bytes=100-").send().await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &binary[100..]);

    for missing in ["x86_64-unknown-linux-musl", "sparc-sun-solaris", "..%2F..%2Fetc%2Fpasswd"] {
        let res = http.get(server.url(&format!("/agent/v1/download/{missing}"))).send().await.unwrap();
        assert_eq!(res.status(), 404, "{missing}");
        let body: Value = res.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(ARM64), "the 404 names what is on offer: {body}");
    }

    let script = http.get(server.url("/install.sh")).send().await.unwrap().text().await.unwrap();
    let public = server.config.public_url();
    assert!(script.contains(&format!("SERVER=\"{}\"", public.trim_end_matches('/'))), "the server's public address is the default");
    assert!(!script.contains("@@SERVER@@"));
    let parsed = Command::new("sh").arg("-n").arg("-c").arg(&script).status().unwrap();
    assert!(parsed.success(), "install.sh parses as POSIX sh");
    server.stop().await;
}

#[tokio::test]
async fn without_agents_the_server_says_so() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().join("not-built-yet");
    let server = TestServer::start_with(DbKind::Sqlite, move |c| c.agents_dir = dir).await;
    let http = reqwest::Client::new();
    let manifest: Value = http.get(server.url("/agent/v1/manifest")).send().await.unwrap().json().await.unwrap();
    assert_eq!(manifest["agents"], json!([]));
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let res = http.get(server.url(&format!("/agent/v1/download/{ARM64}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("build-agents.sh"), "{body}");
    server.stop().await;
}

/// `POST /api/v1/nodes` gives an install line whose token enrols a real agent (`node-agent
/// enrol`), which `GET /api/v1/nodes/{id}` then shows; bad requests change nothing.
// Several threads: the agent runs as a blocking child process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_api_enrols_an_agent() {
    let server = TestServer::start(DbKind::Sqlite).await;
    let owner = server.client();
    owner.register("fleet@example.org", common::fleet::PASSWORD).await;
    let token =
        owner.call("/api/tokens/create", &[("name", "fleet")]).await.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let nodes = || async { http.get(server.url("/api/v1/nodes")).bearer_auth(&token).send().await.unwrap().json::<Value>().await.unwrap() };

    for (body, status) in
        [(json!({ "name": "" }), 422), (json!({ "name": "x".repeat(65) }), 422), (json!({ "nom": "pi" }), 422), (json!("pi"), 422)]
    {
        let res = http.post(server.url("/api/v1/nodes")).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(res.status(), status, "{body}");
    }
    assert_eq!(nodes().await, json!([]), "refused requests add nothing");

    let res = http.post(server.url("/api/v1/nodes")).bearer_auth(&token).json(&json!({ "name": "pi 'kitchen'" })).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let new: Value = res.json().await.unwrap();
    let reg = new["token"].as_str().unwrap();
    let base = server.base.trim_end_matches('/');
    let public = server.config.public_url();
    assert_eq!(new["install"], format!(r"curl -fsSL {public}/install.sh | sudo sh -s -- --token {reg} --name 'pi '\''kitchen'\'''"));
    assert_eq!(new["node"]["status"], "waiting");
    let again = http.post(server.url("/api/v1/nodes")).bearer_auth(&token).json(&json!({ "name": "pi 'kitchen'" })).send().await.unwrap();
    assert_eq!(again.status(), 409);

    let work = tempfile::tempdir().unwrap();
    let enrol = |token: &str| {
        Command::new(common::agent_bin())
            .args(["enrol", "--server", base, "--work-dir"])
            .arg(work.path())
            .env("AIEDGE_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = enrol(reg);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = new["node"]["id"].as_str().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("enrolled as node {id} with {base}"));
    // Again: the saved identity stands, the (now used) token is not sent.
    let out = enrol(reg);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("already enrolled as node {id}")));
    // A used token on a fresh machine: exit code 3, one clear line.
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new(common::agent_bin())
        .args(["enrol", "--server", base, "--token", reg, "--work-dir"])
        .arg(fresh.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("registration refused"));

    let node: Value = http.get(server.url(&format!("/api/v1/nodes/{id}"))).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(node["name"], "pi 'kitchen'");
    assert_eq!(node["agent_version"], env!("CARGO_PKG_VERSION"), "the registration carried the agent's facts");
    assert_eq!(nodes().await.as_array().unwrap().len(), 1);

    // A node whose agent reports an older version is flagged in the admin's node table.
    let old = http.post(server.url("/api/v1/nodes")).bearer_auth(&token).json(&json!({ "name": "old-pi" })).send().await.unwrap();
    let old: Value = old.json().await.unwrap();
    let facts = json!({ "hostname": "old-pi", "os": "Linux", "arch": "armv7l", "cpu_cores": 4, "total_memory_bytes": 1u64 << 30, "agent_version": "0.0.9" });
    let res =
        http.post(server.url(shared::wire::REGISTER_PATH)).json(&json!({ "token": old["token"], "facts": facts })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let (admin, _) = server.signed_in_admin(common::fleet::PASSWORD).await;
    let page = admin.get("/admin").await.text().await.unwrap();
    let flag = format!("agent 0.0.9: update to {}", env!("CARGO_PKG_VERSION"));
    assert!(page.contains(&flag), "the admin page flags the old agent");
    assert_eq!(page.matches("data-testid=\"outdated-agent\"").count(), 1, "and only that one");
    server.stop().await;
}
