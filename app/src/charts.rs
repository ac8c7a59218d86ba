//! Charts drawn as SVG on the server, so they show before the WASM loads (and without it). The
//! SVG holds only shapes, stretched to the card's width; the numbers and labels around it are
//! HTML, so text never stretches with it. Every mark has a `<title>`: hovering names it.

use leptos::prelude::*;

const W: f64 = 600.0;
const H: f64 = 160.0;

/// A series of a chart: its name and one value per step (`None`: nothing to show there).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub values: Vec<Option<f64>>,
}

impl Series {
    pub fn new(name: &'static str, values: impl IntoIterator<Item = f64>) -> Self {
        Self { name, values: values.into_iter().map(Some).collect() }
    }

    pub fn sparse(name: &'static str, values: impl IntoIterator<Item = Option<f64>>) -> Self {
        Self { name, values: values.into_iter().collect() }
    }
}

/// A number as a chart labels it: `1.2k`, `35`, `0.25`.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A duration in ms as a chart labels it: `850 ms`, `2.5 s`, `3.0 min`.
pub fn duration(ms: f64) -> String {
    if ms >= 60_000.0 {
        format!("{:.1} min", ms / 60_000.0)
    } else if ms >= 1_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A y-axis top that is a round number at or above `max`.
fn nice_top(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&top| top >= max).unwrap_or(10.0 * magnitude)
}

/// The x-axis: the first, middle and last step's labels.
fn x_axis(labels: &[String]) -> impl IntoView {
    let pick = |i: usize| labels.get(i).cloned().unwrap_or_default();
    let n = labels.len();
    view! {
        <div class="chart-axis muted small">
            <span>{pick(0)}</span>
            <span>{if n > 2 { pick(n / 2) } else { String::new() }}</span>
            <span>{if n > 1 { pick(n - 1) } else { String::new() }}</span>
        </div>
    }
}

/// The series' keys, each followed by what `note` says of it (a total, the latest value).
fn legend(series: &[Series], note: impl Fn(&Series) -> Option<String>) -> impl IntoView {
    series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let note = note(s).map(|n| format!(" {n}"));
            view! { <span class=format!("key s{i}")><i></i>{s.name}{note}</span> }
        })
        .collect_view()
}

/// A time chart's frame: the caption with the axis top, the marks over a baseline and the top
/// grid line, the x-axis, the legend, and a word when there is nothing to show.
#[allow(clippy::too_many_arguments)]
fn frame(
    class: &'static str,
    title: &'static str,
    top: String,
    testid: &'static str,
    marks: AnyView,
    labels: &[String],
    legend: AnyView,
    empty: bool,
) -> impl IntoView {
    view! {
        <figure class=class data-testid=testid>
            <figcaption><span>{title}</span> <span class="muted small">{top}</span></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img" aria-label=title>
                <line x1="0" y1={H - 0.5} x2=W y2={H - 0.5} class="axis" />
                <line x1="0" y1="0.5" x2=W y2="0.5" class="grid" />
                {marks}
            </svg>
            {x_axis(labels)}
            <div class="legend small">{legend}</div>
            {empty.then(|| view! { <p class="muted small">"Nothing in this window yet."</p> })}
        </figure>
    }
}

/// Bars per step, the series stacked on each other (requests by channel, jobs by outcome).
#[component]
pub fn StackedBars(
    title: &'static str,
    series: Vec<Series>,
    /// One label per step.
    labels: Vec<String>,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView {
    let steps = labels.len().max(1);
    let totals: Vec<f64> = (0..steps).map(|i| series.iter().filter_map(|s| s.values.get(i).copied().flatten()).sum()).collect();
    let top = nice_top(totals.iter().copied().fold(0.0, f64::max));
    let slot = W / steps as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut marks = Vec::new();
    for i in 0..steps {
        let mut base = 0.0;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().flatten().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let h = v / top * (H - 2.0);
            let y = H - base - h;
            base += h;
            let tip = format!("{}: {} {}", labels.get(i).cloned().unwrap_or_default(), short(v), s.name);
            marks.push(view! {
                <rect class=format!("s{k}") x=format!("{:.1}", i as f64 * slot + (slot - bar) / 2.0) y=format!("{y:.1}") width=format!("{bar:.1}") height=format!("{h:.1}")>
                    <title>{tip}</title>
                </rect>
            });
        }
    }
    let empty = totals.iter().all(|t| *t == 0.0);
    let legend = legend(&series, |s| Some(short(s.values.iter().flatten().sum())));
    frame("chart bars", title, format!("max {}", short(top)), testid, marks.into_any(), &labels, legend.into_any(), empty)
}

