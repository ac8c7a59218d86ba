//! Live data for the pages: a signal that starts with what the server rendered and follows the
//! server-sent event feed once the WASM runs, plus a short per-node history for the charts.

use std::collections::HashMap;

use leptos::prelude::*;

use crate::nodes::NodeView;

pub use aiedge_core::views::{Sample, HISTORY_POINTS};

/// Appends each node's newest heartbeat to its history, once.
pub fn record(history: &mut HashMap<String, Vec<Sample>>, nodes: &[NodeView]) {
    for n in nodes {
        let (Some(m), Some(at_ms), Some(score)) = (&n.metrics, n.last_heartbeat_ms, &n.score) else { continue };
        let points = history.entry(n.id.clone()).or_default();
        if points.last().is_some_and(|p| p.at_ms >= at_ms) {
            continue;
        }
        points.push(Sample {
            at_ms,
            free_cpu_pct: m.free_cpu_pct,
            free_mem_pct: m.free_mem_pct,
            temperature_c: m.temperature_c,
            score: score.total,
        });
        if points.len() > HISTORY_POINTS {
            let extra = points.len() - HISTORY_POINTS;
            points.drain(..extra);
        }
    }
}

/// Per node id, its recent history for the charts.
pub type Histories = HashMap<String, Vec<Sample>>;

/// The live list of nodes for `scope` ("mine" or "all"), seeded with `initial`; with their
/// histories and whether the feed is connected.
pub fn live_nodes(
    scope: &'static str,
    initial: Vec<NodeView>,
    initial_history: Histories,
) -> (ReadSignal<Vec<NodeView>>, ReadSignal<Histories>, ReadSignal<bool>) {
    let (nodes, set_nodes) = signal(initial);
    let (history, set_history) = signal(initial_history);
    let (connected, set_connected) = signal(false);
    #[cfg(feature = "hydrate")]
    subscribe(scope, set_nodes, set_history, set_connected);
    #[cfg(not(feature = "hydrate"))]
    let _ = (scope, set_nodes, set_history, set_connected);
    (nodes, history, connected)
}

#[cfg(feature = "hydrate")]
fn subscribe(
    scope: &'static str,
    set_nodes: WriteSignal<Vec<NodeView>>,
    set_history: WriteSignal<HashMap<String, Vec<Sample>>>,
    set_connected: WriteSignal<bool>,
) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;

    Effect::new(move |_| {
        let Ok(source) = web_sys::EventSource::new(&format!("/live/nodes?scope={scope}")) else { return };
        let on_nodes = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            let Some(text) = ev.data().as_string() else { return };
            if let Ok(list) = serde_json::from_str::<Vec<NodeView>>(&text) {
                set_history.update(|h| record(h, &list));
                set_nodes.set(list);
                set_connected.set(true);
            }
        });
        let _ = source.add_event_listener_with_callback("nodes", on_nodes.as_ref().unchecked_ref());
        let on_open = Closure::<dyn FnMut()>::new(move || set_connected.set(true));
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let on_error = Closure::<dyn FnMut()>::new(move || set_connected.set(false));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // The closures live as long as the page; the browser reconnects the source by itself.
        on_nodes.forget();
        on_open.forget();
        on_error.forget();
        let source = send_wrapper::SendWrapper::new(source);
        on_cleanup(move || source.close());
    });
}

/// A signal that starts as `initial` and, once the WASM runs, follows the `event` events of the
/// server-sent feed at `url` (JSON of `T`). Used for the jobs list and the job page.
pub fn live_json<T>(url: String, event: &'static str, initial: T) -> ReadSignal<T>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (value, set_value) = signal(initial);
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::closure::Closure;
        use wasm_bindgen::JsCast;
        Effect::new(move |_| {
            let Ok(source) = web_sys::EventSource::new(&url) else { return };
            let on_event = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
                if let Some(parsed) = ev.data().as_string().and_then(|t| serde_json::from_str::<T>(&t).ok()) {
                    set_value.set(parsed);
                }
            });
            let _ = source.add_event_listener_with_callback(event, on_event.as_ref().unchecked_ref());
            on_event.forget();
            let source = send_wrapper::SendWrapper::new(source);
            on_cleanup(move || source.close());
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (url, event, set_value);
    value
}

/// Milliseconds since the epoch, ticking once a second in the browser (for "seen 3 s ago").
pub fn clock() -> ReadSignal<i64> {
    let (now, set_now) = signal(now_ms());
    #[cfg(feature = "hydrate")]
    {
        let handle = set_interval_with_handle(move || set_now.set(now_ms()), std::time::Duration::from_secs(1));
        if let Ok(handle) = handle {
            on_cleanup(move || handle.clear());
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = set_now;
    now
}

#[cfg(feature = "hydrate")]
fn now_ms() -> i64 {
    js_sys_now()
}

#[cfg(feature = "hydrate")]
fn js_sys_now() -> i64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| (p.time_origin() + p.now()) as i64).unwrap_or(0)
}

#[cfg(not(feature = "hydrate"))]
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A count that goes up every `every` once the WASM runs (and stays 0 on the server): a
/// resource that reads it is fetched again that often, for pages that poll rather than follow a
/// feed (the Usage page).
pub fn ticker(every: std::time::Duration) -> ReadSignal<u64> {
    let (count, set_count) = signal(0u64);
    #[cfg(feature = "hydrate")]
    {
        let handle = set_interval_with_handle(move || set_count.update(|n| *n += 1), every);
        if let Ok(handle) = handle {
            on_cleanup(move || handle.clear());
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (set_count, every);
    count
}
