//! Schedules: jobs that run by themselves at the times a user sets.
//!
//! A schedule has fire times (from a cron expression in a time zone, or one single time). The
//! server's ticker looks at the schedules whose next fire time has come and, for each, asks
//! [`plan`] what to do: fire the latest fire time that has come if it is still within the
//! starting deadline (at most one catch-up run after a gap, never a burst), count the ones
//! that were missed, and move to the first fire time after now. [`on_overlap`] then says
//! whether the run starts given the previous one. Both are pure: the ticker passes the time,
//! so tests move the clock instead of waiting.
//!
//! The fire times themselves (cron parsing, time zones, daylight saving) are in [`timing`],
//! compiled on the server only (feature `cron`): the browser gets them already computed.

use serde::{Deserialize, Serialize};

use crate::{JobStatus, Overlap, Pool, RunOutcome};

#[cfg(feature = "cron")]
pub mod timing;

/// Starting deadline when the user names none: a run up to an hour late still starts (a
/// nightly job after a short outage); older fire times are only recorded as missed.
pub const DEFAULT_DEADLINE_S: u64 = 3600;
/// The longest starting deadline a schedule may have.
pub const MAX_DEADLINE_S: u64 = 7 * 24 * 3600;
/// Fire times counted one by one when a gap is recorded as missed; past this the count says
/// "at least".
pub const MAX_MISSED_COUNTED: u64 = 100_000;
/// Fire times shown ahead of a schedule.
pub const UPCOMING: usize = 5;

/// The fire times of a schedule, as instants in unix milliseconds.
pub trait FireTimes {
    /// The first fire time strictly after `t`, if there is one.
    fn next_after(&self, t: i64) -> Option<i64>;
    /// The latest fire time at or before `t`, if there is one.
    fn last_at_or_before(&self, t: i64) -> Option<i64>;
}

/// What the ticker does with a schedule whose fire time `due` has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The fire time to run now, if any: the latest that has come, if within the deadline.
    pub fire: Option<i64>,
    /// Fire times that came and are not run: the first of them and how many.
    pub missed: Option<Missed>,
    /// The schedule's next fire time after this; `None` when it has no more.
    pub next: Option<i64>,
}

/// A run of fire times that were not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missed {
    pub first: i64,
    pub last: i64,
    /// How many (at most [`MAX_MISSED_COUNTED`]).
    pub count: u64,
}

/// The plan for a schedule whose stored next fire time `due` is at or before `now`.
///
/// Only the latest fire time that has come may run, and only if it came at most `deadline_ms`
/// ago; every earlier one (and the latest too, when it is past the deadline) is missed. The
/// next fire time is the first after `now`, so a plan carried out twice is the same plan.
pub fn plan(times: &impl FireTimes, due: i64, now: i64, deadline_ms: i64) -> Plan {
    let after_due = times.next_after(due);
    let (latest, next) = if after_due.is_none_or(|t| t > now) {
        // The usual tick: `due` is the only fire time that has come, and the one after it is
        // the next (one search instead of two).
        (due, after_due)
    } else {
        // `due` is a fire time that has come, so there is a latest one at or after it.
        (times.last_at_or_before(now).filter(|t| *t >= due).unwrap_or(due), times.next_after(now))
    };
    let fire = (now - latest <= deadline_ms).then_some(latest);
    // Missed: every fire time from `due` up to `latest` (exclusive), and `latest` itself if it
    // does not run.
    let mut count = 0;
    let mut last = None;
    let mut t = Some(due);
    while let Some(at) = t.filter(|at| *at < latest || (*at == latest && fire.is_none())) {
        count += 1;
        last = Some(at);
        if count >= MAX_MISSED_COUNTED || at == latest {
            break;
        }
        t = times.next_after(at);
    }
    let missed = last.map(|last| Missed { first: due, last, count });
    Plan { fire, missed, next }
}

/// What a fire time does given the previous run's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOverlap {
    /// Submit the new job.
    Fire,
    /// Submit nothing; record the fire time as skipped.
    Skip,
    /// Cancel the previous job, then submit the new one.
    ReplaceThenFire,
}

