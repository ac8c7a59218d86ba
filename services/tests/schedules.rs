//! Schedules with a controlled clock, on real SQLite and PostgreSQL: every tick is given the
//! time it runs at, so a day (or a daylight-saving change) passes in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../store/tests/common/mod.rs"]
mod common;

use aiedge_core::schedules::{ScheduleSpec, ScheduleState};
use aiedge_core::views::{AppDetails, UserView};
use aiedge_core::{JobStatus, Overlap, Role, RunOutcome};
use aiedge_services::jobs::{Input, Intakes};
use aiedge_services::schedules::{self, Ticker};
use aiedge_services::{Events, ServiceError};
use aiedge_store::artifacts::LocalStore;
use aiedge_store::{apps, jobs, users, Db};
use common::{Engine, TestDb, ENGINES};

struct Quiet;
impl Events for Quiet {
    fn job_changed(&self, _: &str) {}
    fn job_ended(&self, _: &str) {}
    fn dispatch_wanted(&self) {}
    fn node_changed(&self, _: &str) {}
    fn node_removed(&self, _: &str) {}
}

struct World {
    t: TestDb,
    store: LocalStore,
    _files: tempfile::TempDir,
    intake: jobs::Intake,
    alice: UserView,
    bob: UserView,
    app: String,
}

impl World {
    fn db(&self) -> &Db {
        &self.t.db
    }

    fn to(&self) -> Intakes<'_> {
        Intakes { db: self.db(), intake: &self.intake, artifacts: &self.store, events: &Quiet, max_attempts: 3 }
    }

    async fn schedule(&self, spec: ScheduleSpec, now: i64) -> String {
        schedules::create(&self.to(), &self.alice, &self.app, spec, Input::Default, now).await.unwrap().id
    }

    /// The schedule's jobs' fire times, oldest first, and their statuses.
    async fn fired(&self, id: &str) -> Vec<(i64, JobStatus)> {
        let detail = schedules::detail(self.db(), &self.alice, id, 0).await.unwrap();
        let mut fired: Vec<(i64, JobStatus)> = detail
            .runs
            .iter()
            .filter(|r| r.outcome == RunOutcome::Fired)
            .map(|r| (r.fire_at_ms, r.job_status.expect("a fired run has its job")))
            .collect();
        fired.sort();
        fired
    }

    async fn runs(&self, id: &str, outcome: RunOutcome) -> Vec<(i64, u64, String)> {
        let detail = schedules::detail(self.db(), &self.alice, id, 0).await.unwrap();
        let mut runs: Vec<_> = detail.runs.into_iter().filter(|r| r.outcome == outcome).map(|r| (r.fire_at_ms, r.count, r.note)).collect();
        runs.sort();
        runs
    }
}

async fn world(engine: Engine) -> World {
    let t = TestDb::new(engine).await;
    let files = tempfile::tempdir().unwrap();
    let store = LocalStore::new(files.path()).unwrap();
    let alice = users::create(&t.db, "alice@example.org", "a long password", None, Role::User).await.unwrap();
    let bob = users::create(&t.db, "bob@example.org", "a long password", None, Role::User).await.unwrap();
    let app = uuid::Uuid::new_v4().to_string();
    apps::create(
        &t.db,
        apps::NewApp {
            id: app.clone(),
            owner_id: alice.id.clone(),
            name: "scorer".into(),
            kind: shared::jobs::AppKind::Onnx,
            artifact_key: format!("apps/{app}/model.onnx"),
            sha256: "0".repeat(64),
            size_bytes: 1,
            details: AppDetails::Onnx { inputs: vec![], outputs: vec![], features: 2, columns: vec![] },
            runtime: None,
            features: Some(2),
            default_input: Some((format!("apps/{app}/default.csv"), 3)),
        },
    )
    .await
    .unwrap();
    let intake = jobs::Intake::start(&t.db);
    World { t, store, _files: files, intake, alice, bob, app }
}

fn ms(rfc3339: &str) -> i64 {
    chrono_ms(rfc3339)
}

fn chrono_ms(s: &str) -> i64 {
    // A tiny RFC 3339 reader would be more code than the one the core already depends on.
    aiedge_core::schedules::timing::Timing::once(s, "UTC").unwrap().once_at().unwrap()
}

fn every(seconds: u32, overlap: Overlap, deadline_s: u64) -> ScheduleSpec {
    ScheduleSpec {
        name: Some(format!("every {seconds}s {overlap}")),
        cron: Some(format!("*/{seconds} * * * * *")),
        overlap: Some(overlap),
        deadline_s: Some(deadline_s),
        ..Default::default()
    }
}

