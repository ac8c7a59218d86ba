//! The resource view: one row per node with its status, metrics, score and small charts.
//! Used by "My nodes" (an owner's nodes) and the admin page (every node).

use std::collections::HashMap;

use leptos::prelude::*;

use crate::live::Sample;
use crate::nodes::{AdminState, NodeView, SetNodeState};

fn pct(v: f64) -> String {
    format!("{v:.0} %")
}

/// "3 s ago", "4 min ago", or "never".
pub fn age(now_ms: i64, then_ms: Option<i64>) -> String {
    let Some(then) = then_ms else { return "never".into() };
    let secs = ((now_ms - then).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// A small line chart of `values` scaled to `lo..hi` (or to the data when `None`).
#[component]
pub fn Sparkline(values: Vec<f64>, #[prop(optional)] range: Option<(f64, f64)>, label: &'static str) -> impl IntoView {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let (lo, hi) = range.unwrap_or_else(|| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (lo.min(0.0), lo.max(0.0) + 1.0)
        }
    });
    let n = values.len().max(2) as f64 - 1.0;
    let points: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 / n * W;
            let y = H - ((v - lo) / (hi - lo)).clamp(0.0, 1.0) * (H - 2.0) - 1.0;
            format!("{x:.1},{y:.1} ")
        })
        .collect();
    view! {
        <svg class="spark" viewBox=format!("0 0 {W} {H}") width=W height=H role="img" aria-label=label>
            <title>{label}</title>
            <polyline points=points fill="none" stroke="currentColor" stroke-width="1.5" />
        </svg>
    }
}

/// The agent version this server hands out: the workspace's, like the agents it was built with.
const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The table of nodes. `admin` adds the owner column and the disable/drain/remove buttons.
#[component]
pub fn NodeTable(
    nodes: ReadSignal<Vec<NodeView>>,
    history: ReadSignal<HashMap<String, Vec<Sample>>>,
    now: ReadSignal<i64>,
    admin: bool,
) -> impl IntoView {
    let set_state = ServerAction::<SetNodeState>::new();
    view! {
        <div class="table-wrap">
            <table class="nodes" data-testid="node-table">
                <thead>
                    <tr>
                        <th>"Node"</th>
                        {admin.then(|| view! { <th>"Owner"</th> })}
                        <th>"Status"</th>
                        <th title="free CPU, free memory, free RAM at the last heartbeat">"Free"</th>
                        <th title="CPU benchmark (events/s) and the hottest sensor">"Speed · temp"</th>
                        <th title="score = load × perf × thermal">"Score"</th>
                        <th>"Jobs"</th>
                        <th>"Last heartbeat"</th>
                        <th title="score, free CPU, free memory, temperature over the last minutes">"Trends"</th>
                        {admin.then(|| view! { <th></th> })}
                    </tr>
                </thead>
                <tbody>
                    <For each=move || nodes.get() key=|n| (n.id.clone(), n.status, n.admin_state, n.last_heartbeat_ms) let:n>
                        {
                            let id = n.id.clone();
                            let m = n.metrics.clone();
                            let status = n.badge();
                            let points = move || history.with(|h| h.get(&id).cloned().unwrap_or_default());
                            let last = n.last_heartbeat_ms;
                            let node_id = n.id.clone();
                            view! {
                                <tr data-node=n.name.clone() data-status=status>
                                    <td>
                                        <strong><a href=format!("/nodes/{}", n.id) data-testid="node-link">{n.name.clone()}</a></strong>
                                        <div class="muted small">{n.facts.as_ref().map(|f| format!("{} · {} · {} cores", f.hostname, f.arch, f.cpu_cores))}</div>
                                        {n.outdated_agent(AGENT_VERSION).map(|v| view! {
                                            <div class="small outdated" data-testid="outdated-agent"
                                                title="Re-run the install line on the machine (or install.sh without --token) to upgrade in place; the node keeps its identity.">
                                                {format!("agent {v}: update to {AGENT_VERSION}")}
                                            </div>
                                        })}
                                    </td>
                                    {admin.then(|| view! { <td>{n.owner_email.clone()}</td> })}
                                    <td><span class=format!("badge {status}") data-testid="node-status">{status}</span></td>
                                    <td>{m.as_ref().map(|m| view! {
                                        <div>"CPU " {pct(m.free_cpu_pct)} " · mem " {pct(m.free_mem_pct)}</div>
                                        <div class="muted small">{format!("{:.1} GiB RAM", m.free_ram_gib)}</div>
                                    })}</td>
                                    <td>{m.as_ref().map(|m| view! {
                                        <div>{format!("{:.0} ev/s", m.events_per_sec)}</div>
                                        <div class="muted small">{m.temperature_c.map(|t| format!("{t:.0} °C")).unwrap_or_else(|| "temp unknown".into())}</div>
                                    })}</td>
                                    <td>
                                        {n.score.as_ref().map(|s| view! {
                                            <strong>{format!("{:.3}", s.total)}</strong>
                                            <div class="muted small">{format!("load {:.1} × perf {:.2} × f(t) {:.2}", s.load, s.perf, s.thermal)}</div>
                                        })}
                                    </td>
                                    <td>
                                        {m.as_ref().map(|m| m.running_jobs)}
                                        {(n.recent_failures > 0).then(|| view! {
                                            <div class="small failing" title="job attempts that failed or were lost on this node in the last 24 hours">
                                                {format!("{} failed (24 h)", n.recent_failures)}
                                            </div>
                                        })}
                                    </td>
                                    <td>{move || age(now.get(), last)}</td>
                                    <td><div class="charts">
                                        {move || {
                                            let p = points();
                                            view! {
                                                <figure><Sparkline label="score" values=p.iter().map(|s| s.score).collect() /><figcaption>"score"</figcaption></figure>
                                                <figure><Sparkline label="free CPU %" range=(0.0, 100.0) values=p.iter().map(|s| s.free_cpu_pct).collect() /><figcaption>"free CPU"</figcaption></figure>
                                                <figure><Sparkline label="free memory %" range=(0.0, 100.0) values=p.iter().map(|s| s.free_mem_pct).collect() /><figcaption>"free mem"</figcaption></figure>
                                                <figure><Sparkline label="temperature °C" range=(20.0, 100.0) values=p.iter().filter_map(|s| s.temperature_c).collect() /><figcaption>"°C"</figcaption></figure>
                                            }
                                        }}
                                    </div></td>
                                    {admin.then(|| {
                                        let (a, b, c) = (node_id.clone(), node_id.clone(), node_id.clone());
                                        view! {
                                            <td><div class="actions">
                                                <button class="small secondary" on:click=move |_| { set_state.dispatch(SetNodeState { id: a.clone(), state: AdminState::Disabled, back: None }); }>"Disable"</button>
                                                <button class="small secondary" on:click=move |_| { set_state.dispatch(SetNodeState { id: b.clone(), state: AdminState::Draining, back: None }); }>"Drain"</button>
                                                <button class="small danger" on:click=move |_| { set_state.dispatch(SetNodeState { id: c.clone(), state: AdminState::Removed, back: None }); }>"Remove"</button>
                                            </div></td>
                                        }
                                    })}
                                </tr>
                            }
                            // Erase the row's type: without it the page's view type gets too deep
                            // for the compiler in release builds.
                            .into_any()
                        }
                    </For>
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(10_000, None), "never");
        assert_eq!(age(10_000, Some(7_000)), "3 s ago");
        assert_eq!(age(200_000, Some(0)), "3 min ago");
        assert_eq!(age(0, Some(5_000)), "0 s ago");
    }
}