/// Lines per series over the steps (percentiles over time); steps without a value break the line.
#[component]
pub fn Lines(
    title: &'static str,
    series: Vec<Series>,
    labels: Vec<String>,
    /// How the values read (e.g. [`duration`]).
    unit: fn(f64) -> String,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView {
    let steps = labels.len().max(1);
    let top = nice_top(series.iter().flat_map(|s| s.values.iter().flatten()).copied().fold(0.0, f64::max));
    // The middle of each step, as the bars have it: the latest step's point is not cut off.
    let x = |i: usize| (i as f64 + 0.5) / steps as f64 * W;
    let paths = series
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let (mut line, mut dots) = (String::new(), String::new());
            let mut joined = false;
            for (i, v) in s.values.iter().enumerate() {
                match v {
                    Some(v) => {
                        let y = H - 2.0 - (v / top).clamp(0.0, 1.0) * (H - 4.0);
                        line.push_str(&format!("{}{:.1},{y:.1}", if joined { "L" } else { "M" }, x(i)));
                        // Every point also as a dot (a round cap), so a lone one shows.
                        dots.push_str(&format!("M{:.1},{y:.1}h0.1", x(i)));
                        joined = true;
                    }
                    None => joined = false,
                }
            }
            view! {
                <path class=format!("s{k}") d=line fill="none" stroke-width="2" stroke-linecap="round" vector-effect="non-scaling-stroke">
                    <title>{s.name}</title>
                </path>
                <path class=format!("s{k}") d=dots fill="none" stroke-width="6" stroke-linecap="round" vector-effect="non-scaling-stroke">
                    <title>{s.name}</title>
                </path>
            }
        })
        .collect_view();
    let empty = series.iter().all(|s| s.values.iter().all(Option::is_none));
    let legend = legend(&series, move |s| s.values.iter().rev().flatten().next().map(|v| format!("(latest {})", unit(*v))));
    frame("chart lines", title, format!("max {}", unit(top)), testid, paths.into_any(), &labels, legend.into_any(), empty)
}

/// One bar per labelled row, longest first as given, each split into the series (a share of
/// functionality by channel; node-hours per owner).
#[component]
pub fn RowBars(
    title: &'static str,
    /// The series' names, in the order of each row's values.
    names: Vec<&'static str>,
    rows: Vec<(String, Vec<f64>)>,
    unit: fn(f64) -> String,
    #[prop(optional)] testid: &'static str,
) -> impl IntoView {
    const ROW: f64 = 18.0;
    let max = rows.iter().map(|(_, v)| v.iter().sum::<f64>()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let all: f64 = rows.iter().map(|(_, v)| v.iter().sum::<f64>()).sum();
    let body = rows
        .into_iter()
        .map(|(label, values)| {
            let total: f64 = values.iter().sum();
            let mut left = 0.0;
            let segments = values
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| {
                    let w = v / max * W;
                    let x = left;
                    left += w;
                    let tip = format!("{label}: {} {}", unit(*v), names.get(k).copied().unwrap_or(""));
                    view! {
                        <rect class=format!("s{k}") x=format!("{x:.1}") y="2" width=format!("{w:.1}") height={ROW - 4.0}>
                            <title>{tip}</title>
                        </rect>
                    }
                })
                .collect_view();
            let share = if all > 0.0 { total / all * 100.0 } else { 0.0 };
            let key = label.clone();
            view! {
                <div class="row-bar" data-testid="row-bar" data-label=key data-value=total.to_string()>
                    <span class="row-label">{label}</span>
                    <svg viewBox=format!("0 0 {W} {ROW}") preserveAspectRatio="none" role="img" aria-label=format!("{} ({share:.0}%)", unit(total))>
                        {segments}
                    </svg>
                    <span class="row-value">{format!("{} · {share:.0}%", unit(total))}</span>
                </div>
            }
        })
        .collect_view();
    let keys = names.iter().enumerate().map(|(i, n)| view! { <span class=format!("key s{i}")><i></i>{*n}</span> }).collect_view();
    view! {
        <figure class="chart row-bars" data-testid=testid>
            <figcaption><span>{title}</span></figcaption>
            {body}
            {(names.len() > 1).then(|| view! { <div class="legend small">{keys}</div> })}
            {(all == 0.0).then(|| view! { <p class="muted small">"Nothing in this window yet."</p> })}
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round_and_labels_short() {
        assert_eq!(nice_top(0.0), 1.0);
        assert_eq!(nice_top(7.0), 10.0);
        assert_eq!(nice_top(180.0), 200.0);
        assert_eq!(nice_top(2_400.0), 2_500.0);
        assert_eq!(short(1_234.0), "1.2k");
        assert_eq!(short(3.0), "3");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(duration(850.0), "850 ms");
        assert_eq!(duration(0.4), "0.4 ms");
        assert_eq!(duration(2_500.0), "2.5 s");
    }
}
