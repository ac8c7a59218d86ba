//! Several server processes on one database: the lease that picks who runs the work that must
//! happen once, its fences, the namespace claim on the broker, the events passed between
//! replicas, and three real `server` processes on PostgreSQL with real agents, one of them
//! killed with SIGKILL and another restarted in the middle of a burst of jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aiedge_core::NodeStatus;
use aiedge_store::leases::{self, Fence};
use aiedge_store::nodes;
use common::fleet::{fixture, Agent, User, PASSWORD};
use common::{DbKind, TestDb, TestServer};
use serde_json::Value;

const LEASE: &str = leases::PRIMARY;

/// The lease's rules, on the database alone: first come first served, a takeover only from
/// exactly what was seen, and a former holder's writes fenced off.
async fn the_lease_changes_hands_only_as_seen_and_fences_the_former_holder(kind: DbKind) {
    let t = TestDb::new(kind).await;
    let db = &t.db;
    assert_eq!(leases::read(db, LEASE).await.unwrap(), None);
    assert_eq!(leases::take(db, LEASE, "a", None, 1).await.unwrap(), Some(1));
    // Someone else's first take finds the row there.
    assert_eq!(leases::take(db, LEASE, "b", None, 1).await.unwrap(), None);
    assert!(leases::renew(db, LEASE, "a", 1, 2).await.unwrap());
    assert!(!leases::renew(db, LEASE, "b", 1, 2).await.unwrap(), "only the holder renews");
    let seen = leases::read(db, LEASE).await.unwrap().unwrap();
    assert_eq!((seen.holder.as_str(), seen.term, seen.beat), ("a", 1, 1));
    // `b` saw beat 0 earlier: the holder beat since, so that view is out of date.
    assert_eq!(leases::take(db, LEASE, "b", Some((1, 0)), 3).await.unwrap(), None);

    // A node that `a` alone could declare dead.
    let owner =
        aiedge_store::users::create(db, "owner@example.org", "a long enough password", None, aiedge_core::Role::User).await.unwrap();
    let node = nodes::add(db, &Default::default(), "http://x", &owner.id, "n1").await.unwrap().node.id;
    let term1 = Fence { name: LEASE, term: 1 };
    assert!(nodes::transition(db, Some(&term1), &node, NodeStatus::Waiting, NodeStatus::Active, "heard", 5).await.unwrap());

    // `b` takes over from what it saw; `a` can no longer renew or write.
    assert_eq!(leases::take(db, LEASE, "b", Some((1, 1)), 4).await.unwrap(), Some(2));
    assert!(!leases::renew(db, LEASE, "a", 1, 5).await.unwrap());
    let stale = nodes::transition(db, Some(&term1), &node, NodeStatus::Active, NodeStatus::Dead, "silent", 6).await.unwrap_err();
    assert!(leases::is_fenced(&stale), "{stale}");
    assert_eq!(status(db, &node).await, "active", "a fenced write changed nothing");
    let latest = nodes::Latest {
        node_id: node.clone(),
        at: 7,
        sent_at: 7,
        metrics: Default::default(),
        facts: None,
        score: shared::score::score(&Default::default(), &Default::default()),
    };
    assert!(leases::is_fenced(&nodes::save_latest(db, Some(&term1), std::slice::from_ref(&latest)).await.unwrap_err()));
    let term2 = Fence { name: LEASE, term: 2 };
    nodes::save_latest(db, Some(&term2), &[latest]).await.unwrap();
    assert!(nodes::transition(db, Some(&term2), &node, NodeStatus::Active, NodeStatus::Dead, "silent", 8).await.unwrap());

    // A graceful stop lets go: the next replica takes the lease at once, from what it sees.
    assert!(leases::release(db, LEASE, "b", 2).await.unwrap());
    let free = leases::read(db, LEASE).await.unwrap().unwrap();
    assert!(free.is_released() && free.term == 2, "{free:?}");
    assert_eq!(leases::take(db, LEASE, "c", Some((free.term, free.beat)), 9).await.unwrap(), Some(3));

    // One identity per database, whoever asks first.
    let id = leases::deployment_id(db, 1).await.unwrap();
    assert_eq!(leases::deployment_id(db, 2).await.unwrap(), id);
    t.close().await;
}

async fn status(db: &aiedge_store::Db, node: &str) -> String {
    let (s,): (String,) = sqlx::query_as("select status from nodes where id = $1").bind(node).fetch_one(&db.pool).await.unwrap();
    s
}

