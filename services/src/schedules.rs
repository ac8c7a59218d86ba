//! Use cases of schedules: what a user does with one (create, edit, pause, resume, delete,
//! look), and the [`Ticker`] that turns fire times into jobs.
//!
//! Every function takes the time as `now` (unix ms): the server passes the clock, tests pass
//! whatever time they want to be at.

use std::collections::HashMap;
use std::sync::Arc;

use aiedge_core::schedules::timing::Timing;
use aiedge_core::schedules::{
    self as rules, FireTimes, OnOverlap, ScheduleDetail, ScheduleRunView, ScheduleSpec, ScheduleState, ScheduleView,
};
use aiedge_core::views::UserView;
use aiedge_core::{JobStatus, Overlap, Pool, RunOutcome};
use aiedge_store::artifacts::{self, ArtifactStore};
use aiedge_store::jobs::QueuedRow;
use aiedge_store::schedules::{self as store, Due, Fired, Firing, RunRow, Stored};
use aiedge_store::{apps, Db};

use crate::jobs::{Input, Intakes};
use crate::{Events, Result, ServiceError};

/// Schedules one account may have.
pub const MAX_PER_USER: i64 = 100;
/// Runs a schedule's page lists.
pub const RUNS_SHOWN: i64 = 100;

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

/// The timing a spec asks for: a cron expression or a single time (not both), in a zone.
fn timing_of(cron: Option<&str>, at: Option<&str>, zone: &str) -> Result<Timing> {
    let bad = |e: rules::timing::TimingError| invalid("bad_timing", e.0);
    match (cron.map(str::trim).filter(|c| !c.is_empty()), at.map(str::trim).filter(|a| !a.is_empty())) {
        (Some(_), Some(_)) => Err(invalid("bad_timing", "give a cron expression or a time, not both")),
        (Some(expr), None) => Timing::cron(expr, zone).map_err(bad),
        (None, Some(at)) => Timing::once(at, zone).map_err(bad),
        (None, None) => Err(invalid("bad_timing", "give a cron expression (`cron`) or a single time (`at`)")),
    }
}

/// The first fire time after `now`, or why there is none.
fn first_fire(timing: &Timing, now: i64) -> Result<i64> {
    timing.next_after(now).ok_or_else(|| match timing.once_at() {
        Some(at) => invalid("bad_timing", format!("{} has passed", timing.local(at))),
        None => invalid("bad_timing", "this expression matches no date in the future"),
    })
}

fn name_taken(name: &str) -> ServiceError {
    ServiceError::Conflict { code: "name_taken", message: format!("you already have a schedule named {name:?}") }
}

fn deadline_ms(deadline_s: Option<u64>) -> Result<i64> {
    let s = deadline_s.unwrap_or(rules::DEFAULT_DEADLINE_S);
    if s > rules::MAX_DEADLINE_S {
        return Err(invalid("bad_deadline", format!("the starting deadline is at most {} seconds (7 days)", rules::MAX_DEADLINE_S)));
    }
    Ok(s as i64 * 1000)
}

/// The next fire times of what a user is typing, for the form's preview.
pub fn preview(cron: Option<&str>, at: Option<&str>, zone: &str, now: i64) -> Result<(String, Vec<rules::FireTime>)> {
    let timing = timing_of(cron, at, zone)?;
    first_fire(&timing, now)?;
    Ok((timing.describe(), timing.upcoming(now, rules::UPCOMING)))
}

