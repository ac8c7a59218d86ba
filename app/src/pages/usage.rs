use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use aiedge_core::usage::{Action, UsageReport, Window};

use crate::charts::{duration, short, Lines, RowBars, Series, StackedBars};
use crate::live::ticker;
use crate::usage::get_usage;

/// How often the open page fetches the report again.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Usage analytics for admins: who used what, when, how fast, and what the fleet did. The
/// window is a query parameter, so its links work before the WASM loads.
#[component]
pub fn Usage() -> impl IntoView {
    let query = use_query_map();
    let window = move || query.read().get("window").unwrap_or_default();
    let tick = ticker(REFRESH);
    let report = Resource::new(move || (window(), tick.get()), |(w, _)| get_usage(w));
    view! {
        <Title text="Usage" />
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match report.await {
                    Ok(r) => view! { <Report r /> }.into_any(),
                    Err(e) if e.to_string().contains("admins only") || e.to_string().contains("sign in") => view! {
                        <section class="card" data-testid="forbidden">
                            <h1>"Admins only"</h1>
                            <p>"This page is for administrators. " <a href="/home">"Back to your home"</a></p>
                        </section>
                    }.into_any(),
                    Err(e) => view! { <div class="alert" role="alert">{e.to_string()}</div> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// A step's label: the hour over a day, the day and hour over a week, the day over a month (UTC,
/// like the server's logs).
fn step_label(window: Window, at: i64) -> String {
    let text = super::node::date_time(at);
    match window {
        Window::Day => text[11..16].to_string(),
        Window::Week => text[5..16].to_string(),
        Window::Month => text[5..10].to_string(),
    }
}

#[component]
fn Report(r: UsageReport) -> impl IntoView {
    let w = r.window;
    let labels: Vec<String> = r.activity.iter().map(|p| step_label(w, p.at)).collect();
    let requests: u64 = r.activity.iter().map(|p| p.web + p.api).sum();
    let jobs_ended: u64 = r.jobs.iter().map(|p| p.succeeded + p.failed + p.cancelled).sum();
    // Folded from +0.0: an empty f64 sum is -0.0, which prints as "-0.0".
    let node_hours: f64 = r.node_hours.iter().map(|t| t.value).fold(0.0, |a, b| a + b);
    let tabs = Window::ALL
        .into_iter()
        .map(|x| {
            let current = x == w;
            view! {
                <a href=format!("/usage?window={}", x.as_str()) class:current=current aria-current=current.then_some("page")>{x.as_str()}</a>
            }
        })
        .collect_view();
    // Functionality: what people did, most used first, page views last.
    let mut actions: Vec<_> = r.actions.iter().filter(|a| a.action != Action::View).cloned().collect();
    actions.sort_by_key(|a| std::cmp::Reverse(a.web + a.api));
    let views = r.actions.iter().find(|a| a.action == Action::View).map_or(0, |a| a.web + a.api);
    let action_rows = actions.into_iter().map(|a| (a.action.label().to_string(), vec![a.web as f64, a.api as f64])).collect();
    let hours = |v: f64| if v < 1.0 { format!("{:.0} min", v * 60.0) } else { format!("{v:.1} h") };
    let count = |v: f64| short(v);
    view! {
        <section class="card">
            <div class="row spread">
                <h1>"Usage"</h1>
                <nav class="tabs" aria-label="Window" data-testid="usage-window">{tabs}</nav>
            </div>
            <div class="stats">
                <div class="stat"><span class="value" data-testid="usage-requests">{short(requests as f64)}</span><span class="label">"requests"</span></div>
                <div class="stat"><span class="value" data-testid="usage-users">{r.active_users}</span><span class="label">"active accounts"</span></div>
                <div class="stat"><span class="value" data-testid="usage-jobs">{short(jobs_ended as f64)}</span><span class="label">"jobs ended"</span></div>
                <div class="stat"><span class="value">{format!("{node_hours:.1}")}</span><span class="label">"node-hours"</span></div>
            </div>
            <p class="muted small">"Counted by the servers as requests are answered and rolled up per minute and hour (UTC); agents, health checks and metrics scrapes are not counted. Updates every 30 s."</p>
        </section>
        <section class="card">
            <h2>"Activity"</h2>
            <div class="chart-grid">
                <StackedBars title="Requests" testid="chart-requests" labels=labels.clone() series=vec![
                    Series::new("web", r.activity.iter().map(|p| p.web as f64)),
                    Series::new("API", r.activity.iter().map(|p| p.api as f64)),
                ] />
                <StackedBars title="Active accounts" testid="chart-users" labels=labels.clone() series=vec![
                    Series::new("accounts", r.activity.iter().map(|p| p.users as f64)),
                ] />
            </div>
        </section>
        <section class="card">
            <h2>"Functionality"</h2>
            <p class="muted small">{format!("What people did, by channel; besides, {} page views.", short(views as f64))}</p>
            <RowBars title="Uses" testid="chart-actions" names=vec!["web", "API"] rows=action_rows unit=count />
        </section>
        <section class="card">
            <h2>"Jobs"</h2>
            <div class="chart-grid">
                <StackedBars title="Jobs ended" testid="chart-jobs" labels=labels.clone() series=vec![
                    Series::new("succeeded", r.jobs.iter().map(|p| p.succeeded as f64)),
                    Series::new("failed", r.jobs.iter().map(|p| p.failed as f64)),
                    Series::new("cancelled", r.jobs.iter().map(|p| p.cancelled as f64)),
                ] />
                <Lines title="Queue wait and run time" testid="chart-job-times" labels=labels.clone() unit=duration series=vec![
                    Series::sparse("wait p50", r.jobs.iter().map(|p| p.wait_p50_ms)),
                    Series::sparse("wait p95", r.jobs.iter().map(|p| p.wait_p95_ms)),
                    Series::sparse("run p50", r.jobs.iter().map(|p| p.run_p50_ms)),
                    Series::sparse("run p95", r.jobs.iter().map(|p| p.run_p95_ms)),
                ] />
            </div>
        </section>
        <section class="card">
            <h2>"Fleet"</h2>
            <div class="chart-grid">
                <RowBars title="Node-hours contributed, per owner" testid="chart-node-hours" names=vec!["node-hours"]
                    rows=r.node_hours.iter().map(|t| (t.label.clone(), vec![t.value])).collect() unit=hours />
                <RowBars title="Jobs run, per node" testid="chart-node-jobs" names=vec!["jobs"]
                    rows=r.jobs_per_node.iter().map(|t| (t.label.clone(), vec![t.value])).collect() unit=count />
            </div>
        </section>
        <section class="card">
            <h2>"Routes"</h2>
            <p class="muted small">"Latency percentiles are estimated from the counts per latency bucket (1 ms to 10 min)."</p>
            <div class="table-scroll">
                <table class="table compact" data-testid="usage-routes">
                    <thead><tr><th>"Route"</th><th class="num">"Requests"</th><th class="num">"4xx"</th><th class="num">"5xx"</th><th class="num">"p50"</th><th class="num">"p95"</th><th class="num">"p99"</th></tr></thead>
                    <tbody>
                        {r.routes.iter().map(|route| {
                            let p = |v: Option<f64>| v.map(duration).unwrap_or_else(|| "–".into());
                            view! {
                                <tr>
                                    <td><code>{format!("{} {}", route.method, route.route)}</code></td>
                                    <td class="num">{route.requests}</td>
                                    <td class="num">{route.refused}</td>
                                    <td class="num">{route.failed}</td>
                                    <td class="num">{p(route.p50_ms)}</td>
                                    <td class="num">{p(route.p95_ms)}</td>
                                    <td class="num">{p(route.p99_ms)}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
    }
}
