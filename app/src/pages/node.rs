//! One node's page (`/nodes/:id?window=1h`): its facts and current metrics, charts over a
//! chosen window, and the transitions of its status, newest first. Live through
//! `/live/nodes?node=ID&window=…`; the window is a link, so the page works before the WASM
//! loads and a window can be bookmarked.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::components::FormAlert;
use crate::live::{clock, live_json, Sample};
use crate::node_table::age;
use crate::nodes::{
    load_node, window_ms, AdminState, NodeDetail, SetNodeSharing, SetNodeState, Sharing, DEFAULT_WINDOW, NO_SUCH_NODE, WINDOWS,
};

#[component]
pub fn NodePage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let key = move || {
        let id = params.read().get("id").unwrap_or_default();
        // An unknown window falls back to the default rather than failing the page.
        let window = query.read().get("window").filter(|w| window_ms(w).is_some()).unwrap_or_else(|| DEFAULT_WINDOW.into());
        (id, window)
    };
    let detail = Resource::new(key, |(id, window)| load_node(id, window));
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(d) => {
                        let window = window_key(d.window_ms);
                        let live = live_json(format!("/live/nodes?node={}&window={window}", d.node.id), "node", d);
                        view! { <NodeView live /> }.into_any()
                    }
                    Err(ServerFnError::ServerError(m)) if m == NO_SUCH_NODE => view! {
                        <Title text="Not found" />
                        <section class="card narrow" data-testid="node-not-found">
                            <h1>"Not found"</h1>
                            <p>"No such node. " <a href="/nodes">"Back to your nodes"</a></p>
                        </section>
                    }
                    .into_any(),
                    Err(_) => view! { <p>"Could not load the node."</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The URL key of a window length (the default's for an unknown one).
fn window_key(ms: i64) -> &'static str {
    WINDOWS.iter().find(|(_, _, w)| *w == ms).map_or(DEFAULT_WINDOW, |(k, _, _)| *k)
}

#[component]
fn NodeView(live: ReadSignal<NodeDetail>) -> impl IntoView {
    let now = clock();
    let name = move || live.with(|d| d.node.name.clone());
    let title = format!("Node {}", live.with_untracked(|d| d.node.name.clone()));
    let status = move || live.with(|d| d.node.badge());
    let last = move || live.with(|d| d.node.last_heartbeat_ms);
    view! {
        // A plain string: leptos_meta may read a title's closure after this view is gone (a
        // change of window replaces the view), and reading `live` then panics.
        <Title text=title />
        <section class="card">
            {move || {
                let (href, label) = if live.with(|d| d.mine) { ("/nodes", "← My nodes") } else { ("/admin", "← Resources") };
                view! { <p class="muted small"><a href=href>{label}</a></p> }
            }}
            <h1>{name} " " <span class=move || format!("badge {}", status()) data-testid="node-status">{status}</span></h1>
            {move || live.with(facts)}
            <p class="muted small">"Last heartbeat " {move || age(now.get(), last())}</p>
        </section>
        <section class="card">
            <div class="row spread">
                <h2>"History"</h2>
                {move || live.with(|d| window_links(&d.node.id, d.window_ms))}
            </div>
            {move || live.with(|d| charts(&d.history, d.window_ms, now.get_untracked()))}
        </section>
        <SharingForm live />
        <StateForm live />
        <section class="card">
            <h2>"Transitions"</h2>
            {move || live.with(|d| transitions(d, now))}
        </section>
    }
    .into_any()
}

/// Whether the node takes jobs: enable, disable (no new jobs), drain (no new jobs; the running
/// ones finish) or remove (for good: its credentials are revoked). Plain forms, so they work
/// before the WASM loads.
#[component]
fn StateForm(live: ReadSignal<NodeDetail>) -> impl IntoView {
    let set_state = ServerAction::<SetNodeState>::new();
    let alert = crate::components::action_alert(set_state.value());
    let id = live.with_untracked(|d| d.node.id.clone());
    let now = move || live.with(|d| d.node.admin_state);
    let button = move |state: AdminState, label: &'static str, class: &'static str| {
        let id = id.clone();
        view! {
            <ActionForm action=set_state attr:class="inline">
                <input type="hidden" name="id" value=id />
                <input type="hidden" name="state" value=state.as_str() />
                <input type="hidden" name="back" value="page" />
                <button type="submit" class=class disabled=move || now() == state>{label}</button>
            </ActionForm>
        }
    };
    view! {
        <section class="card" data-testid="node-state">
            <h2>"Taking jobs"</h2>
            <p class="muted">
                "Disable: no new jobs. Drain: no new jobs, and the running ones finish. Remove: for good; the agent's credentials are revoked and its jobs move to other nodes."
            </p>
            <p>"Now: " <strong data-testid="admin-state-now">{move || now().as_str()}</strong></p>
            <FormAlert message=alert />
            <div class="row">
                {button(AdminState::Enabled, "Enable", "secondary")}
                {button(AdminState::Disabled, "Disable", "secondary")}
                {button(AdminState::Draining, "Drain", "secondary")}
                {button(AdminState::Removed, "Remove", "danger")}
            </div>
        </section>
    }
}

/// Whose jobs the node runs: a plain form, so it works before the WASM loads.
#[component]
fn SharingForm(live: ReadSignal<NodeDetail>) -> impl IntoView {
    let share = ServerAction::<SetNodeSharing>::new();
    let result = share.value();
    let alert = crate::components::action_alert(result);
    let (id, sharing, named) = live.with_untracked(|d| (d.node.id.clone(), d.node.sharing, d.shared_with.join(", ")));
    let option = move |value: Sharing, label: &'static str| {
        view! {
            <label class="choice">
                <input type="radio" name="sharing" value=value.as_str() checked=sharing == value />
                " " {label}
            </label>
        }
    };
    view! {
        <section class="card" data-testid="node-sharing">
            <h2>"Sharing"</h2>
            <p class="muted">
                "A node sees everything a job it runs carries: the model, the input and the result. It runs its owner's jobs, and other people's only if you share it. Their jobs show it as “a shared node”, without its name."
            </p>
            <p>"Now: " <strong data-testid="sharing-now">{move || live.with(|d| describe(d.node.sharing, &d.shared_with))}</strong></p>
            <FormAlert message=alert />
            <ActionForm action=share attr:class="stack">
                <input type="hidden" name="id" value=id />
                {option(Sharing::Private, "Private: my jobs only")}
                {option(Sharing::Everyone, "Everyone's jobs")}
                {option(Sharing::Users, "The jobs of these accounts:")}
                <label for="share-users" class="sr-only">"Accounts (e-mail addresses)"</label>
                <input id="share-users" name="users" value=named placeholder="ana@example.org, bo@example.org" maxlength="4000" />
                <button type="submit">"Save sharing"</button>
            </ActionForm>
        </section>
    }
}

