//! Usage analytics: requests counted in memory as they are answered ([`Tally`]), written as
//! minute rows every few seconds ([`flush`]), rolled up per hour with the jobs and nodes
//! ([`roll_up`]), and the admins' report ([`report`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use aiedge_core::usage::{
    bucket_of, Action, ActionUse, ActivityPoint, Channel, Histogram, JobsPoint, RouteUse, Tally as Amount, UsageReport, Window, HOUR_MS,
};
use aiedge_core::views::UserView;
use aiedge_store::usage::{self as store, RequestCount, RequestKey, MINUTE_MS, NEVER_DISPATCHED};
use aiedge_store::Db;

use crate::{Result, ServiceError};

/// Hour rows and the tables beside them are kept this long by default.
pub const RETENTION_MS: i64 = 400 * 24 * HOUR_MS;

/// Requests counted since the last [`flush`]: a few hash-map increments per request under a
/// lock held for as long, so the request path never waits on the database for analytics.
#[derive(Clone, Default)]
pub struct Tally(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    requests: HashMap<RequestKey, RequestCount>,
    users: HashMap<(i64, String), i64>,
}

/// One answered request, as the usage tables count it.
pub struct Request<'a> {
    pub at_ms: i64,
    pub action: Action,
    pub channel: Channel,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    /// The account that made it, when one is known.
    pub user_id: Option<&'a str>,
}

impl Tally {
    pub fn record(&self, r: Request<'_>) {
        let key = RequestKey {
            minute: r.at_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            action: r.action.as_str(),
            channel: r.channel.as_str(),
            method: r.method.to_string(),
            route: r.route.to_string(),
            le_ms: bucket_of(r.latency_ms),
        };
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let c = counts.requests.entry(key).or_default();
        c.requests += 1;
        c.refused += i64::from((400..500).contains(&r.status));
        c.failed += i64::from(r.status >= 500);
        if let Some(user) = r.user_id {
            *counts.users.entry((r.at_ms.div_euclid(HOUR_MS) * HOUR_MS, user.to_string())).or_default() += 1;
        }
    }

    fn take(&self) -> Counts {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn put_back(&self, counts: Counts) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, c) in counts.requests {
            let into = now.requests.entry(k).or_default();
            into.requests += c.requests;
            into.refused += c.refused;
            into.failed += c.failed;
        }
        for (k, n) in counts.users {
            *now.users.entry(k).or_default() += n;
        }
    }
}

/// Writes what `tally` counted into the minute rows. When the database refuses, the counts go
/// back into the tally for the next flush rather than being lost.
pub async fn flush(db: &Db, tally: &Tally) -> Result<()> {
    let counts = tally.take();
    let requests: Vec<_> = counts.requests.iter().map(|(k, c)| (k.clone(), *c)).collect();
    let users: Vec<_> = counts.users.iter().map(|(k, n)| (k.clone(), *n)).collect();
    if let Err(e) = store::add(db, &requests, &users).await {
        tally.put_back(counts);
        return Err(e.into());
    }
    Ok(())
}

/// Rolls minute rows into hours and counts ended jobs and active nodes (see
/// [`aiedge_store::usage::roll_up`]).
pub async fn roll_up(db: &Db, now: i64) -> Result<store::RollUp> {
    Ok(store::roll_up(db, now, RETENTION_MS).await?)
}