on_both_databases!(the_lease_changes_hands_only_as_seen_and_fences_the_former_holder);

/// A second deployment (another database) on a namespace in use is refused at start, with the
/// flag to change; a replica of the same deployment (same database) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deployment_on_the_same_namespace_is_refused() {
    let first = TestServer::start(DbKind::Postgres).await;
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = common::config_from(&["--data-dir", other_dir.path().to_str().unwrap()]);
    other.amqp_namespace = first.config.amqp_namespace.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused =
        tokio::time::timeout(Duration::from_secs(30), server::launch(other, listener, tokio_util::sync::CancellationToken::new()))
            .await
            .expect("refused at start, not served")
            .unwrap_err()
            .to_string();
    assert!(refused.contains("--amqp-namespace") && refused.contains(&first.config.amqp_namespace), "{refused}");
    // Refused before it did anything once-per-deployment: it never even looked at the lease.
    let other_db =
        aiedge_store::Db::connect(&common::config_from(&["--data-dir", other_dir.path().to_str().unwrap()]).database_url()).await.unwrap();
    assert_eq!(leases::read(&other_db, LEASE).await.unwrap(), None, "the refused server took the lease");
    other_db.pool.close().await;
    // The first deployment goes on.
    assert_eq!(reqwest::get(first.url("/healthz")).await.unwrap().status(), 200);

    // Same database, same namespace: one more replica, welcome.
    let replica = first.config.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server::launch(replica, listener, stop.clone()));
    let health = wait_healthy(&base, Duration::from_secs(30)).await;
    assert_eq!(health["lease"], "standby", "{health}");
    stop.cancel();
    running.await.unwrap().unwrap();
    first.stop().await;
}

/// Sign-in limits are counted in the database: guesses spread over two replicas spend one
/// budget, so the third wrong password is refused whichever replica it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_sign_in_limits() {
    let first = TestServer::start_with(DbKind::Postgres, |c| c.login_per_account_per_min = 2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server::launch(first.config.clone(), listener, stop.clone()));
    wait_healthy(&base, Duration::from_secs(30)).await;
    assert_eq!(first.client().register("guess@example.org", common::fleet::PASSWORD).await.status(), 200);

    let second = common::Client { base: base.clone(), ..first.client() };
    assert_eq!(first.client().login("guess@example.org", "wrong 1").await.status(), 200, "a wrong password is a form error");
    assert_eq!(second.login("guess@example.org", "wrong 2").await.status(), 200);
    for replica in [&second, &first.client()] {
        let refused = replica.login("guess@example.org", "wrong 3").await;
        assert_eq!(refused.status(), 429, "the budget spent on one replica holds on the other ({})", replica.base);
        assert!(refused.headers().contains_key("retry-after"));
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    first.stop().await;
}

/// Events cross replicas over the real broker: what one replica's use cases raise reaches the
/// other's dispatcher, job waiters and live feeds, and not itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_on_one_replica_reach_the_others() {
    use server::replica_events::{Event, Local, Relay};
    let namespace = format!("aiedge-test-{}", uuid::Uuid::new_v4().simple());
    let url = common::config_from(&[]).amqp_url;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut sides = Vec::new();
    for name in ["a", "b"] {
        let broker = server::broker::Broker::start(url.clone(), server::broker::Topology::new(&namespace), None, cancel.clone());
        let (relay, outbox) = Relay::new();
        relay.peers.store(1, Ordering::Relaxed);
        let local = Local { dispatcher: Default::default(), job_ends: Default::default(), changes: Default::default() };
        server::replica_events::spawn(broker, name.to_string(), outbox, local.clone(), cancel.clone());
        sides.push((relay, local));
    }
    let (mut a_ends, mut b_ends) = (sides[0].1.job_ends.subscribe(), sides[1].1.job_ends.subscribe());
    let mut b_jobs = sides[1].1.changes.watch_jobs();
    // Until b's queue is bound, a's events go nowhere: send until one arrives.
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            sides[0].0.send(Event::JobEnded("job-1".into()));
            sides[0].0.send(Event::JobsChanged);
            if let Ok(Ok(id)) = tokio::time::timeout(Duration::from_millis(200), b_ends.recv()).await {
                return id;
            }
        }
    })
    .await
    .expect("b heard a");
    assert_eq!(&*heard, "job-1");
    tokio::time::timeout(Duration::from_secs(5), b_jobs.changed()).await.expect("b's live feeds told").unwrap();
    // b's own event reaches a; a never hears its own job-1 back.
    sides[1].0.send(Event::JobEnded("job-2".into()));
    let got = tokio::time::timeout(Duration::from_secs(10), a_ends.recv()).await.expect("a heard b").unwrap();
    assert_eq!(&*got, "job-2", "a replica must not hear its own events");
    cancel.cancel();
    common::delete_broker_topology(&url, &namespace, &[]).await;
}