/// The overlap rule: only a previous job that has not ended overlaps.
pub fn on_overlap(policy: Overlap, previous: Option<JobStatus>) -> OnOverlap {
    let live = previous.is_some_and(|s| !s.is_terminal());
    match (policy, live) {
        (_, false) | (Overlap::Allow, true) => OnOverlap::Fire,
        (Overlap::Skip, true) => OnOverlap::Skip,
        (Overlap::Replace, true) => OnOverlap::ReplaceThenFire,
    }
}

/// Whether a schedule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ScheduleState {
    /// Fires at its next fire time.
    Active,
    /// Paused by its owner: fire times pass as missed (one catch-up run on resume if within
    /// the deadline).
    Paused,
    /// Has no more fire times (a single run that has fired, or a cron that matches no future
    /// date).
    Done,
}

impl ScheduleState {
    /// The word the API sends (serde) and the pages show.
    pub const fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Active => "active",
            ScheduleState::Paused => "paused",
            ScheduleState::Done => "done",
        }
    }
}

/// A fire time, with the wall-clock time it is in the schedule's zone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FireTime {
    pub at_ms: i64,
    /// E.g. `Mon 2026-12-07 02:00:00 CET`.
    pub local: String,
}

/// A schedule as its page and the API show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub owner_email: String,
    pub app_id: String,
    pub app_name: String,
    /// The cron expression (5 fields, or 6 with seconds first), when the schedule repeats.
    pub cron: Option<String>,
    /// The single fire time, when it does not.
    pub once_at_ms: Option<i64>,
    /// The IANA time zone the expression is read in, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// The fire times in words, e.g. "At 02:00 every day".
    pub description: String,
    pub overlap: Overlap,
    /// A fire time that comes while the server is down or the schedule paused still runs if at
    /// most this late (at most one such catch-up run).
    pub deadline_s: u64,
    pub pool: Pool,
    /// "default input" or the name of the CSV stored with the schedule.
    pub input_name: String,
    pub state: ScheduleState,
    pub next_fire_at_ms: Option<i64>,
    /// The next fire times (up to five) in the schedule's zone; none while paused or done.
    pub upcoming: Vec<FireTime>,
    pub last_job_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One fire time of a schedule and what became of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRunView {
    pub fire_at_ms: i64,
    /// The fire time in the schedule's zone.
    pub local: String,
    pub outcome: RunOutcome,
    /// How many fire times the row stands for (more than one for a gap of missed ones).
    pub count: u64,
    /// Why, in words: "submitted", "the previous run (job …) was still running", ...
    pub note: String,
    /// When the server acted on the fire time (its lateness is `recorded_at_ms - fire_at_ms`).
    pub recorded_at_ms: i64,
    pub job_id: Option<String>,
    pub job_status: Option<JobStatus>,
    /// Queued → finished of the job, once it has ended.
    pub run_ms: Option<i64>,
}

/// A schedule's page: the schedule and its latest runs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDetail {
    pub schedule: ScheduleView,
    pub runs: Vec<ScheduleRunView>,
}