const T0: &str = "2026-12-07T10:00:00Z";

async fn end(w: &World, job_ids: &[String]) {
    for id in job_ids {
        jobs::cancel(w.db(), id, "the test").await.unwrap();
    }
}

async fn live_jobs(w: &World, id: &str) -> Vec<String> {
    let detail = schedules::detail(w.db(), &w.alice, id, 0).await.unwrap();
    detail.runs.into_iter().filter(|r| r.job_status.is_some_and(|s| !s.is_terminal())).filter_map(|r| r.job_id).collect()
}

#[tokio::test]
async fn each_overlap_policy() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let skip = w.schedule(every(10, Overlap::Skip, 60), t0).await;
        let allow = w.schedule(every(10, Overlap::Allow, 60), t0).await;
        let replace = w.schedule(every(10, Overlap::Replace, 60), t0).await;
        let mut ticker = Ticker::new(3);

        // Nothing before the first fire time.
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 9_999)).await.unwrap().fired, 0);
        let first = ticker.tick(w.db(), &Quiet, &(t0 + 10_004)).await.unwrap();
        assert_eq!(first.fired, 3, "{engine:?}");

        // The second fire time comes while every first job is still queued.
        let second = ticker.tick(w.db(), &Quiet, &(t0 + 20_002)).await.unwrap();
        assert_eq!((second.fired, second.skipped), (2, 1), "{engine:?}");
        assert_eq!(w.fired(&skip).await, vec![(t0 + 10_000, JobStatus::Queued)]);
        let skipped = w.runs(&skip, RunOutcome::Skipped).await;
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].2.contains("has not ended (overlap: skip)"), "{skipped:?}");
        assert_eq!(w.fired(&allow).await, vec![(t0 + 10_000, JobStatus::Queued), (t0 + 20_000, JobStatus::Queued)]);
        assert_eq!(
            w.fired(&replace).await,
            vec![(t0 + 10_000, JobStatus::Cancelled), (t0 + 20_000, JobStatus::Queued)],
            "replace cancels the running one and starts the new one"
        );

        // Once the skipped schedule's job has ended, the next fire time runs.
        end(&w, &live_jobs(&w, &skip).await).await;
        let third = ticker.tick(w.db(), &Quiet, &(t0 + 30_001)).await.unwrap();
        assert_eq!(third.fired, 3);
        assert_eq!(w.fired(&skip).await.iter().map(|(at, _)| *at).collect::<Vec<_>>(), vec![t0 + 10_000, t0 + 30_000]);
    }
}

#[tokio::test]
async fn a_fire_time_becomes_one_job_however_many_tickers_run_it() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let ids: Vec<String> = {
            let mut ids = Vec::new();
            for i in 0..20 {
                let spec = ScheduleSpec { name: Some(format!("s{i}")), ..every(5, Overlap::Allow, 60) };
                ids.push(w.schedule(spec, t0).await);
            }
            ids
        };
        // Four tickers (four servers, or a retry) tick at once, at every second for a minute.
        let mut tickers: Vec<Ticker> = (0..4).map(|_| Ticker::new(3)).collect();
        let mut fired = 0;
        for second in 1..=60 {
            let now = t0 + second * 1000 + 3;
            let [a, b, c, d] = &mut tickers[..] else { unreachable!() };
            let (ra, rb, rc, rd) = tokio::join!(
                a.tick(w.db(), &Quiet, &now),
                b.tick(w.db(), &Quiet, &now),
                c.tick(w.db(), &Quiet, &now),
                d.tick(w.db(), &Quiet, &now)
            );
            for r in [ra, rb, rc, rd] {
                fired += r.unwrap().fired;
            }
        }
        assert_eq!(fired, 20 * 12, "{engine:?}: every 5 s for 60 s is 12 fire times per schedule");
        for id in &ids {
            let times: Vec<i64> = w.fired(id).await.iter().map(|(at, _)| *at).collect();
            let want: Vec<i64> = (1..=12).map(|k| t0 + k * 5000).collect();
            assert_eq!(times, want, "{engine:?}: no fire time skipped, none doubled");
        }
        // And the jobs table agrees: one job per fire time.
        let (n,): (i64,) = sqlx::query_as("select count(*) from jobs").fetch_one(&w.db().pool).await.unwrap();
        assert_eq!(n, 240);
    }
}