fn describe(sharing: Sharing, named: &[String]) -> String {
    match sharing {
        Sharing::Private => "private (its owner's jobs only)".into(),
        Sharing::Everyone => "shared with everyone".into(),
        Sharing::Users => format!("shared with {}", named.join(", ")),
    }
}

/// What the node is and how it is doing now.
fn facts(d: &NodeDetail) -> AnyView {
    let n = &d.node;
    let machine = n.facts.as_ref().map(|f| {
        format!(
            "{} · {} · {} · {} cores · {:.1} GiB memory",
            f.hostname,
            f.os,
            f.arch,
            f.cpu_cores,
            f.total_memory_bytes as f64 / (1u64 << 30) as f64
        )
    });
    let accelerators = n.facts.as_ref().map(|f| if f.accelerators.is_empty() { "none".to_string() } else { f.accelerators.join(", ") });
    let runtimes = n.facts.as_ref().map(|f| {
        if f.runtimes.is_empty() {
            "none".to_string()
        } else {
            f.runtimes.iter().map(|r| format!("{} {}", r.name, r.version)).collect::<Vec<_>>().join(", ")
        }
    });
    let agent = n.facts.as_ref().map(|f| {
        format!(
            "{} · up to {} job{} at once{} · {}",
            f.agent_version,
            f.max_jobs,
            if f.max_jobs == 1 { "" } else { "s" },
            if f.queue_ahead == 0 { String::new() } else { format!(", {} more held ahead", f.queue_ahead) },
            if f.accepts_scripts { "runs scripts" } else { "ONNX models only" }
        )
    });
    let now = n.metrics.as_ref().map(|m| {
        let temp = m.temperature_c.map_or_else(|| "temperature unknown".to_string(), |t| format!("{t:.0} °C"));
        format!(
            "free CPU {:.0} % · free memory {:.0} % ({:.1} GiB) · {:.0} events/s · {temp} · {} running job{}",
            m.free_cpu_pct,
            m.free_mem_pct,
            m.free_ram_gib,
            m.events_per_sec,
            m.running_jobs,
            if m.running_jobs == 1 { "" } else { "s" }
        )
    });
    let score = n.score.as_ref().map(|s| format!("{:.3} = load {:.1} × perf {:.2} × f(t) {:.2}", s.total, s.load, s.perf, s.thermal));
    view! {
        <dl class="facts" data-testid="node-facts">
            <dt>"Owner"</dt><dd>{n.owner_email.clone()}</dd>
            <dt>"Machine"</dt><dd>{machine.unwrap_or_else(|| "not reported yet: the agent has not connected".into())}</dd>
            {accelerators.map(|a| view! { <dt>"Accelerators"</dt><dd>{a}</dd> })}
            {runtimes.map(|r| view! { <dt>"Runtimes"</dt><dd>{r}</dd> })}
            {agent.map(|a| view! { <dt>"Agent"</dt><dd>{a}</dd> })}
            {now.map(|m| view! { <dt>"Latest"</dt><dd>{m}</dd> })}
            {score.map(|s| view! { <dt>"Score"</dt><dd>{s}</dd> })}
            {(n.recent_failures > 0).then(|| view! {
                <dt>"Failures"</dt><dd class="failing">{format!("{} job attempts failed or were lost here in the last 24 hours", n.recent_failures)}</dd>
            })}
            <dt>"Added"</dt><dd>{date_time(n.created_at_ms)}</dd>
        </dl>
    }
    .into_any()
}