/// What a user asks for when creating or editing a schedule. Missing fields keep their
/// current value (edits) or take the default (creation).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleSpec {
    pub name: Option<String>,
    /// A cron expression: `min hour day-of-month month day-of-week`, optionally with seconds
    /// first; `L`, `W`, `#` and `@daily`-style names are understood. Give this or `at`.
    pub cron: Option<String>,
    /// A single fire time: `2026-12-14T09:00` (in `time_zone`) or RFC 3339 with an offset.
    pub at: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin` (default `UTC`).
    pub time_zone: Option<String>,
    /// `skip` (default), `allow` or `replace`.
    pub overlap: Option<Overlap>,
    /// Starting deadline in seconds (default 3600, at most 7 days).
    pub deadline_s: Option<u64>,
    /// `shared` (default) or `own`.
    pub pool: Option<Pool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fire times every `every` ms from 0.
    struct Every(i64);
    impl FireTimes for Every {
        fn next_after(&self, t: i64) -> Option<i64> {
            Some((t.div_euclid(self.0) + 1) * self.0)
        }
        fn last_at_or_before(&self, t: i64) -> Option<i64> {
            Some(t.div_euclid(self.0) * self.0)
        }
    }

    /// One fire time.
    struct Once(i64);
    impl FireTimes for Once {
        fn next_after(&self, t: i64) -> Option<i64> {
            (t < self.0).then_some(self.0)
        }
        fn last_at_or_before(&self, t: i64) -> Option<i64> {
            (t >= self.0).then_some(self.0)
        }
    }

    #[test]
    fn on_time_fires_and_moves_on() {
        let p = plan(&Every(1000), 5000, 5003, 60_000);
        assert_eq!(p, Plan { fire: Some(5000), missed: None, next: Some(6000) });
    }

    #[test]
    fn a_plan_carried_out_twice_is_the_same() {
        // A second tick that still sees the old `due` (a race, a retry) gets the same fire
        // time, which the store's unique (schedule, fire time) then refuses.
        assert_eq!(plan(&Every(1000), 5000, 5003, 60_000), plan(&Every(1000), 5000, 5003, 60_000));
    }

    #[test]
    fn a_gap_inside_the_deadline_runs_once_and_counts_the_rest() {
        // Down from 5 s to 9.5 s: 5, 6, 7, 8, 9 came; only 9 runs.
        let p = plan(&Every(1000), 5000, 9500, 60_000);
        assert_eq!(p.fire, Some(9000));
        assert_eq!(p.missed, Some(Missed { first: 5000, last: 8000, count: 4 }));
        assert_eq!(p.next, Some(10_000));
    }

    #[test]
    fn a_gap_past_the_deadline_runs_nothing() {
        // Nightly at t=0, the server is back 2 h later with a 1 h deadline.
        let day = 86_400_000;
        let p = plan(&Every(day), 0, 2 * 3_600_000, 3_600_000);
        assert_eq!(p.fire, None);
        assert_eq!(p.missed, Some(Missed { first: 0, last: 0, count: 1 }));
        assert_eq!(p.next, Some(day));
        // ...and exactly at the deadline it still runs.
        assert_eq!(plan(&Every(day), 0, 3_600_000, 3_600_000).fire, Some(0));
    }

    #[test]
    fn a_long_gap_counts_up_to_the_limit() {
        let p = plan(&Every(1), 0, 10 * MAX_MISSED_COUNTED as i64, 0);
        assert_eq!(p.missed.map(|m| m.count), Some(MAX_MISSED_COUNTED));
    }

    #[test]
    fn a_single_run_fires_once_then_is_done() {
        assert_eq!(plan(&Once(7000), 7000, 7100, 1000), Plan { fire: Some(7000), missed: None, next: None });
        let late = plan(&Once(7000), 7000, 9000, 1000);
        assert_eq!((late.fire, late.next), (None, None));
        assert_eq!(late.missed.map(|m| m.count), Some(1));
    }

    #[test]
    fn state_words_match_serde() {
        for s in [ScheduleState::Active, ScheduleState::Paused, ScheduleState::Done] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn overlap_policies() {
        use JobStatus::*;
        for policy in Overlap::ALL {
            // Nothing before, or the last run has ended: always fire.
            assert_eq!(on_overlap(*policy, None), OnOverlap::Fire);
            for ended in [Succeeded, Failed, Cancelled] {
                assert_eq!(on_overlap(*policy, Some(ended)), OnOverlap::Fire);
            }
        }
        for live in [Queued, Dispatched, Running] {
            assert_eq!(on_overlap(Overlap::Skip, Some(live)), OnOverlap::Skip);
            assert_eq!(on_overlap(Overlap::Allow, Some(live)), OnOverlap::Fire);
            assert_eq!(on_overlap(Overlap::Replace, Some(live)), OnOverlap::ReplaceThenFire);
        }
    }
}