#[tokio::test]
async fn catch_up_after_a_gap_inside_and_outside_the_deadline() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let inside = w.schedule(every(10, Overlap::Allow, 30), t0).await;
        let outside = w.schedule(ScheduleSpec { name: Some("outside".into()), ..every(10, Overlap::Allow, 5) }, t0).await;
        let mut ticker = Ticker::new(3);
        ticker.tick(w.db(), &Quiet, &(t0 + 10_010)).await.unwrap();
        // The server is down from 11 s to 68 s: fire times 20, 30, 40, 50 and 60 pass.
        let back = ticker.tick(w.db(), &Quiet, &(t0 + 68_000)).await.unwrap();
        assert_eq!(back.fired, 1, "{engine:?}: one catch-up run, not a burst");
        assert_eq!(w.fired(&inside).await.iter().map(|(at, _)| *at).collect::<Vec<_>>(), vec![t0 + 10_000, t0 + 60_000]);
        let missed = w.runs(&inside, RunOutcome::Missed).await;
        assert_eq!(missed.len(), 1);
        assert_eq!((missed[0].0, missed[0].1), (t0 + 20_000, 4));
        assert!(missed[0].2.contains("only the latest one runs"), "{missed:?}");

        // 8 s late is past a 5 s deadline: nothing runs, all five are missed.
        assert_eq!(w.fired(&outside).await.len(), 1);
        let missed = w.runs(&outside, RunOutcome::Missed).await;
        assert_eq!((missed[0].0, missed[0].1), (t0 + 20_000, 5));
        assert!(missed[0].2.contains("past the starting deadline of 5 s"), "{missed:?}");

        // Both carry on at the next fire time.
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 70_001)).await.unwrap().fired, 2);
    }
}

/// Ticks at every minute from `from` to `to` (a day in a few thousand ticks).
async fn tick_minutes(w: &World, ticker: &mut Ticker, from: i64, to: i64) {
    let mut now = from;
    while now <= to {
        ticker.tick(w.db(), &Quiet, &now).await.unwrap();
        now += 60_000;
    }
}

#[tokio::test]
async fn daylight_saving_days_run_a_02_30_schedule_once() {
    let w = world(Engine::Sqlite).await;
    let nightly = |name: &str| ScheduleSpec {
        name: Some(name.into()),
        cron: Some("30 2 * * *".into()),
        time_zone: Some("Europe/Berlin".into()),
        overlap: Some(Overlap::Allow),
        deadline_s: Some(120),
        ..Default::default()
    };
    let mut ticker = Ticker::new(3);

    // Spring forward, 2027-03-28: 02:30 does not exist; it runs at 03:00 CEST, once.
    let start = ms("2027-03-27T00:00:00+01:00");
    let spring = w.schedule(nightly("spring"), start).await;
    tick_minutes(&w, &mut ticker, start, ms("2027-03-30T00:00:00+02:00")).await;
    let times: Vec<i64> = w.fired(&spring).await.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![ms("2027-03-27T02:30:00+01:00"), ms("2027-03-28T03:00:00+02:00"), ms("2027-03-29T02:30:00+02:00")]);

    // Fall back, 2027-10-31: 02:30 happens twice; it runs at the first, once.
    let start = ms("2027-10-30T00:00:00+02:00");
    let fall = w.schedule(nightly("fall"), start).await;
    tick_minutes(&w, &mut ticker, start, ms("2027-11-02T00:00:00+01:00")).await;
    let times: Vec<i64> = w.fired(&fall).await.iter().map(|(at, _)| *at).collect();
    assert_eq!(times, vec![ms("2027-10-30T02:30:00+02:00"), ms("2027-10-31T02:30:00+02:00"), ms("2027-11-01T02:30:00+01:00")]);
    assert!(w.runs(&fall, RunOutcome::Missed).await.is_empty());
}

