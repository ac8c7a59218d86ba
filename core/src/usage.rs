//! Usage analytics without I/O: which functionality a request is, the latency buckets the
//! roll-ups count in, percentiles from those buckets, the windows the Usage page offers and the
//! report it draws. The server counts requests into minute rows and rolls them up per hour
//! (`aiedge_store::usage`); this module is what both sides agree on.

use serde::{Deserialize, Serialize};

/// What a person did, as the Usage page's "share of functionality" counts it. The seed's
/// Kibana charts counted controller actions; these are ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Register,
    LogIn,
    LogOut,
    AddNode,
    ManageNode,
    Upload,
    DeleteApp,
    Run,
    Download,
    Cancel,
    /// Creating, changing, pausing, resuming or deleting a schedule.
    Schedule,
    Tokens,
    Admin,
    /// A page or a live feed looked at.
    View,
    /// Everything else (reads of lists and details through the API or server functions).
    Other,
}

impl Action {
    pub const ALL: [Action; 15] = [
        Action::Register,
        Action::LogIn,
        Action::LogOut,
        Action::AddNode,
        Action::ManageNode,
        Action::Upload,
        Action::DeleteApp,
        Action::Run,
        Action::Download,
        Action::Cancel,
        Action::Schedule,
        Action::Tokens,
        Action::Admin,
        Action::View,
        Action::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Register => "register",
            Action::LogIn => "log_in",
            Action::LogOut => "log_out",
            Action::AddNode => "add_node",
            Action::ManageNode => "manage_node",
            Action::Upload => "upload",
            Action::DeleteApp => "delete_app",
            Action::Run => "run",
            Action::Download => "download",
            Action::Cancel => "cancel",
            Action::Schedule => "schedule",
            Action::Tokens => "tokens",
            Action::Admin => "admin",
            Action::View => "view",
            Action::Other => "other",
        }
    }

    /// How a person would name it.
    pub fn label(self) -> &'static str {
        match self {
            Action::Register => "Register",
            Action::LogIn => "Log in",
            Action::LogOut => "Log out",
            Action::AddNode => "Add node",
            Action::ManageNode => "Manage nodes",
            Action::Upload => "Upload",
            Action::DeleteApp => "Delete app",
            Action::Run => "Run job",
            Action::Download => "Download",
            Action::Cancel => "Cancel job",
            Action::Schedule => "Schedules",
            Action::Tokens => "API tokens",
            Action::Admin => "Admin",
            Action::View => "View pages",
            Action::Other => "Other reads",
        }
    }

    pub fn parse(word: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == word)
    }
}

/// How the request came: the browser (a session) or a script (an API token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    Api,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Api => "api",
        }
    }

    pub fn parse(word: &str) -> Option<Channel> {
        match word {
            "web" => Some(Channel::Web),
            "api" => Some(Channel::Api),
            _ => None,
        }
    }
}

/// The functionality a request is, from its method and route template; `None` for requests
/// that are not a person's use of the platform (agents, health checks, metrics scrapes, the
/// browser's files, unmatched paths), which the usage tables do not count.
pub fn classify(method: &str, route: &str) -> Option<Action> {
    if route.starts_with("/agent/") || route.starts_with("/pkg/") || matches!(route, "/healthz" | "/metrics" | "unmatched" | "/{*path}") {
        return None;
    }
    let action = match (method, route) {
        ("POST", "/api/auth/register") => Action::Register,
        ("POST", "/api/auth/login") => Action::LogIn,
        ("POST", "/api/auth/logout") => Action::LogOut,
        ("POST", "/api/nodes/add") => Action::AddNode,
        ("POST", "/api/nodes/set-state" | "/api/nodes/share") => Action::ManageNode,
        ("POST", "/api/v1/applications") => Action::Upload,
        ("POST", "/api/apps/delete") | ("DELETE", "/api/v1/applications/{id}") => Action::DeleteApp,
        ("POST", "/api/v1/jobs") => Action::Run,
        ("GET", "/api/v1/jobs/{id}/result" | "/api/v1/jobs/{id}/log") => Action::Download,
        ("POST", "/api/v1/jobs/{id}/cancel" | "/api/jobs/cancel") => Action::Cancel,
        ("POST", "/api/tokens/create" | "/api/tokens/revoke") => Action::Tokens,
        ("POST" | "PATCH" | "DELETE", r) if r.starts_with("/api/v1/schedules") && r != "/api/v1/schedules/preview" => Action::Schedule,
        ("POST", r) if r.starts_with("/api/schedules/") && r != "/api/schedules/preview" => Action::Schedule,
        (_, r) if r.starts_with("/api/admin/") => Action::Admin,
        ("GET", r) if r.starts_with("/live/") || !r.starts_with("/api/") => Action::View,
        _ => Action::Other,
    };
    Some(action)
}

