//! Schedules benchmark: do 10 000 active schedules fire on time on one server?
//!
//!     cargo run --release -p aiedge-services --example schedules_bench -- [--schedules 10000] [--seconds 130] [--burst] [--postgres]
//!
//! Creates one user, one application and `--schedules` schedules (overlap `allow`, so every fire
//! time submits a job), then runs the server's own loop for `--seconds`: a
//! [`Ticker`] on the database's thread with the system clock, sleeping until the earliest next
//! fire time (`schedules::sleep_after_tick`), as `server::schedule_ticker` does. Spread (the default): schedule
//! `i` fires every minute at second `i % 60`, about 167 fire times a second. `--burst`: every
//! schedule fires at second 0 of every minute, 10 000 at once.
//!
//! Lateness of a fire time = when its job's transaction committed − the fire time, measured by
//! the ticker with the same clock. Prints fires, jobs/s recorded, and lateness p50/p95/p99/max.
//! No nodes take the jobs: this measures the schedules, not the dispatch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks may panic

use std::time::{Duration, Instant};

use aiedge_core::views::AppDetails;
use aiedge_core::{Overlap, Pool, Role};
use aiedge_services::schedules::{SystemClock, Ticker};
use aiedge_services::Events;
use aiedge_store::schedules::{self as store, NewSchedule, Timing};
use aiedge_store::{apps, now_ms, users, Db};
use clap::Parser;
use sqlx::{Connection, Executor};

#[derive(Parser)]
struct Args {
    /// Active schedules.
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// How long to run the ticker.
    #[arg(long, default_value_t = 130)]
    seconds: u64,
    /// Every schedule at second 0 of each minute (instead of spread over the minute).
    #[arg(long)]
    burst: bool,
    /// A fresh database on the PostgreSQL at `AIEDGE_TEST_POSTGRES` (default
    /// postgres://postgres@127.0.0.1:5432) instead of SQLite in a temp dir.
    #[arg(long)]
    postgres: bool,
}

struct Quiet;
impl Events for Quiet {
    fn job_changed(&self, _: &str) {}
    fn job_ended(&self, _: &str) {}
    fn dispatch_wanted(&self) {}
    fn node_changed(&self, _: &str) {}
    fn node_removed(&self, _: &str) {}
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let url = if args.postgres {
        let admin = std::env::var("AIEDGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("aiedge_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("{admin}/postgres")).await.expect("PostgreSQL");
        conn.execute(format!("create database {name}").as_str()).await.unwrap();
        format!("{admin}/{name}")
    } else {
        format!("sqlite://{}/bench.db", dir.path().display())
    };
    let db = Db::connect(&url).await.unwrap();
    let user = users::create(&db, "bench@example.org", "a long password", None, Role::User).await.unwrap();
    let app = uuid::Uuid::new_v4().to_string();
    apps::create(
        &db,
        apps::NewApp {
            id: app.clone(),
            owner_id: user.id.clone(),
            name: "model".into(),
            kind: shared::jobs::AppKind::Onnx,
            artifact_key: format!("apps/{app}/model.onnx"),
            sha256: "0".repeat(64),
            size_bytes: 1,
            details: AppDetails::Onnx { inputs: vec![], outputs: vec![], features: 4, columns: vec![] },
            runtime: None,
            features: Some(4),
            default_input: Some((format!("apps/{app}/default.csv"), 1)),
        },
    )
    .await
    .unwrap();

    // Straight through the store: the per-account limit is the API's business, not the ticker's.
    let began = Instant::now();
    let now = now_ms();
    for i in 0..args.schedules {
        let second = if args.burst { 0 } else { i % 60 };
        let cron = format!("{second} * * * * *");
        let id = uuid::Uuid::new_v4().to_string();
        let name = format!("s{i}");
        store::create(
            &db,
            NewSchedule {
                id: &id,
                owner_id: &user.id,
                app_id: &app,
                timing: Timing {
                    name: &name,
                    cron: Some(&cron),
                    once_at: None,
                    time_zone: "UTC",
                    overlap: Overlap::Allow,
                    deadline_ms: 3_600_000,
                    pool: Pool::Shared,
                    // Armed below, once all exist.
                    next_fire_at: None,
                },
                input_key: None,
                input_name: "default input",
                input_rows: Some(1),
                inline_input: None,
                now,
            },
        )
        .await
        .unwrap();
    }
    eprintln!("{} schedules created in {:.1} s", args.schedules, began.elapsed().as_secs_f64());
    // Armed together, each at its first fire time from a moment after this transaction: no fire
    // time falls due while the bench is still setting up (that would measure catch-up instead).
    let from = now_ms() + 3_000;
    let rows: Vec<(String, String)> = sqlx::query_as("select id, cron from schedules").fetch_all(&db.pool).await.unwrap();
    let mut tx = db.writer.begin().await.unwrap();
    for (id, cron) in rows {
        let timing = aiedge_core::schedules::timing::Timing::cron(&cron, "UTC").unwrap();
        let next = aiedge_core::schedules::FireTimes::next_after(&timing, from);
        sqlx::query("update schedules set next_fire_at = $1 where id = $2").bind(next).bind(&id).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(now_ms() < from, "arming took too long");

    // The server's loop (server::schedule_ticker), on the database's thread, for a while.
    let runner = db.clone();
    let seconds = args.seconds;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    runner.clone().spawn(async move {
        let mut ticker = Ticker::new(3);
        // As the server does when it starts.
        ticker.warm_up(&runner).await.unwrap();
        let mut lateness = Vec::new();
        let (mut fired, mut ticks, mut busy) = (0u64, 0u64, Duration::ZERO);
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            let t = Instant::now();
            let tick = ticker.tick(&runner, &Quiet, &SystemClock).await.unwrap();
            if tick.fired > 0 {
                busy += t.elapsed();
                ticks += 1;
            }
            fired += tick.fired;
            lateness.extend(tick.lateness_ms);
            tokio::time::sleep(aiedge_services::schedules::sleep_after_tick(&runner, &SystemClock).await.unwrap()).await;
        }
        let _ = done_tx.send((fired, ticks, busy, lateness));
    });
    let (fired, ticks, busy, mut lateness) = done_rx.await.unwrap();
    lateness.sort_unstable();
    let engine = if args.postgres { "PostgreSQL" } else { "SQLite" };
    let mode = if args.burst { "burst: all at second 0" } else { "spread over the minute" };
    println!("schedules_bench: {} schedules on {engine}, {mode}, {seconds} s", args.schedules);
    println!(
        "  fire times run: {fired} in {ticks} ticks; ticker busy {:.1} s ({:.0} jobs/s while busy)",
        busy.as_secs_f64(),
        fired as f64 / busy.as_secs_f64().max(1e-9)
    );
    println!(
        "  lateness (fire time -> job committed): p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        percentile(&lateness, 0.50),
        percentile(&lateness, 0.95),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
}
