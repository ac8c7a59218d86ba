//! Fire times from what people write: a cron expression (croner: 5 fields, or 6 with seconds
//! first; `L`, `W`, `#`, `@daily`) or a single local time, read in an IANA time zone
//! (chrono-tz, compiled in, so a server without a zoneinfo directory reads them the same).
//!
//! Daylight saving follows croner: a fixed time that a spring-forward skips (02:30 on that
//! day) fires at the first instant after the gap; a time that a fall-back repeats fires once,
//! at its first occurrence.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use super::{FireTime, FireTimes};

/// Why an expression, a time or a zone was refused; the message is for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingError(pub String);

impl fmt::Display for TimingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimingError {}

/// A schedule's fire times.
#[derive(Clone, Debug)]
pub struct Timing {
    zone: Tz,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Cron(Box<Cron>),
    Once(i64),
}

/// The IANA zone `name` names (`UTC` included).
pub fn zone(name: &str) -> Result<Tz, TimingError> {
    Tz::from_str(name.trim()).map_err(|_| {
        TimingError(format!("unknown time zone {:?}: use an IANA name such as Europe/Berlin, America/New_York or UTC", name.trim()))
    })
}

impl Timing {
    /// Fire times of the cron expression `expr` in `zone`.
    pub fn cron(expr: &str, zone_name: &str) -> Result<Self, TimingError> {
        let zone = zone(zone_name)?;
        let expr = expr.trim();
        // croner takes `,,` as a list of nothing, which no time matches: a search until the
        // end of its calendar (seconds of CPU). Refused here instead.
        if expr.split_whitespace().any(|field| field.split(',').any(str::is_empty)) {
            return Err(TimingError(format!("not a cron expression ({expr:?} has an empty item in a list: write e.g. `0,30`)")));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expr).map_err(|e| {
            TimingError(format!(
                "not a cron expression ({e}): write 5 fields (minute hour day-of-month month day-of-week, e.g. `0 2 * * *` for \
                 02:00 every day) or 6 with seconds first (e.g. `*/10 * * * * *`)"
            ))
        })?;
        Ok(Timing { zone, kind: Kind::Cron(Box::new(cron)) })
    }

    /// One fire time: `at` is a local time in `zone` (`2026-12-14T09:00`, seconds optional, a
    /// space instead of the `T` too) or an RFC 3339 instant with its own offset.
    pub fn once(at: &str, zone_name: &str) -> Result<Self, TimingError> {
        let zone = zone(zone_name)?;
        let at = at.trim();
        let instant = if let Ok(fixed) = DateTime::parse_from_rfc3339(at) {
            fixed.timestamp_millis()
        } else {
            let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(at, f).ok())
                .ok_or_else(|| TimingError(format!("not a time: {at:?} (write e.g. 2026-12-14T09:00)")))?;
            match zone.from_local_datetime(&naive) {
                LocalResult::Single(t) => t.timestamp_millis(),
                // A time the clocks pass twice: the first.
                LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
                LocalResult::None => {
                    return Err(TimingError(format!("{at} does not exist in {zone}: the clocks skip it (daylight saving)")))
                }
            }
        };
        Ok(Timing { zone, kind: Kind::Once(instant) })
    }

    /// The timing of a stored schedule.
    pub fn stored(cron: Option<&str>, once_at_ms: Option<i64>, zone_name: &str) -> Result<Self, TimingError> {
        match (cron, once_at_ms) {
            (Some(expr), _) => Self::cron(expr, zone_name),
            (None, Some(at)) => Ok(Timing { zone: zone(zone_name)?, kind: Kind::Once(at) }),
            (None, None) => Err(TimingError("a schedule needs a cron expression or a time".into())),
        }
    }

    /// The single fire time, for a schedule that does not repeat.
    pub fn once_at(&self) -> Option<i64> {
        match self.kind {
            Kind::Once(at) => Some(at),
            Kind::Cron(_) => None,
        }
    }

    /// The zone's canonical name.
    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// The next `n` fire times after `t`, with their local times.
    pub fn upcoming(&self, t: i64, n: usize) -> Vec<FireTime> {
        std::iter::successors(self.next_after(t), |at| self.next_after(*at))
            .take(n)
            .map(|at_ms| FireTime { at_ms, local: self.local(at_ms) })
            .collect()
    }

    /// `ms` as a wall-clock time in the schedule's zone, e.g. `Mon 2026-12-07 02:00:00 CET`.
    pub fn local(&self, ms: i64) -> String {
        match self.instant(ms) {
            Some(t) => t.format("%a %Y-%m-%d %H:%M:%S %Z").to_string(),
            None => ms.to_string(),
        }
    }

    /// The fire times in words.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Cron(cron) => cron.describe(),
            Kind::Once(at) => format!("Once, at {}", self.local(*at)),
        }
    }

    fn instant(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms).single().map(|t| t.with_timezone(&self.zone))
    }
}