/// Upper bounds of the latency buckets, in milliseconds; a value above the last is counted in
/// the overflow bucket, stored as [`OVERFLOW`]. HTTP answers and job queue waits and run times
/// share them: from a millisecond to ten minutes.
pub const BOUNDS_MS: [i64; 18] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000];
/// The overflow bucket's key.
pub const OVERFLOW: i64 = -1;

/// The bucket (its upper bound, or [`OVERFLOW`]) a duration falls in.
pub fn bucket_of(ms: f64) -> i64 {
    BOUNDS_MS.iter().copied().find(|&b| ms <= b as f64).unwrap_or(OVERFLOW)
}

/// Counts per latency bucket, merged from roll-up rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Parallel to [`BOUNDS_MS`], then the overflow bucket.
    pub counts: Vec<u64>,
}

impl Histogram {
    pub fn new() -> Self {
        Self { counts: vec![0; BOUNDS_MS.len() + 1] }
    }

    /// Adds `n` to the bucket whose key is `le_ms` (an upper bound or [`OVERFLOW`]); an unknown
    /// key (a database written with other bounds) counts as overflow rather than vanishing.
    pub fn add(&mut self, le_ms: i64, n: u64) {
        if self.counts.len() != BOUNDS_MS.len() + 1 {
            self.counts = vec![0; BOUNDS_MS.len() + 1];
        }
        let i = BOUNDS_MS.iter().position(|&b| b == le_ms).unwrap_or(BOUNDS_MS.len());
        self.counts[i] += n;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (i, n) in other.counts.iter().enumerate() {
            let key = BOUNDS_MS.get(i).copied().unwrap_or(OVERFLOW);
            self.add(key, *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0–1) in ms, interpolated linearly inside its bucket (as Prometheus's
    /// `histogram_quantile` does); `None` when empty. A quantile in the overflow bucket is
    /// reported as the last bound: "at least".
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let Some(&upper) = BOUNDS_MS.get(i) else {
                    return Some(BOUNDS_MS[BOUNDS_MS.len() - 1] as f64);
                };
                let lower = if i == 0 { 0 } else { BOUNDS_MS[i - 1] };
                let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower as f64 + within * (upper - lower) as f64);
            }
            seen += n;
        }
        Some(BOUNDS_MS[BOUNDS_MS.len() - 1] as f64)
    }
}

/// The time span the Usage page shows, and the width of its chart's bars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

impl Window {
    pub const ALL: [Window; 3] = [Window::Day, Window::Week, Window::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }

    pub fn parse(word: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == word)
    }

    pub fn span_ms(self) -> i64 {
        match self {
            Window::Day => DAY_MS,
            Window::Week => 7 * DAY_MS,
            Window::Month => 30 * DAY_MS,
        }
    }

    /// One point of a time chart: an hour over a day, six hours over a week, a day over a month.
    pub fn step_ms(self) -> i64 {
        match self {
            Window::Day => HOUR_MS,
            Window::Week => 6 * HOUR_MS,
            Window::Month => DAY_MS,
        }
    }

    /// The start of the first step shown, so that the last step holds `now`.
    pub fn start(self, now: i64) -> i64 {
        let step = self.step_ms();
        (now.div_euclid(step) + 1) * step - self.span_ms()
    }

    /// How many steps the charts have.
    pub fn steps(self) -> usize {
        (self.span_ms() / self.step_ms()) as usize
    }
}