/// The window choices, as links (they work before the WASM loads).
fn window_links(id: &str, current_ms: i64) -> AnyView {
    view! {
        <nav class="windows" aria-label="Chart window">
            {WINDOWS.iter().map(|(key, label, ms)| {
                let current = *ms == current_ms;
                view! {
                    <a href=format!("/nodes/{id}?window={key}") class:current=current aria-current=current.then_some("page")>{*label}</a>
                }
            }).collect_view()}
        </nav>
    }
    .into_any()
}

fn charts(history: &[Sample], window_ms: i64, now: i64) -> AnyView {
    if history.is_empty() {
        return view! { <p class="muted">"No heartbeats in this window."</p> }.into_any();
    }
    let label = WINDOWS.iter().find(|(_, _, w)| *w == window_ms).map_or("", |(_, l, _)| *l);
    // The browser's clock may lag the server's: never cut off the newest point.
    let end = history.last().map_or(now, |s| s.at_ms.max(now));
    let start = end - window_ms;
    let series = |f: fn(&Sample) -> Option<f64>| history.iter().filter_map(|s| f(s).map(|v| (s.at_ms, v))).collect::<Vec<_>>();
    let temps = series(|s| s.temperature_c);
    view! {
        <div class="chart-grid" data-testid="node-charts">
            <TimeChart title="Score" points=series(|s| Some(s.score)) start end since=label digits=3 />
            <TimeChart title="Free CPU" unit=" %" points=series(|s| Some(s.free_cpu_pct)) start end since=label range=(0.0, 100.0) />
            <TimeChart title="Free memory" unit=" %" points=series(|s| Some(s.free_mem_pct)) start end since=label range=(0.0, 100.0) />
            {if temps.is_empty() {
                view! { <figure class="chart"><figcaption>"Temperature"</figcaption><p class="muted small">"Unknown: the machine reports no sensor."</p></figure> }.into_any()
            } else {
                view! { <TimeChart title="Temperature" unit=" °C" points=temps start end since=label range=(20.0, 100.0) /> }.into_any()
            }}
        </div>
    }
    .into_any()
}