// --- three real server processes on PostgreSQL ---

/// A `server` process of the deployment.
struct Replica {
    child: Child,
    base: String,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(args: Vec<String>, log: &Path) -> Self {
        let bind = args.iter().skip_while(|a| *a != "--bind").nth(1).unwrap().clone();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_server"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start server");
        Self { child, base: format!("http://{bind}"), args, log: log.to_path_buf() }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait for it to stop, and start it again on the same address.
    async fn restart(&mut self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let stopped = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(stopped.elapsed() < Duration::from_secs(30), "replica did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *self = Self::start(self.args.clone(), &self.log.clone());
        self.wait_healthy().await;
    }

    /// Waits until it answers 200 on `/healthz`; fails with its log otherwise.
    async fn wait_healthy(&self) -> Value {
        let start = Instant::now();
        loop {
            if let Some(h) = self.health().await.filter(|h| h["status"] == "ok") {
                return h;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(60), "{} never became healthy:\n{log}", self.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health(&self) -> Option<Value> {
        let res = reqwest::Client::new().get(format!("{}/healthz", self.base)).timeout(Duration::from_secs(2)).send().await.ok()?;
        res.json().await.ok()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_healthy(base: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Ok(res) = reqwest::get(format!("{base}/healthz")).await {
            if res.status() == 200 {
                return res.json().await.unwrap();
            }
        }
        assert!(start.elapsed() < within, "{base} never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The index of the replica holding the lease and its term, once exactly one says so.
async fn holder(replicas: &[Replica], within: Duration) -> (usize, i64) {
    let start = Instant::now();
    loop {
        let mut holders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if let Some(h) = r.health().await {
                if h["lease"] == "holder" {
                    holders.push((i, h["term"].as_i64().unwrap()));
                }
            }
        }
        if holders.len() == 1 {
            return holders[0];
        }
        assert!(start.elapsed() < within, "no single holder: {holders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A user's API calls spread over the replicas, as a load balancer would: each call goes to
/// the next replica, and one that does not answer is skipped.
struct Spread {
    users: Vec<User>,
    next: usize,
}

impl Spread {
    async fn submit(&mut self, input: &[u8], down: &[usize]) -> String {
        for _ in 0..20 {
            let i = self.next % self.users.len();
            self.next += 1;
            if down.contains(&i) {
                continue;
            }
            let form = reqwest::multipart::Form::new()
                .text("application", "iris")
                .part("input", reqwest::multipart::Part::bytes(input.to_vec()).file_name("input.csv"));
            let user = &self.users[i];
            match user.http.post(user.url("/api/v1/jobs")).bearer_auth(&user.token).multipart(form).send().await {
                Ok(res) if res.status() == 201 => return res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string(),
                // A replica going down mid-request: the caller retries elsewhere.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("no replica took the job");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_no_job_when_the_holder_is_killed_and_another_restarts() {
    let database = common::create_pg_database().await;
    let url = format!("{}/{database}", common::postgres_admin_url());
    let namespace = format!("aiedge-test-{}", uuid::Uuid::new_v4().simple());
    // Replicas share the data directory (artifacts and the server secret), as they would a
    // network file system.
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let args = |port: u16| -> Vec<String> {
        [
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.path().to_str().unwrap(),
            "--database-url",
            &url,
            "--amqp-namespace",
            &namespace,
            "--heartbeat-timeout",
            "4s",
            "--register-per-ip-per-min",
            "1000",
            "--login-per-ip-per-min",
            "1000",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut replicas: Vec<Replica> =
        (0..3).map(|i| Replica::start(args(free_port()), &logs.path().join(format!("replica-{i}.log")))).collect();
    for r in &replicas {
        r.wait_healthy().await;
    }
    let (first_holder, first_term) = holder(&replicas, Duration::from_secs(15)).await;

    // The user and the nodes, made through one replica; agents talk to another (their load
    // balancer address, in production), which this test never stops.
    let stable = (first_holder + 1) % 3;
    let restarted = (first_holder + 2) % 3;
    let web =
        common::Client { base: replicas[restarted].base.clone(), http: reqwest::Client::builder().cookie_store(true).build().unwrap() };
    assert_eq!(web.register("fleet@example.org", PASSWORD).await.status(), 200);
    let token: Value = web.call("/api/tokens/create", &[("name", "tests")]).await.json().await.unwrap();
    let token = token["secret"].as_str().unwrap().to_string();
    let users: Vec<User> = replicas
        .iter()
        .map(|r| User {
            web: common::Client { base: r.base.clone(), http: web.http.clone() },
            token: token.clone(),
            base: r.base.clone(),
            http: reqwest::Client::new(),
        })
        .collect();
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    users[0].upload_iris().await;
    let mut agents = Vec::new();
    let mut node_ids = Vec::new();
    for name in ["edge-1", "edge-2"] {
        let (id, token) = users[1].add_node(name).await;
        agents.push(Agent::start_at(&replicas[stable].base, &token, name, &["--max-jobs", "2"]));
        node_ids.push(id);
    }
    for id in &node_ids {
        users[2].wait_node_active(id).await;
    }

    let mut spread = Spread { users, next: 0 };
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.push(spread.submit(&iris, &[]).await);
    }
    // SIGKILL the holder mid-burst.
    replicas[first_holder].kill();
    let killed_at = Instant::now();
    for _ in 0..20 {
        jobs.push(spread.submit(&iris, &[first_holder]).await);
    }
    let survivors: Vec<usize> = (0..3).filter(|i| *i != first_holder).collect();
    let (new_holder, new_term) = loop {
        let mut found = None;
        for &i in &survivors {
            if let Some(h) = replicas[i].health().await {
                if h["lease"] == "holder" {
                    found = Some((i, h["term"].as_i64().unwrap()));
                }
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "nobody took the lease over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let takeover = killed_at.elapsed();
    assert!(new_term > first_term, "a takeover raises the term: {first_term} → {new_term}");
    assert!(takeover <= Duration::from_secs(10), "the lease was taken over after {takeover:?}");

    // Restart another replica (SIGTERM, then start) while jobs keep coming; bring the killed
    // one back too.
    let restart_target = if new_holder == restarted { stable } else { restarted };
    let (submitted, restart) = tokio::join!(
        async {
            let mut more = Vec::new();
            for _ in 0..20 {
                more.push(spread.submit(&iris, &[first_holder, restart_target]).await);
            }
            more
        },
        replicas[restart_target].restart()
    );
    jobs.extend(submitted);
    let () = restart;
    replicas[first_holder] = Replica::start(replicas[first_holder].args.clone(), &replicas[first_holder].log.clone());
    replicas[first_holder].wait_healthy().await;

    // Every job accepted ran to success exactly once.
    let reader = &spread.users[stable];
    for id in &jobs {
        let job = reader
            .wait_job_until(id, Duration::from_secs(120), |j| {
                ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or_default())
            })
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let db = aiedge_store::Db::connect(&url).await.unwrap();
    let doubles: Vec<(String, i64)> =
        sqlx::query_as("select job_id, count(*) from job_attempts where outcome = 'succeeded' group by job_id having count(*) > 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(doubles.is_empty(), "jobs with two accepted results: {doubles:?}");
    let deaths: Vec<(String, String)> =
        sqlx::query_as("select node_id, reason from node_events where to_status = 'dead'").fetch_all(&db.pool).await.unwrap();
    assert!(deaths.is_empty(), "nodes falsely marked dead: {deaths:?}");
    let (final_holder, _) = holder(&replicas, Duration::from_secs(15)).await;
    let status = Command::new(env!("CARGO_BIN_EXE_server")).args(["status", "--database-url", &url]).output().unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    let holder_id = replicas[final_holder].health().await.unwrap()["replica"].as_str().unwrap().to_string();
    assert!(printed.contains(&format!("held by {holder_id}")) && printed.contains(&format!("* {holder_id}")), "{printed}");
    for r in &replicas {
        let id = r.health().await.unwrap()["replica"].as_str().unwrap().to_string();
        assert!(printed.contains(&id), "replica {id} missing from the status:\n{printed}");
    }
    println!("lease taken over {takeover:?} after SIGKILL; {} jobs, none lost or doubled; `server status`:\n{printed}", jobs.len());

    drop(agents);
    drop(replicas);
    db.pool.close().await;
    common::delete_broker_topology(&common::config_from(&[]).amqp_url, &namespace, &node_ids).await;
    common::drop_pg_database(&database).await;
}