/// One step of the activity chart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityPoint {
    /// Start of the step (ms since the epoch).
    pub at: i64,
    pub web: u64,
    pub api: u64,
    /// Distinct accounts that made a request in the step.
    pub users: u64,
}

/// How often one functionality was used, by channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionUse {
    pub action: Action,
    pub web: u64,
    pub api: u64,
}

/// One route's use and latency over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteUse {
    pub method: String,
    pub route: String,
    pub requests: u64,
    /// Answered 4xx (refused: bad input, not signed in, not allowed).
    pub refused: u64,
    /// Answered 5xx.
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Jobs that ended in one step, by outcome, with their queue waits and run times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsPoint {
    pub at: i64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub wait_p50_ms: Option<f64>,
    pub wait_p95_ms: Option<f64>,
    pub run_p50_ms: Option<f64>,
    pub run_p95_ms: Option<f64>,
}

/// A labelled amount: node-hours of an owner, jobs of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub label: String,
    pub value: f64,
}

/// Everything the Usage page draws for one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub window: Window,
    pub start: i64,
    pub step_ms: i64,
    pub activity: Vec<ActivityPoint>,
    /// Distinct accounts active over the whole window.
    pub active_users: u64,
    pub actions: Vec<ActionUse>,
    pub routes: Vec<RouteUse>,
    pub jobs: Vec<JobsPoint>,
    /// Node-hours contributed (a node active for an hour is one), per owner, most first.
    pub node_hours: Vec<Tally>,
    /// Jobs ended per node, most first.
    pub jobs_per_node: Vec<Tally>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_loop_is_classified_by_route_template() {
        assert_eq!(classify("POST", "/api/auth/register"), Some(Action::Register));
        assert_eq!(classify("POST", "/api/v1/jobs"), Some(Action::Run));
        assert_eq!(classify("GET", "/api/v1/jobs/{id}/result"), Some(Action::Download));
        assert_eq!(classify("GET", "/api/v1/jobs"), Some(Action::Other));
        assert_eq!(classify("GET", "/jobs/{id}"), Some(Action::View));
        assert_eq!(classify("GET", "/api/admin/accounts"), Some(Action::Admin));
        assert_eq!(classify("POST", "/agent/v1/jobs/{id}/finish"), None);
        assert_eq!(classify("GET", "/healthz"), None);
        assert_eq!(classify("GET", "/pkg/{version}/{*file}"), None);
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
    }

    #[test]
    fn buckets_and_quantiles_agree() {
        assert_eq!(bucket_of(0.3), 1);
        assert_eq!(bucket_of(1.0), 1);
        assert_eq!(bucket_of(1.5), 2);
        assert_eq!(bucket_of(700_000.0), OVERFLOW);
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        // 100 answers between 5 and 10 ms: the median is interpolated to the bucket's middle.
        h.add(10, 100);
        assert_eq!(h.quantile(0.5), Some(7.5));
        assert_eq!(h.quantile(1.0), Some(10.0));
        // One in the overflow bucket: p100 is "at least the last bound".
        h.add(OVERFLOW, 1);
        assert_eq!(h.quantile(1.0), Some(600_000.0));
        let mut sum = Histogram::new();
        sum.merge(&h);
        sum.merge(&h);
        assert_eq!(sum.total(), 202);
        // A key the bounds do not know is kept, as overflow.
        h.add(7, 1);
        assert_eq!(h.counts[BOUNDS_MS.len()], 2);
    }

    #[test]
    fn a_window_ends_with_the_step_that_holds_now() {
        let now = 10 * DAY_MS + 5 * HOUR_MS + 123;
        for w in Window::ALL {
            let start = w.start(now);
            let end = start + w.steps() as i64 * w.step_ms();
            assert!(start <= now && now < end, "{w:?}");
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
    }
}