#[tokio::test]
async fn pause_resume_once_and_edits() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let id = w.schedule(every(10, Overlap::Allow, 15), t0).await;
        let mut ticker = Ticker::new(3);
        ticker.tick(w.db(), &Quiet, &(t0 + 10_001)).await.unwrap();

        let paused = schedules::set_paused(w.db(), &w.alice, &id, true, t0 + 11_000).await.unwrap();
        assert_eq!((paused.state, paused.upcoming.len()), (ScheduleState::Paused, 0));
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 40_001)).await.unwrap().fired, 0, "{engine:?}: paused");
        // Resumed at 45 s: 20, 30 and 40 passed; 40 is within the 15 s deadline and runs once.
        let resumed = schedules::set_paused(w.db(), &w.alice, &id, false, t0 + 45_000).await.unwrap();
        assert_eq!(resumed.state, ScheduleState::Active);
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 45_000)).await.unwrap().fired, 1);
        assert_eq!(w.fired(&id).await.iter().map(|(at, _)| *at).collect::<Vec<_>>(), vec![t0 + 10_000, t0 + 40_000]);

        // A single run fires once and is done.
        let once = schedules::create(
            &w.to(),
            &w.alice,
            "scorer",
            ScheduleSpec { name: Some("once".into()), at: Some("2026-12-07T11:00".into()), ..Default::default() },
            Input::Default,
            t0,
        )
        .await
        .unwrap();
        assert_eq!(once.upcoming.iter().map(|f| f.local.as_str()).collect::<Vec<_>>(), vec!["Mon 2026-12-07 11:00:00 UTC"]);
        ticker.tick(w.db(), &Quiet, &(ms("2026-12-07T11:00:00.5Z"))).await.unwrap();
        ticker.tick(w.db(), &Quiet, &(ms("2026-12-07T12:00:00Z"))).await.unwrap();
        assert_eq!(w.fired(&once.id).await.len(), 1);
        let done = schedules::detail(w.db(), &w.alice, &once.id, t0).await.unwrap().schedule;
        assert_eq!((done.state, done.next_fire_at_ms), (ScheduleState::Done, None));

        // An edit moves the next fire time, in the new zone.
        let edited = schedules::update(
            w.db(),
            &w.alice,
            &id,
            ScheduleSpec { cron: Some("0 2 * * *".into()), time_zone: Some("Asia/Tokyo".into()), ..Default::default() },
            t0 + 50_000,
        )
        .await
        .unwrap();
        assert_eq!(edited.next_fire_at_ms, Some(ms("2026-12-08T02:00:00+09:00")));
        assert_eq!(edited.upcoming[0].local, "Tue 2026-12-08 02:00:00 JST");
        assert_eq!(edited.overlap, Overlap::Allow, "fields left out keep their value");

        // Deleting keeps the jobs it submitted.
        schedules::delete(w.db(), &w.store, &w.alice, &id).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("select count(*) from jobs").fetch_one(&w.db().pool).await.unwrap();
        // 10 s, 40 s, and the ticks at 11:00:00.5 and 12:00 (each a catch-up of the latest
        // 10 s fire time), and the single run.
        assert_eq!(n, 5, "{engine:?}");
    }
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let w = world(Engine::Sqlite).await;
    let t0 = ms(T0);
    let refuse = |spec: ScheduleSpec| {
        let w = &w;
        async move { schedules::create(&w.to(), &w.alice, "scorer", spec, Input::Default, t0).await.unwrap_err() }
    };
    let code = |e: &ServiceError| (e.status(), e.code());
    let e = refuse(ScheduleSpec { cron: Some("0 2 * *".into()), ..Default::default() }).await;
    assert_eq!(code(&e), (422, "bad_timing"));
    assert!(e.public_message().contains("5 fields"), "{e}");
    let e = refuse(ScheduleSpec { cron: Some("0 2 * * *".into()), time_zone: Some("Mars/Base".into()), ..Default::default() }).await;
    assert!(e.public_message().contains("unknown time zone"), "{e}");
    let e = refuse(ScheduleSpec { cron: Some("0 2 * * *".into()), at: Some("2027-01-01T00:00".into()), ..Default::default() }).await;
    assert!(e.public_message().contains("not both"), "{e}");
    let e = refuse(ScheduleSpec { at: Some("2026-12-07T09:00".into()), ..Default::default() }).await;
    assert!(e.public_message().contains("has passed"), "{e}");
    let e = refuse(ScheduleSpec { cron: Some("0 2 * * *".into()), deadline_s: Some(10 * 86_400), ..Default::default() }).await;
    assert_eq!(code(&e), (422, "bad_deadline"));
    let e = schedules::create(
        &w.to(),
        &w.bob,
        "scorer",
        ScheduleSpec { cron: Some("0 2 * * *".into()), ..Default::default() },
        Input::Default,
        t0,
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), (404, "not_found"), "another user's application is not found");
    assert!(schedules::list(w.db(), &w.alice, t0).await.unwrap().is_empty(), "nothing was created");

    let id = w.schedule(ScheduleSpec { name: Some("nightly".into()), cron: Some("0 2 * * *".into()), ..Default::default() }, t0).await;
    let dup = refuse(ScheduleSpec { name: Some("nightly".into()), cron: Some("0 3 * * *".into()), ..Default::default() }).await;
    assert_eq!(code(&dup), (409, "name_taken"));
    // Another user sees nothing of it, and cannot change it.
    assert_eq!(code(&schedules::detail(w.db(), &w.bob, &id, t0).await.unwrap_err()), (404, "not_found"));
    assert_eq!(code(&schedules::set_paused(w.db(), &w.bob, &id, true, t0).await.unwrap_err()), (404, "not_found"));
    assert_eq!(code(&schedules::delete(w.db(), &w.store, &w.bob, &id).await.unwrap_err()), (404, "not_found"));
    let bad_edit = schedules::update(w.db(), &w.alice, &id, ScheduleSpec { cron: Some("nonsense".into()), ..Default::default() }, t0).await;
    assert_eq!(code(&bad_edit.unwrap_err()), (422, "bad_timing"));
    let still = schedules::detail(w.db(), &w.alice, &id, t0).await.unwrap().schedule;
    assert_eq!(still.cron.as_deref(), Some("0 2 * * *"), "a refused edit changes nothing");
}