/// The Usage page's report over `window` ending now; admins only.
pub async fn report(db: &Db, caller: &UserView, window: Window, now: i64) -> Result<UsageReport> {
    if !caller.is_admin() {
        return Err(ServiceError::Forbidden("admins only"));
    }
    let (start, step) = (window.start(now), window.step_ms());
    let index = |at: i64| usize::try_from((at - start) / step).ok().filter(|&i| i < window.steps());

    let mut activity: Vec<ActivityPoint> =
        (0..window.steps()).map(|i| ActivityPoint { at: start + i as i64 * step, ..Default::default() }).collect();
    let mut actions: BTreeMap<Action, ActionUse> = BTreeMap::new();
    let mut routes: BTreeMap<(String, String), (RouteUse, Histogram)> = BTreeMap::new();
    for row in store::requests_since(db, start, step).await? {
        let n = u64::try_from(row.requests).unwrap_or(0);
        let channel = Channel::parse(&row.channel).unwrap_or(Channel::Web);
        if let Some(point) = index(row.step).and_then(|i| activity.get_mut(i)) {
            match channel {
                Channel::Web => point.web += n,
                Channel::Api => point.api += n,
            }
        }
        let action = Action::parse(&row.action).unwrap_or(Action::Other);
        let used = actions.entry(action).or_insert(ActionUse { action, web: 0, api: 0 });
        match channel {
            Channel::Web => used.web += n,
            Channel::Api => used.api += n,
        }
        let (route, histogram) = routes.entry((row.method.clone(), row.route.clone())).or_insert_with(|| {
            let route = RouteUse {
                method: row.method.clone(),
                route: row.route.clone(),
                requests: 0,
                refused: 0,
                failed: 0,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            };
            (route, Histogram::new())
        });
        route.requests += n;
        route.refused += u64::try_from(row.refused).unwrap_or(0);
        route.failed += u64::try_from(row.failed).unwrap_or(0);
        histogram.add(row.le_ms, n);
    }
    let (per_step, active_users) = store::active_users_since(db, start, step).await?;
    for (at, users) in per_step {
        if let Some(point) = index(at).and_then(|i| activity.get_mut(i)) {
            point.users = u64::try_from(users).unwrap_or(0);
        }
    }
    let mut routes: Vec<RouteUse> = routes
        .into_values()
        .map(|(mut route, h)| {
            (route.p50_ms, route.p95_ms, route.p99_ms) = (h.quantile(0.5), h.quantile(0.95), h.quantile(0.99));
            route
        })
        .collect();
    routes.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.route.cmp(&b.route)));

    let mut jobs: Vec<(JobsPoint, Histogram, Histogram)> = (0..window.steps())
        .map(|i| (JobsPoint { at: start + i as i64 * step, ..Default::default() }, Histogram::new(), Histogram::new()))
        .collect();
    let mut per_node: HashMap<String, u64> = HashMap::new();
    for (at, outcome, node_id, measure, le_ms, n) in store::jobs_since(db, start, step).await? {
        let n = u64::try_from(n).unwrap_or(0);
        let Some((point, wait, run)) = index(at).and_then(|i| jobs.get_mut(i)) else { continue };
        if measure == "run" {
            run.add(le_ms, n);
            continue;
        }
        // Every ended job has one wait row: count outcomes and nodes from those.
        match outcome.as_str() {
            "succeeded" => point.succeeded += n,
            "cancelled" => point.cancelled += n,
            _ => point.failed += n,
        }
        if !node_id.is_empty() {
            *per_node.entry(node_id).or_default() += n;
        }
        if le_ms != NEVER_DISPATCHED {
            wait.add(le_ms, n);
        }
    }
    let jobs = jobs
        .into_iter()
        .map(|(mut point, wait, run)| {
            (point.wait_p50_ms, point.wait_p95_ms) = (wait.quantile(0.5), wait.quantile(0.95));
            (point.run_p50_ms, point.run_p95_ms) = (run.quantile(0.5), run.quantile(0.95));
            point
        })
        .collect();

    let names: HashMap<String, String> = store::node_names(db).await?.into_iter().collect();
    let mut jobs_per_node: Vec<Amount> = per_node
        .into_iter()
        .map(|(id, n)| Amount { label: names.get(&id).cloned().unwrap_or_else(|| id.chars().take(8).collect()), value: n as f64 })
        .collect();
    jobs_per_node.sort_by(|a, b| b.value.total_cmp(&a.value).then_with(|| a.label.cmp(&b.label)));
    let node_hours = store::node_minutes_by_owner(db, start)
        .await?
        .into_iter()
        .map(|(owner, minutes)| Amount { label: owner, value: minutes as f64 / 60.0 })
        .collect();

    Ok(UsageReport {
        window,
        start,
        step_ms: step,
        activity,
        active_users: u64::try_from(active_users).unwrap_or(0),
        actions: actions.into_values().collect(),
        routes,
        jobs,
        node_hours,
        jobs_per_node,
    })
}