/// Creates a schedule of one of the caller's applications on `input` (checked against the
/// model like a job's); it first fires at the first fire time after `now`.
#[tracing::instrument(skip_all, fields(user_id = %caller.id))]
pub async fn create(
    to: &Intakes<'_>,
    caller: &UserView,
    application: &str,
    spec: ScheduleSpec,
    input: Input,
    now: i64,
) -> Result<ScheduleView> {
    let app = apps::find(to.db, &caller.id, application.trim()).await?.ok_or(ServiceError::NotFound("application"))?;
    let zone = spec.time_zone.as_deref().unwrap_or("UTC");
    let timing = timing_of(spec.cron.as_deref(), spec.at.as_deref(), zone)?;
    let next = first_fire(&timing, now)?;
    let name = match spec.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => format!("{} {}", app.view.name, spec.cron.as_deref().or(spec.at.as_deref()).unwrap_or_default().trim()),
    };
    aiedge_core::names::check_name(&name).map_err(|e| invalid("bad_name", e))?;
    let deadline = deadline_ms(spec.deadline_s)?;
    if store::count_of(to.db, &caller.id).await? >= MAX_PER_USER {
        return Err(ServiceError::Conflict {
            code: "too_many_schedules",
            message: format!("an account has at most {MAX_PER_USER} schedules"),
        });
    }
    let id = uuid::Uuid::new_v4().to_string();
    let key = format!("schedules/{id}/input.csv");
    let (input_key, input_name, rows, inline, stored) = match input {
        Input::Default => {
            if app.default_input_key.is_none() {
                return Err(invalid("missing_input", "this application has no default input: attach a CSV as `input`"));
            }
            (None, "default input".to_string(), None, None, false)
        }
        Input::Sent { received, name } => {
            let sent = crate::jobs::take_input(to.artifacts, received, app.features, &key).await?;
            (Some(sent.key), name, sent.rows, sent.inline, sent.stored)
        }
    };
    let once_at = timing.once_at();
    let new = store::NewSchedule {
        id: &id,
        owner_id: &caller.id,
        app_id: &app.view.id,
        timing: store::Timing {
            name: &name,
            cron: spec.cron.as_deref().filter(|_| once_at.is_none()).map(str::trim),
            once_at,
            time_zone: timing.zone_name(),
            overlap: spec.overlap.unwrap_or(Overlap::Skip),
            deadline_ms: deadline,
            pool: spec.pool.unwrap_or(Pool::Shared),
            next_fire_at: Some(next),
        },
        input_key: input_key.as_deref(),
        input_name: &input_name,
        input_rows: rows,
        inline_input: inline.as_deref(),
        now,
    };
    if let Err(e) = store::create(to.db, new).await {
        if stored {
            let _ = to.artifacts.delete(&key).await;
        }
        return Err(if store::is_name_taken(&e) { name_taken(&name) } else { e.into() });
    }
    tracing::info!(schedule_id = %id, app_id = %app.view.id, "schedule created");
    let stored = store::get(to.db, &id).await?.ok_or(ServiceError::NotFound("schedule"))?;
    view(&stored, now)
}

/// The caller's schedule `id` (admins: anyone's); someone else's looks missing.
async fn visible(db: &Db, caller: &UserView, id: &str) -> Result<Stored> {
    store::get(db, id).await?.filter(|s| aiedge_core::may_manage(caller, &s.owner_id)).ok_or(ServiceError::NotFound("schedule"))
}