#[tokio::test]
async fn a_deleted_application_pauses_its_schedules() {
    let w = world(Engine::Sqlite).await;
    let t0 = ms(T0);
    let id = w.schedule(every(10, Overlap::Allow, 60), t0).await;
    assert!(apps::delete(w.db(), &w.app, &w.alice.id).await.unwrap());
    let mut ticker = Ticker::new(3);
    let tick = ticker.tick(w.db(), &Quiet, &(t0 + 10_001)).await.unwrap();
    assert_eq!((tick.fired, tick.skipped), (0, 1));
    let s = schedules::detail(w.db(), &w.alice, &id, t0).await.unwrap();
    assert_eq!(s.schedule.state, ScheduleState::Paused);
    assert!(s.runs[0].note.contains("application was deleted"), "{:?}", s.runs);
}

#[tokio::test]
async fn deleting_an_account_takes_its_schedules_and_their_inputs() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let admin = users::create(w.db(), "root@example.org", "a long password", None, Role::Admin).await.unwrap();
        // A schedule with its own (small, so kept in the database) CSV, and one that ran.
        let csv = "a,b\n1,2\n".to_string();
        let received = aiedge_store::artifacts::Received::Inline { text: csv, sha256: String::new() };
        let spec = ScheduleSpec { name: Some("own csv".into()), cron: Some("*/10 * * * * *".into()), ..Default::default() };
        let own =
            schedules::create(&w.to(), &w.alice, "scorer", spec, Input::Sent { received, name: "mine.csv".into() }, t0).await.unwrap();
        assert_eq!(own.input_name, "mine.csv");
        Ticker::new(3).tick(w.db(), &Quiet, &(t0 + 10_001)).await.unwrap();
        assert_eq!(w.fired(&own.id).await.len(), 1);

        let deleted = aiedge_services::accounts::delete(w.db(), &w.store, &Quiet, &admin, &w.alice.id).await.unwrap();
        assert_eq!(deleted.schedules, 1, "{engine:?}");
        for table in ["schedules", "schedule_runs", "inline_artifacts"] {
            let (n,): (i64,) = sqlx::query_as(&format!("select count(*) from {table}")).fetch_one(&w.db().pool).await.unwrap();
            assert_eq!(n, 0, "{engine:?}: {table} left behind");
        }
    }
}

#[tokio::test]
async fn an_edit_back_to_a_fire_time_that_ran_does_not_run_it_again() {
    for engine in ENGINES {
        let w = world(engine).await;
        let t0 = ms(T0);
        let id = w.schedule(every(10, Overlap::Allow, 60), t0).await;
        let mut ticker = Ticker::new(3);
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 10_001)).await.unwrap().fired, 1);
        // Edited with a clock that reads 9 s (another replica's, or a test's): its next fire
        // time is 10 s again, which already ran.
        let spec = ScheduleSpec { cron: Some("*/10 * * * * *".into()), ..Default::default() };
        let edited = schedules::update(w.db(), &w.alice, &id, spec, t0 + 9_000).await.unwrap();
        assert_eq!(edited.next_fire_at_ms, Some(t0 + 10_000));
        let again = ticker.tick(w.db(), &Quiet, &(t0 + 10_500)).await.unwrap();
        assert_eq!(again.fired, 0, "{engine:?}");
        assert_eq!(w.fired(&id).await.len(), 1);
        // ...and it carries on at 20 s.
        assert_eq!(ticker.tick(w.db(), &Quiet, &(t0 + 20_001)).await.unwrap().fired, 1);
        let (n,): (i64,) = sqlx::query_as("select count(*) from jobs").fetch_one(&w.db().pool).await.unwrap();
        assert_eq!(n, 2, "{engine:?}");
    }
}