impl FireTimes for Timing {
    fn next_after(&self, t: i64) -> Option<i64> {
        match &self.kind {
            Kind::Once(at) => (t < *at).then_some(*at),
            Kind::Cron(cron) => {
                // croner works in whole seconds: start from the second `t` is in, exclusive,
                // which is strictly after `t` for any fraction of it too.
                let from = self.instant(t.div_euclid(1000) * 1000)?;
                cron.find_next_occurrence(&from, false).ok().map(|next| next.timestamp_millis())
            }
        }
    }

    fn last_at_or_before(&self, t: i64) -> Option<i64> {
        match &self.kind {
            Kind::Once(at) => (t >= *at).then_some(*at),
            Kind::Cron(cron) => {
                let from = self.instant(t.div_euclid(1000) * 1000)?;
                cron.find_previous_occurrence(&from, true).ok().map(|last| last.timestamp_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()
    }

    #[test]
    fn five_and_six_fields() {
        let nightly = Timing::cron("0 2 * * *", "UTC").unwrap();
        assert_eq!(nightly.next_after(ms("2026-12-07T01:59:59.500Z")), Some(ms("2026-12-07T02:00:00Z")));
        assert_eq!(nightly.next_after(ms("2026-12-07T02:00:00Z")), Some(ms("2026-12-08T02:00:00Z")), "strictly after");
        let tens = Timing::cron("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(tens.next_after(ms("2026-12-07T10:00:03.250Z")), Some(ms("2026-12-07T10:00:10Z")));
        assert_eq!(tens.last_at_or_before(ms("2026-12-07T10:00:13.250Z")), Some(ms("2026-12-07T10:00:10Z")));
        assert_eq!(tens.last_at_or_before(ms("2026-12-07T10:00:10Z")), Some(ms("2026-12-07T10:00:10Z")), "inclusive");
    }

    #[test]
    fn last_weekday_and_nth() {
        // The last day of February 2027, then the second Monday of March 2027.
        let last = Timing::cron("0 9 L 2 *", "UTC").unwrap();
        assert_eq!(last.next_after(ms("2027-01-01T00:00:00Z")), Some(ms("2027-02-28T09:00:00Z")));
        let second_monday = Timing::cron("0 9 * * MON#2", "UTC").unwrap();
        assert_eq!(second_monday.next_after(ms("2027-03-01T00:00:00Z")), Some(ms("2027-03-08T09:00:00Z")));
    }

    #[test]
    fn a_zone_moves_the_instant() {
        let berlin = Timing::cron("0 2 * * *", "Europe/Berlin").unwrap();
        // Winter: UTC+1.
        assert_eq!(berlin.next_after(ms("2026-12-07T00:00:00Z")), Some(ms("2026-12-07T01:00:00Z")));
        assert_eq!(berlin.local(ms("2026-12-07T01:00:00Z")), "Mon 2026-12-07 02:00:00 CET");
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_once_after_the_gap() {
        // Europe/Berlin, 2027-03-28: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        let t = Timing::cron("30 2 * * *", "Europe/Berlin").unwrap();
        let before = ms("2027-03-27T12:00:00+01:00");
        let fires: Vec<i64> = t.upcoming(before, 3).iter().map(|f| f.at_ms).collect();
        assert_eq!(
            fires,
            vec![
                ms("2027-03-28T03:00:00+02:00"), // the first instant after the gap
                ms("2027-03-29T02:30:00+02:00"),
                ms("2027-03-30T02:30:00+02:00"),
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        // Europe/Berlin, 2027-10-31: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let t = Timing::cron("30 2 * * *", "Europe/Berlin").unwrap();
        let fires: Vec<i64> = t.upcoming(ms("2027-10-30T12:00:00+02:00"), 3).iter().map(|f| f.at_ms).collect();
        assert_eq!(
            fires,
            vec![ms("2027-10-31T02:30:00+02:00"), ms("2027-11-01T02:30:00+01:00"), ms("2027-11-02T02:30:00+01:00")],
            "02:30 CEST only, not 02:30 CET an hour later"
        );
    }

    #[test]
    fn hourly_through_fall_back_keeps_both_real_hours() {
        // An interval schedule is about elapsed time: both 02:00s are real hours.
        let t = Timing::cron("0 * * * *", "Europe/Berlin").unwrap();
        let fires: Vec<String> = t.upcoming(ms("2027-10-31T00:30:00+02:00"), 4).iter().map(|f| f.local.clone()).collect();
        assert_eq!(fires.len(), 4);
        assert_eq!(fires[0], "Sun 2027-10-31 01:00:00 CEST");
        assert_eq!(fires[1], "Sun 2027-10-31 02:00:00 CEST");
    }

    #[test]
    fn once_in_a_zone() {
        let t = Timing::once("2026-12-14T09:00", "America/New_York").unwrap();
        assert_eq!(t.once_at(), Some(ms("2026-12-14T14:00:00Z")));
        assert_eq!(t.upcoming(0, 5).len(), 1);
        assert_eq!(Timing::once("2026-12-14T09:00:00+01:00", "UTC").unwrap().once_at(), Some(ms("2026-12-14T08:00:00Z")));
        let gap = Timing::once("2027-03-28T02:30", "Europe/Berlin").unwrap_err();
        assert!(gap.0.contains("does not exist"), "{gap}");
    }

    #[test]
    fn clear_errors() {
        let e = Timing::cron("0 2 * *", "UTC").unwrap_err();
        assert!(e.0.contains("5 fields"), "{e}");
        assert!(Timing::cron("61 * * * *", "UTC").is_err());
        let e = Timing::cron("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.0.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        assert!(Timing::once("next monday", "UTC").unwrap_err().0.contains("not a time"));
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    /// What people (and fuzzers) type: none of it panics, and a date that never comes is
    /// answered quickly rather than searched for until the end of time.
    #[test]
    fn odd_expressions_neither_panic_nor_hang() {
        let start = std::time::Instant::now();
        for expr in [
            "0 0 30 2 *",
            "0 0 31 4 *",
            "*/999999999 * * * *",
            "0 0 0 0 0",
            "60 * * * * *",
            "* * * * * * *",
            "0 0 L W *",
            "0 0 * * 8#9",
            "0 0 * * MON#6",
            "@reboot",
            "@yearly",
            "-1 * * * *",
            "1-0 * * * *",
            "*/0 * * * *",
            ",,,, * * * *",
            "\u{0} * * * *",
            "٣ * * * *",
            "0 0 29 2 *",
        ] {
            if let Ok(t) = Timing::cron(expr, "UTC") {
                let _ = t.next_after(0);
                let _ = t.last_at_or_before(4_102_444_800_000);
                let _ = t.upcoming(0, 5);
                let _ = t.describe();
            }
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
        assert!(Timing::cron(",,,, * * * *", "UTC").unwrap_err().0.contains("empty item"));
    }

    /// Random expressions from the pieces cron is made of (a fixed seed: the same every run).
    #[test]
    fn random_expressions_neither_panic_nor_hang() {
        const PIECES: &[&str] =
            &["*", "*/7", "1,2", "0", "59", "L", "5W", "LW", "MON#2", "5L", "1-5", "5-1", "JAN", "SUN", "*/0", "?", "1/3", "30", "31", "2"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let start = std::time::Instant::now();
        for _ in 0..2000 {
            let fields = 5 + (next() % 2) as usize;
            let expr: Vec<&str> = (0..fields).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            let expr = expr.join(" ");
            let one = std::time::Instant::now();
            if let Ok(t) = Timing::cron(&expr, "Europe/Berlin") {
                let _ = t.upcoming(1_800_000_000_000, 5);
                let _ = t.last_at_or_before(1_800_000_000_000);
            }
            // A hang, not a speed check: generous for a debug build on a busy machine (one
            // expression took 2.4 s there).
            assert!(one.elapsed() < std::time::Duration::from_secs(15), "{expr:?} took {:?}", one.elapsed());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(300), "took {:?}", start.elapsed());
    }
}