/// A line chart over time: x from `start` to `end` (ms), the line broken where data is missing
/// (the node was off), y over `range` or the data's own.
#[component]
fn TimeChart(
    title: &'static str,
    #[prop(default = "")] unit: &'static str,
    points: Vec<(i64, f64)>,
    start: i64,
    end: i64,
    since: &'static str,
    #[prop(optional)] range: Option<(f64, f64)>,
    #[prop(default = 0)] digits: usize,
) -> impl IntoView {
    const W: f64 = 480.0;
    const H: f64 = 120.0;
    let (lo, hi) = range.unwrap_or_else(|| {
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (lo.min(0.0), lo.max(0.0) + 1.0)
        }
    });
    let span = (end - start).max(1);
    // Points further apart than this are not joined: nothing was heard in between.
    let gap = (span / 60).max(10_000);
    let mut d = String::new();
    let mut prev: Option<i64> = None;
    for (at, v) in &points {
        let x = (at - start) as f64 / span as f64 * W;
        let y = H - 2.0 - ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * (H - 4.0);
        if prev.is_none_or(|p| at - p > gap) {
            // A lone point still shows, as a dot.
            d.push_str(&format!("M{x:.1},{y:.1}h0.1"));
        } else {
            d.push_str(&format!("L{x:.1},{y:.1}"));
        }
        prev = Some(*at);
    }
    let fmt = move |v: f64| format!("{v:.digits$}{unit}");
    let latest = points.last().map(|p| fmt(p.1)).unwrap_or_default();
    let (min, max) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    view! {
        <figure class="chart">
            <figcaption><span>{title}</span> <strong>{latest}</strong></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img" aria-label=format!("{title} over the last {since}")>
                <line x1="0" y1={H - 0.5} x2=W y2={H - 0.5} class="axis" />
                <path d=d fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" vector-effect="non-scaling-stroke" />
            </svg>
            <div class="chart-axis muted small">
                <span>{format!("{since} ago")}</span>
                <span>{format!("min {} · max {}", fmt(min), fmt(max))}</span>
                <span>"now"</span>
            </div>
        </figure>
    }
}

fn transitions(d: &NodeDetail, now: ReadSignal<i64>) -> AnyView {
    if d.events.is_empty() {
        return view! { <p class="muted">"No transitions yet: the agent has not connected."</p> }.into_any();
    }
    // Events are newest first, so each state lasted until the event before it in the list.
    let ends: Vec<Option<i64>> = std::iter::once(None).chain(d.events.iter().map(|e| Some(e.at_ms))).collect();
    view! {
        {(d.events_total > d.events.len() as u64).then(|| view! {
            <p class="muted small">{format!("The latest {} of {} transitions.", d.events.len(), d.events_total)}</p>
        })}
        <ol class="timeline transitions" data-testid="transitions">
            {d.events.iter().zip(ends).map(|(e, end)| {
                let (to, at) = (e.to_status, e.at_ms);
                let lasted = move || match end {
                    Some(end) => format!("{to} for {}", duration(end - at)),
                    None => format!("{to} since {}", age(now.get(), Some(at))),
                };
                view! {
                    <li data-from=e.from_status.as_str() data-to=e.to_status.as_str()>
                        <span class=format!("badge {}", e.from_status)>{e.from_status.as_str()}</span>
                        " → "
                        <span class=format!("badge {}", e.to_status)>{e.to_status.as_str()}</span>
                        " " <time>{date_time(e.at_ms)}</time>
                        " · " <span class="reason">{e.reason.clone()}</span>
                        " · " <span class="muted small">{lasted}</span>
                    </li>
                }
            }).collect_view()}
        </ol>
    }
    .into_any()
}

/// "45 s", "12 min", "3 h 5 min", "2 d 4 h".
fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} d {} h", s / 86_400, s / 3600 % 24),
    }
}

/// "2026-11-28 09:14:03 UTC": the page is read beside server logs, which are in UTC.
pub(crate) fn date_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", t / 3600, t / 60 % 60, t % 60)
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        // A leap day, and the last second of a year.
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(date_time(1_704_067_199_000), "2023-12-31 23:59:59 UTC");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(12 * 60_000 + 5_000), "12 min");
        assert_eq!(duration(3 * 3_600_000 + 5 * 60_000), "3 h 5 min");
        assert_eq!(duration(2 * 86_400_000 + 4 * 3_600_000), "2 d 4 h");
        assert_eq!(duration(-5), "0 s");
    }

    #[test]
    fn window_keys_round_trip() {
        for (key, _, ms) in WINDOWS {
            assert_eq!(window_key(*ms), *key);
        }
        assert_eq!(window_key(1), DEFAULT_WINDOW);
    }
}
