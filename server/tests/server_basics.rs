//! Health, configuration errors, the admin CLI, malformed cookies and graceful shutdown, through
//! the real binary where it matters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DbKind, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_server");

on_both_databases!(healthz_reports_database_and_broker, malformed_cookies_are_anonymous);

async fn healthz_reports_database_and_broker(db: DbKind) {
    let server = TestServer::start(db).await;
    // The broker connects in the background; give it a moment.
    let mut last = None;
    for _ in 0..100 {
        let res = reqwest::get(server.url("/healthz")).await.unwrap();
        if res.status() == 200 {
            last = Some(res.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = last.expect("healthz reached 200 with the real broker");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["broker"], "ok");
    server.stop().await;

    // Nothing listens on port 1: the broker is named as the problem.
    let server = TestServer::start_with(db, |c| c.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    let res = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["broker"], "unreachable");
    // Pages still work while the broker is away.
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);

    // A state-changing request that a browser says comes from another site is refused before
    // any handler runs (here: login CSRF); the same request from this site goes through.
    let client = reqwest::Client::new();
    let login = |extra: (&'static str, String)| {
        client
            .post(server.url("/api/auth/login"))
            .header("accept", "application/json")
            .header(extra.0, extra.1)
            .form(&[("email", "nobody@example.org"), ("password", "wrong password")])
    };
    for refused in [("origin", "http://evil.example".to_string()), ("sec-fetch-site", "cross-site".to_string())] {
        let res = login(refused.clone()).send().await.unwrap();
        assert_eq!(res.status(), 403, "{refused:?}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "cross_site");
    }
    let res = login(("origin", server.base.clone())).send().await.unwrap();
    assert_ne!(res.status(), 403, "same origin");

    // Every response, a page, an API error, a health check or a missing file, carries the
    // security headers.
    for path in ["/", "/healthz", "/api/v1/jobs", "/pkg/none.js", "/login?error=%3Cscript%3E"] {
        let res = reqwest::get(server.url(path)).await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"), "{path}");
    }
    server.stop().await;
}

async fn malformed_cookies_are_anonymous(db: DbKind) {
    let server = TestServer::start(db).await;
    let long = format!("aiedge_session={}", "A".repeat(4000));
    for cookie in [
        "aiedge_session=%%%garbage",
        "aiedge_session=",
        "aiedge_session=AAAAAAAAAAAAAAAAAAAAAA",
        "aiedge_session=\"quoted\"; aiedge_session=twice",
        "=; ;;aiedge_session",
        long.as_str(),
    ] {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let res = client.get(server.url("/")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(res.status(), 200, "{cookie}");
        let res = client.get(server.url("/home")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(res.status(), 303, "{cookie}");
        let res = client.get(server.url("/api/auth/me")).header("cookie", cookie).send().await.unwrap();
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    }
    server.stop().await;
}

/// The browser's files are named by their content, kept for a year, and sent precompressed;
/// pages are compressed when the client asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_files_are_versioned_cached_and_compressed() {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("aiedge.js"), "export function hydrate() {}").unwrap();
    std::fs::write(pkg.join("aiedge.css"), "body { margin: 0 }").unwrap();
    std::fs::write(pkg.join("aiedge.js.br"), "pretend brotli").unwrap();
    let root = site.path().to_str().unwrap().to_string();
    let server = TestServer::start_with(DbKind::Sqlite, |c| c.site_root = root).await;
    let client = reqwest::Client::new();

    let page = client.get(server.url("/")).header("accept-encoding", "identity").send().await.unwrap();
    let html = page.text().await.unwrap();
    let start = html.find("/pkg/").expect("the page names its script") + "/pkg/".len();
    let version = &html[start..start + 16];
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
    assert!(html.contains(&format!("/pkg/{version}/aiedge.css")), "the stylesheet is versioned too");

    let js = server.url(&format!("/pkg/{version}/aiedge.js"));
    let res = client.get(&js).header("accept-encoding", "br, gzip").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(res.headers()["content-encoding"], "br", "the precompressed copy");
    assert_eq!(res.text().await.unwrap(), "pretend brotli");
    let res = client.get(&js).header("accept-encoding", "identity").send().await.unwrap();
    assert!(res.headers().get("content-encoding").is_none());
    assert_eq!(res.text().await.unwrap(), "export function hydrate() {}");

    // An old or made-up version is not this build: a 404 that no cache keeps.
    let res = client.get(server.url("/pkg/0123456789abcdef/aiedge.js")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("cache-control").is_none_or(|v| !v.to_str().unwrap().contains("immutable")));

    // Pages are compressed on the fly for clients that ask.
    let res = client.get(server.url("/login")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    server.stop().await;
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "off").output().expect("run server binary")
}

fn one_error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn bad_configuration_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let line = one_error_line(&run(&["--data-dir", d, "--database-url", "mysql://x/y", "migrate"]));
    assert!(line.contains("bad database URL"), "{line}");
    let line = one_error_line(&run(&["--data-dir", d, "--database-url", "postgres://nobody@127.0.0.1:1/x", "migrate"]));
    assert!(line.contains("cannot connect to the database"), "{line}");
    let line = one_error_line(&run(&["--data-dir", d, "--amqp-url", "not a url", "migrate"]));
    assert!(line.contains("bad AMQP URL"), "{line}");
    let line = one_error_line(&run(&["--data-dir", "/proc/aiedge-cannot-write-here", "migrate"]));
    assert!(line.contains("data directory"), "{line}");
}

/// A second server on a running server's SQLite file is refused with one line naming the way
/// out; tools still run beside it; once the first stops, the next one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    let mut server = TestServer::start(DbKind::Sqlite).await;
    let dir = server.data_dir.path().to_str().unwrap().to_string();
    let namespace = server.config.amqp_namespace.clone();
    let line = one_error_line(&run(&["--data-dir", &dir, "--bind", "127.0.0.1:0", "--amqp-namespace", &namespace]));
    assert!(line.contains("is serving the SQLite database") && line.contains("--database-url postgres://"), "{line}");
    assert!(run(&["--data-dir", &dir, "migrate"]).status.success(), "tools run beside a server");
    server.take_down().await;
    let mut second = Command::new(BIN)
        .args(["--data-dir", &dir, "--bind", "127.0.0.1:0", "--amqp-namespace", &namespace])
        .env("RUST_LOG", "off")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Still serving after a while: it took the lock the first let go of.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(second.try_wait().unwrap().is_none(), "the next server starts once the first stopped");
    second.kill().unwrap();
    let _ = second.wait();
    server.stop().await;
}

#[test]
fn admin_create_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut child = Command::new(BIN)
        .args(["--data-dir", d, "admin", "create", "--email", "Admin@Example.org", "--password-stdin"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a strong password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "admin admin@example.org created");
    assert!(dir.path().join("aiedge.db").exists(), "SQLite file created on first run");

    let mut child = Command::new(BIN)
        .args(["--data-dir", d, "admin", "create", "--email", "x@example.org", "--password-stdin"])
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("at least 8"), "{line}");
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let mut child =
        Command::new(BIN).args(["--data-dir", dir.path().to_str().unwrap(), "--bind", &bind]).stderr(Stdio::null()).spawn().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(&bind).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "server listening");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no exit within 5 s of SIGTERM")
    });
    assert!(status.success(), "{status}");
}