/// Changes a schedule. Fields the spec leaves out keep their value; a new expression, time or
/// zone moves the next fire time to the first after `now`.
#[tracing::instrument(skip_all, fields(schedule_id = %id, user_id = %caller.id))]
pub async fn update(db: &Db, caller: &UserView, id: &str, spec: ScheduleSpec, now: i64) -> Result<ScheduleView> {
    let current = visible(db, caller, id).await?;
    let retimed = spec.cron.is_some() || spec.at.is_some() || spec.time_zone.is_some();
    let zone = spec.time_zone.clone().unwrap_or_else(|| current.time_zone.clone());
    let (timing, next) = if retimed {
        let timing = if spec.cron.is_none() && spec.at.is_none() {
            // Only the zone changes: the same expression (or instant) read in the new zone.
            match (&current.cron, current.once_at) {
                (Some(expr), _) => timing_of(Some(expr), None, &zone)?,
                _ => return Err(invalid("bad_timing", "a single-run schedule's time is changed with `at` (in the new zone)")),
            }
        } else {
            timing_of(spec.cron.as_deref(), spec.at.as_deref(), &zone)?
        };
        let next = first_fire(&timing, now)?;
        (timing, Some(next))
    } else {
        let timing =
            Timing::stored(current.cron.as_deref(), current.once_at, &current.time_zone).map_err(|e| invalid("bad_timing", e.0))?;
        (timing, current.next_fire_at)
    };
    let name = spec.name.as_deref().map(str::trim).unwrap_or(&current.name).to_string();
    aiedge_core::names::check_name(&name).map_err(|e| invalid("bad_name", e))?;
    let deadline = if spec.deadline_s.is_some() { deadline_ms(spec.deadline_s)? } else { current.deadline_ms };
    let once_at = timing.once_at();
    let cron = match (&spec.cron, once_at) {
        (_, Some(_)) => None,
        (Some(expr), None) => Some(expr.trim().to_string()),
        (None, None) => current.cron.clone(),
    };
    let t = store::Timing {
        name: &name,
        cron: cron.as_deref(),
        once_at,
        time_zone: timing.zone_name(),
        overlap: spec.overlap.map_or_else(|| current.overlap(), Ok)?,
        deadline_ms: deadline,
        pool: spec.pool.map_or_else(|| current.pool(), Ok)?,
        next_fire_at: next,
    };
    match store::update(db, id, t, now).await {
        Ok(true) => {}
        Ok(false) => return Err(ServiceError::NotFound("schedule")),
        Err(e) if store::is_name_taken(&e) => return Err(name_taken(&name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!("schedule changed");
    view(&visible(db, caller, id).await?, now)
}

/// Pauses (`true`) or resumes a schedule. On resume, fire times that passed meanwhile are
/// missed, with one catch-up run if the latest is within the starting deadline.
#[tracing::instrument(skip_all, fields(schedule_id = %id, user_id = %caller.id, paused))]
pub async fn set_paused(db: &Db, caller: &UserView, id: &str, paused: bool, now: i64) -> Result<ScheduleView> {
    let current = visible(db, caller, id).await?;
    if current.paused_at.is_some() != paused {
        store::set_paused(db, id, paused.then_some(now), now).await?;
        tracing::info!(paused, "schedule paused or resumed");
    }
    view(&visible(db, caller, id).await?, now)
}

/// Deletes a schedule and its list of runs; the jobs it submitted stay. Its stored CSV goes
/// unless a job still waits to run on it (kept in the database, it goes in the same
/// transaction; as a file, it is left for the retention sweep then).
#[tracing::instrument(skip_all, fields(schedule_id = %id, user_id = %caller.id))]
pub async fn delete(db: &Db, artifacts: &dyn ArtifactStore, caller: &UserView, id: &str) -> Result<()> {
    visible(db, caller, id).await?;
    let Some(key) = store::delete(db, id).await? else { return Err(ServiceError::NotFound("schedule")) };
    if let Some(key) = key.filter(|k| !k.starts_with(artifacts::INLINE_PREFIX)) {
        if !store::input_in_use(db, &key).await? {
            let _ = artifacts.delete(&key).await;
        }
    }
    tracing::info!("schedule deleted");
    Ok(())
}

/// The caller's schedules, by name.
pub async fn list(db: &Db, caller: &UserView, now: i64) -> Result<Vec<ScheduleView>> {
    store::list(db, &caller.id).await?.iter().map(|s| view(s, now)).collect()
}

/// A schedule's page: the schedule and its latest runs.
pub async fn detail(db: &Db, caller: &UserView, id: &str, now: i64) -> Result<ScheduleDetail> {
    let stored = visible(db, caller, id).await?;
    let timing = stored_timing(&stored);
    let schedule = view_with(&stored, timing.as_ref(), now)?;
    let runs = store::runs(db, id, RUNS_SHOWN)
        .await?
        .into_iter()
        .map(|r| {
            let job_status = r.job_status.as_deref().and_then(|s| s.parse::<JobStatus>().ok());
            Ok(ScheduleRunView {
                local: timing.as_ref().map_or_else(|| r.fire_at.to_string(), |t| t.local(r.fire_at)),
                fire_at_ms: r.fire_at,
                outcome: r.outcome.parse::<RunOutcome>().map_err(|e| ServiceError::Storage(e.to_string()))?,
                count: u64::try_from(r.count).unwrap_or(1),
                note: r.note,
                recorded_at_ms: r.recorded_at,
                run_ms: r.job_created_at.zip(r.job_finished_at).map(|(c, f)| f - c),
                job_id: r.job_id,
                job_status,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ScheduleDetail { schedule, runs })
}

/// A stored schedule's timing (`None` for one this build cannot read: its view shows no
/// fire times, and the ticker pauses it with a run saying why).
fn stored_timing(s: &Stored) -> Option<Timing> {
    Timing::stored(s.cron.as_deref(), s.once_at, &s.time_zone).ok()
}

/// A stored schedule as pages and the API show it, with its next fire times from `now`.
fn view(s: &Stored, now: i64) -> Result<ScheduleView> {
    view_with(s, stored_timing(s).as_ref(), now)
}

/// [`view`] with its timing already parsed.
fn view_with(s: &Stored, timing: Option<&Timing>, now: i64) -> Result<ScheduleView> {
    let state = match (s.paused_at, s.next_fire_at) {
        (Some(_), _) => ScheduleState::Paused,
        (None, None) => ScheduleState::Done,
        (None, Some(_)) => ScheduleState::Active,
    };
    let upcoming = match (timing, state, s.next_fire_at) {
        (Some(t), ScheduleState::Active, Some(next)) => t.upcoming(next.max(now) - 1, rules::UPCOMING),
        _ => Vec::new(),
    };
    Ok(ScheduleView {
        id: s.id.clone(),
        name: s.name.clone(),
        owner_email: s.owner_email.clone(),
        app_id: s.app_id.clone(),
        app_name: s.app_name.clone(),
        cron: s.cron.clone(),
        once_at_ms: s.once_at,
        time_zone: s.time_zone.clone(),
        description: timing.map(Timing::describe).unwrap_or_default(),
        overlap: s.overlap()?,
        deadline_s: u64::try_from(s.deadline_ms / 1000).unwrap_or(0),
        pool: s.pool()?,
        input_name: s.input_name.clone(),
        state,
        next_fire_at_ms: s.next_fire_at.filter(|_| state == ScheduleState::Active),
        upcoming,
        last_job_id: s.last_job_id.clone(),
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
    })
}

/// Where the ticker reads the time: the system clock on the server, a fixed instant in tests
/// (an `i64` of unix ms is a clock that stands still).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        aiedge_store::now_ms()
    }
}

impl Clock for i64 {
    fn now_ms(&self) -> i64 {
        *self
    }
}

/// The longest sleep between ticks: how late a schedule created or edited to fire sooner than
/// the earliest known fire time can be.
pub const MAX_SLEEP_MS: i64 = 250;
/// The shortest: a schedule still due after a tick (a failed write) is retried, not spun on.
const MIN_SLEEP_MS: i64 = 20;

/// How long to sleep after a tick: until the earliest next fire time, within
/// [`MIN_SLEEP_MS`]..[`MAX_SLEEP_MS`].
pub async fn sleep_after_tick(db: &Db, clock: &dyn Clock) -> Result<std::time::Duration> {
    let wait = match store::next_due_at(db).await? {
        Some(at) => (at - clock.now_ms()).clamp(MIN_SLEEP_MS, MAX_SLEEP_MS),
        None => MAX_SLEEP_MS,
    };
    Ok(std::time::Duration::from_millis(wait as u64))
}

/// Due schedules read (and fired in one transaction) at a time.
const BATCH: i64 = 500;

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Jobs submitted.
    pub fired: u64,
    /// Fire times skipped by the overlap policy or for want of an application or input.
    pub skipped: u64,
    /// Fire times missed (server down, paused, past the deadline).
    pub missed: u64,
    /// Schedules another tick had already moved on.
    pub stale: u64,
    /// For each job submitted: from its fire time to its commit, by `clock`.
    pub lateness_ms: Vec<i64>,
}

/// A schedule's parsed timing, with what it was parsed from.
struct Parsed {
    cron: Option<String>,
    once_at: Option<i64>,
    zone: String,
    timing: Arc<Timing>,
}

/// Turns fire times that have come into jobs. Keeps the parsed expressions between ticks.
pub struct Ticker {
    max_attempts: u32,
    timings: HashMap<String, Parsed>,
}

impl Ticker {
    pub fn new(max_attempts: u32) -> Self {
        Ticker { max_attempts, timings: HashMap::new() }
    }

    /// Parses every active schedule's expression now, so that the first ticks after a start do
    /// not (10 000 expressions take about 0.1 s); returns how many.
    pub async fn warm_up(&mut self, db: &Db) -> Result<usize> {
        let active = store::active_timings(db).await?;
        let n = active.len();
        for (id, cron, once_at, zone) in active {
            // One that cannot be read is met again at its fire time, which says why.
            let _ = self.keep(id, cron, once_at, zone);
        }
        Ok(n)
    }

    /// Fires every active schedule whose next fire time is at or before `now`, by the rules
    /// of [`rules::plan`] and [`rules::on_overlap`]. Safe to run twice, and on two servers at
    /// once: each fire time becomes at most one job.
    pub async fn tick(&mut self, db: &Db, events: &dyn Events, clock: &dyn Clock) -> Result<Tick> {
        let now = clock.now_ms();
        let mut report = Tick::default();
        loop {
            let due = store::due(db, now, BATCH).await?;
            let read = due.len();
            let mut firings = Vec::with_capacity(read);
            let mut replaces = Vec::new();
            for d in &due {
                let (firing, replace) = self.decide(d, now);
                replaces.push(replace);
                firings.push(firing);
            }
            // Counted once recorded: a firing another tick got to first records nothing.
            let others: Vec<(u64, u64)> = firings
                .iter()
                .map(|f| {
                    let skipped = f.other.iter().filter(|r| r.outcome == RunOutcome::Skipped).count() as u64;
                    let missed = f.other.iter().filter(|r| r.outcome == RunOutcome::Missed).map(|r| r.count).sum::<u64>();
                    (skipped, missed)
                })
                .collect();
            let fire_times: Vec<Option<i64>> = firings.iter().map(|f| f.fired.as_ref().map(|(at, _)| *at)).collect();
            let results = store::fire(db, firings, now).await?;
            let committed = clock.now_ms();
            let mut submitted = false;
            for ((((fired, replace), d), fire_at), (skipped, missed)) in
                results.into_iter().zip(replaces).zip(&due).zip(fire_times).zip(others)
            {
                if fired != Fired::Stale {
                    report.skipped += skipped;
                    report.missed += missed;
                }
                match fired {
                    Fired::Stale => report.stale += 1,
                    Fired::Done(None) => {}
                    Fired::Done(Some(job)) => {
                        report.fired += 1;
                        submitted = true;
                        let late = committed - fire_at.unwrap_or(committed);
                        report.lateness_ms.push(late);
                        crate::metrics::schedule_lateness(late);
                        crate::metrics::job_submitted(&d.app_kind);
                        events.job_changed(&job);
                        if let Some(previous) = replace {
                            let by = format!("schedule {} (overlap: replace)", d.name);
                            if aiedge_store::jobs::cancel(db, &previous, &by).await? {
                                crate::metrics::job_cancelled();
                                events.job_changed(&previous);
                                events.job_ended(&previous);
                            }
                        }
                    }
                }
            }
            if submitted {
                events.dispatch_wanted();
            }
            if read < BATCH as usize {
                break;
            }
        }
        crate::metrics::schedule_runs(report.fired, report.skipped, report.missed);
        if report.fired + report.skipped + report.missed > 0 {
            tracing::debug!(fired = report.fired, skipped = report.skipped, missed = report.missed, "schedules ticked");
        }
        Ok(report)
    }

    /// The parsed timing of a due schedule (cached while its expression and zone stay).
    fn timing(&mut self, d: &Due) -> std::result::Result<Arc<Timing>, String> {
        if let Some(p) = self.timings.get(&d.id) {
            if p.cron == d.cron && p.once_at == d.once_at && p.zone == d.time_zone {
                return Ok(p.timing.clone());
            }
        }
        self.keep(d.id.clone(), d.cron.clone(), d.once_at, d.time_zone.clone())
    }

    /// Parses a schedule's timing and keeps it under its id.
    fn keep(&mut self, id: String, cron: Option<String>, once_at: Option<i64>, zone: String) -> std::result::Result<Arc<Timing>, String> {
        let timing = Arc::new(Timing::stored(cron.as_deref(), once_at, &zone).map_err(|e| e.0)?);
        if self.timings.len() > 100_000 {
            self.timings.clear();
        }
        self.timings.insert(id, Parsed { cron, once_at, zone, timing: timing.clone() });
        Ok(timing)
    }

    /// What to do with one due schedule; the job to cancel if it replaces one.
    fn decide(&mut self, d: &Due, now: i64) -> (Firing, Option<String>) {
        let mut firing =
            Firing { schedule_id: d.id.clone(), due: d.next_fire_at, next: None, pause: false, fired: None, other: Vec::new() };
        let skip = |fire_at: i64, note: String| RunRow { fire_at, outcome: RunOutcome::Skipped, count: 1, note };
        let timing = match self.timing(d) {
            Ok(t) => t,
            Err(e) => {
                // Written by another version, or a zone this build does not know: stop rather
                // than guess, and say why.
                firing.next = Some(d.next_fire_at);
                firing.pause = true;
                firing.other.push(skip(d.next_fire_at, format!("cannot read the schedule's timing ({e}); the schedule is paused")));
                return (firing, None);
            }
        };
        let plan = rules::plan(timing.as_ref(), d.next_fire_at, now, d.deadline_ms);
        firing.next = plan.next;
        if let Some(m) = plan.missed {
            let times =
                if m.count >= rules::MAX_MISSED_COUNTED { format!("{}+ fire times", m.count) } else { plural(m.count, "fire time") };
            let why = if plan.fire.is_some() {
                "only the latest one runs, once".to_string()
            } else {
                format!("past the starting deadline of {} s", d.deadline_ms / 1000)
            };
            firing.other.push(RunRow {
                fire_at: m.first,
                outcome: RunOutcome::Missed,
                count: m.count,
                note: format!(
                    "missed {times} from {} to {} (server down or schedule paused): {why}",
                    timing.local(m.first),
                    timing.local(m.last)
                ),
            });
        }
        let Some(fire_at) = plan.fire else { return (firing, None) };
        if d.app_deleted_at.is_some() {
            firing.pause = true;
            firing.next = Some(d.next_fire_at);
            firing.other.push(skip(fire_at, "the application was deleted; the schedule is paused".into()));
            return (firing, None);
        }
        let (input_key, input_rows) = match (&d.input_key, &d.default_input_key) {
            (Some(key), _) => (key.clone(), d.input_rows),
            (None, Some(key)) => (key.clone(), d.default_input_rows),
            (None, None) => {
                firing.other.push(skip(fire_at, "the application has no default input any more".into()));
                return (firing, None);
            }
        };
        let previous = d.last_job_status.as_deref().and_then(|s| s.parse::<JobStatus>().ok());
        let policy = d.overlap.parse::<Overlap>().unwrap_or(Overlap::Skip);
        let replace = match rules::on_overlap(policy, previous) {
            OnOverlap::Skip => {
                let job = d.last_job_id.as_deref().unwrap_or("?");
                firing.other.push(skip(fire_at, format!("the previous run (job {job}) has not ended (overlap: skip)")));
                return (firing, None);
            }
            OnOverlap::Fire => None,
            OnOverlap::ReplaceThenFire => d.last_job_id.clone(),
        };
        let pool = d.pool.parse::<Pool>().unwrap_or(Pool::Shared);
        let job = QueuedRow::new(
            &d.owner_id,
            &d.app_id,
            &input_key,
            &d.input_name,
            input_rows.and_then(|r| u64::try_from(r).ok()),
            self.max_attempts,
            pool,
            now,
        )
        .with_message(format!("submitted by schedule {} for {}", d.name, timing.local(fire_at)));
        firing.fired = Some((fire_at, job));
        (firing, replace)
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
