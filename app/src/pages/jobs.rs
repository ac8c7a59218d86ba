use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use aiedge_core::JobStatus;

use crate::jobs::{list_jobs, load_job, CancelJob, JobDetail, JobView};
use crate::live::{clock, live_json};
use crate::node_table::age;

/// A status as a coloured badge.
#[component]
pub fn StatusBadge(#[prop(into)] status: Signal<&'static str>) -> impl IntoView {
    view! { <span class=move || format!("badge status-{}", status.get()) data-testid="job-status">{move || status.get()}</span> }
}

/// How long a job took or has been going, e.g. "1.2 s".
fn duration(job: &JobView, now: i64) -> String {
    let Some(start) = job.started_at_ms.or(job.dispatched_at_ms) else { return String::new() };
    let end = job.finished_at_ms.unwrap_or(now);
    let ms = (end - start).max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// "Jobs": every job of the user, live; for admins, `?scope=all` shows everyone's, with their
/// owners and a count per status.
#[component]
pub fn Jobs() -> impl IntoView {
    let query = use_query_map();
    let scope = move || if query.read().get("scope").as_deref() == Some("all") { "all" } else { "mine" };
    let jobs = Resource::new(scope, |scope| list_jobs(scope.into()));
    let now = clock();
    view! {
        <Title text="Jobs" />
        <section class="card">
            <h1>{move || if scope() == "all" { "All jobs" } else { "Jobs" }}</h1>
            <p class="muted">"Run a job from an " <a href="/apps">"application"</a> "'s page. Status updates here as it happens."</p>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let everyone = scope() == "all";
                    match jobs.await {
                        Ok(list) => {
                            let live = live_json(format!("/live/jobs?scope={}", scope()), "jobs", list);
                            view! {
                                {everyone.then(|| view! { <StatusSummary live /> })}
                                <Show when=move || !live.read().is_empty() fallback=|| view! { <p class="muted">"No jobs yet."</p> }>
                                    <table class="table" data-testid="jobs">
                                        <thead><tr>
                                            <th>"Job"</th><th>"Application"</th>
                                            {everyone.then(|| view! { <th>"Owner"</th> })}
                                            <th>"Status"</th><th>"Node"</th><th>"Rows"</th><th>"Submitted"</th><th>"Took"</th><th>""</th>
                                        </tr></thead>
                                        <tbody>
                                            <For each=move || live.get() key=|j| (j.id.clone(), j.status, j.progress_rows) let:job>
                                                {
                                                    let status = job.status.as_str();
                                                    let created = job.created_at_ms;
                                                    let j2 = job.clone();
                                                    let queued = job.status == JobStatus::Queued;
                                                    let download = (job.status == JobStatus::Succeeded && job.has_result).then(|| format!("/api/v1/jobs/{}/result", job.id));
                                                    view! {
                                                        <tr data-job=job.id.clone()>
                                                            <td><a href=format!("/jobs/{}", job.id)><code>{job.id.chars().take(8).collect::<String>()}</code></a></td>
                                                            <td>{job.app_name.clone()}</td>
                                                            {everyone.then(|| view! { <td data-testid="job-owner">{job.owner_email.clone()}</td> })}
                                                            <td>
                                                                <StatusBadge status=status />
                                                                // No node has taken it for a minute: its page says why.
                                                                {move || (queued && now.get() - created > WAITING_MARK_MS).then(|| view! {
                                                                    " " <span class="muted small" data-testid="job-waiting-mark" title="No node has taken it for over a minute; open the job to see why">"waiting"</span>
                                                                })}
                                                            </td>
                                                            <td>{job.node_name.clone().unwrap_or_default()}</td>
                                                            <td>{job.result_rows.or(job.input_rows).map(|r| r.to_string()).unwrap_or_default()}</td>
                                                            <td>{move || age(now.get(), Some(created))}</td>
                                                            <td>{move || duration(&j2, now.get())}</td>
                                                            <td>{download.map(|href| view! { <a href=href download data-testid="job-download">"predictions.csv"</a> })}</td>
                                                        </tr>
                                                    }
                                                }
                                            </For>
                                        </tbody>
                                    </table>
                                </Show>
                            }.into_any()
                        }
                        Err(_) if everyone => view! {
                            <p data-testid="forbidden">"Everyone's jobs are for administrators. " <a href="/jobs">"Your jobs"</a></p>
                        }.into_any(),
                        Err(_) => view! { <p>"Could not load your jobs."</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// How many of the listed jobs are in each status, live, as a bar of coloured segments.
#[component]
fn StatusSummary(live: ReadSignal<Vec<JobView>>) -> impl IntoView {
    let counts = move || {
        let list = live.read();
        // In the order a job goes through them.
        JobStatus::ALL.iter().map(|s| (s.as_str(), list.iter().filter(|j| j.status == *s).count())).collect::<Vec<_>>()
    };
    view! {
        <div class="status-summary" data-testid="status-summary">
            <div class="status-bar">
                {move || {
                    let counts = counts();
                    let total = counts.iter().map(|(_, n)| n).sum::<usize>().max(1);
                    counts
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(s, n)| view! { <span class=format!("segment status-{s}") style=format!("width: {:.2}%", n as f64 * 100.0 / total as f64) title=format!("{n} {s}") /> })
                        .collect_view()
                }}
            </div>
            <ul class="status-counts">
                {move || counts().into_iter().map(|(s, n)| view! {
                    <li data-status=s><span class=format!("badge status-{s}")>{s}</span> " " <strong>{n}</strong></li>
                }).collect_view()}
            </ul>
            <p class="muted">"Counts of the 200 most recent jobs."</p>
        </div>
    }
}

fn clock_time(ms: i64) -> String {
    // UTC wall-clock time of day with milliseconds; the page is about order and gaps.
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03} UTC", ms.rem_euclid(1000))
}

/// One job, live: status, timeline, the balancer's decision, progress, log, download, cancel.
#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let detail = Resource::new(id, load_job);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(Some(d)) => {
                        let id = d.job.id.clone();
                        let live = live_json(format!("/live/jobs?job={id}"), "job", Some(d));
                        view! { <JobView live /> }.into_any()
                    }
                    Ok(None) => view! { <section class="card"><h1>"Not found"</h1><p>"No such job."</p></section> }.into_any(),
                    Err(_) => view! { <p>"Could not load the job."</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// A queued job older than this is marked as waiting in the list.
const WAITING_MARK_MS: i64 = 60_000;

#[component]
fn JobView(live: ReadSignal<Option<JobDetail>>) -> impl IntoView {
    let cancel = ServerAction::<CancelJob>::new();
    let job = move || live.get().map(|d| d.job);
    let status = Signal::derive(move || job().map_or("", |j| j.status.as_str()));
    let id = move || job().map(|j| j.id).unwrap_or_default();
    view! {
        <Title text=move || format!("Job {}", id().chars().take(8).collect::<String>()) />
        <section class="card">
            <p class="muted small"><a href="/jobs">"← Jobs"</a></p>
            <h1>"Job " <code>{move || id().chars().take(8).collect::<String>()}</code> " " <StatusBadge status /></h1>
            {move || job().map(|j| view! {
                <p>
                    "Application " <a href=format!("/apps/{}", j.app_id)>{j.app_name.clone()}</a>
                    " · input " {j.input_name.clone()} {j.input_rows.map(|r| format!(" ({r} rows)"))}
                    {j.node_name.clone().map(|n| view! { " · on " <strong>{n}</strong> })}
                    {(j.attempt > 1).then(|| format!(" · attempt {} of {}", j.attempt, j.max_attempts))}
                </p>
            })}
            {move || job().filter(|j| j.status == JobStatus::Running).map(|j| {
                let (done, total) = (j.progress_rows.unwrap_or(0), j.input_rows.unwrap_or(0));
                view! {
                    <p class="row">
                        <progress max=total.max(1) value=done data-testid="job-progress"></progress>
                        <span class="muted small">{format!("{done} of {total} rows")}</span>
                    </p>
                }
            })}
            {move || job().and_then(|j| j.waiting.clone()).map(|why| view! {
                <p class="notice" data-testid="job-waiting"><strong>"Waiting: "</strong>{why}</p>
            })}
            {move || job().and_then(|j| j.error.clone()).map(|e| view! { <div class="alert" role="alert" data-testid="job-error">{e}</div> })}
            <div class="row">
                {move || job().filter(|j| j.status == JobStatus::Succeeded && j.has_result).map(|j| view! {
                    <a class="button" href=format!("/api/v1/jobs/{}/result", j.id) download data-testid="download">"Download predictions.csv"</a>
                })}
                {move || live.get().and_then(|d| d.kept_until_ms).map(|until| view! {
                    <span class="muted small" data-testid="kept-until">
                        "Kept until " <time>{crate::pages::node::date_time(until)}</time> ", then deleted with its result"
                    </span>
                })}
                {move || job().filter(|j| !j.is_terminal()).map(|j| view! {
                    <ActionForm action=cancel attr:class="inline">
                        <input type="hidden" name="id" value=j.id.clone() />
                        <button type="submit" class="secondary">"Cancel job"</button>
                    </ActionForm>
                })}
            </div>
        </section>
        <section class="card">
            <h2>"Timeline"</h2>
            <ol class="timeline" data-testid="timeline">
                {move || live.get().map(|d| d.events.into_iter().map(|e| view! {
                    <li>
                        <span class=format!("badge status-{}", e.status)>{e.status.as_str()}</span>
                        " " <time>{clock_time(e.at_ms)}</time> " " {e.message.clone()}
                    </li>
                }).collect_view())}
            </ol>
        </section>
        {move || live.get().filter(|d| !d.attempts.is_empty()).map(|d| view! {
            <section class="card">
                <h2>"Attempts"</h2>
                <p class="muted">"Each dispatch to a node. A lost node or the agent's own trouble sends the job to another node; a failure of the application itself ends it."</p>
                <table class="table compact" data-testid="attempts">
                    <thead><tr><th>"#"</th><th>"Node"</th><th>"Sent"</th><th>"Started"</th><th>"Ended"</th><th>"Outcome"</th><th>"Why"</th></tr></thead>
                    <tbody>
                        {d.attempts.into_iter().map(|a| view! {
                            <tr>
                                <td>{a.attempt}</td>
                                <td>{a.node_name.clone()}</td>
                                <td><time>{clock_time(a.dispatched_at_ms)}</time></td>
                                <td>{a.started_at_ms.map(clock_time)}</td>
                                <td>{a.finished_at_ms.map(clock_time)}</td>
                                <td><span class=format!("badge status-{}", a.outcome)>{a.outcome.as_str()}</span></td>
                                <td>{a.reason.clone()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </section>
        })}
        {move || live.get().and_then(|d| d.decision).map(|decision| view! {
            <section class="card">
                <h2>"Why this node"</h2>
                <p class="muted">"The balancer's view when it chose (attempt " {decision.attempt} "): the highest score, shared among the jobs a node already holds, wins."</p>
                <table class="table compact" data-testid="decision">
                    <thead><tr><th>"Node"</th><th>"Score"</th><th>"Jobs in flight"</th><th>"Effective"</th><th>""</th></tr></thead>
                    <tbody>
                        {decision.candidates.iter().map(|c| {
                            let chosen = c.node_id == decision.chosen;
                            view! {
                                <tr class:chosen=chosen>
                                    <td>{c.node_name.clone()}</td>
                                    <td>{format!("{:.3}", c.score)}</td>
                                    <td>{if c.ahead == 0 { format!("{} / {}", c.in_flight, c.max_jobs) } else { format!("{} / {} (+{} ahead)", c.in_flight, c.max_jobs, c.ahead) }}</td>
                                    <td>{format!("{:.3}", c.effective)}</td>
                                    <td>{if chosen { "chosen".to_string() } else { c.excluded.clone().unwrap_or_else(|| if c.tried { "an earlier attempt ran here".into() } else { "lower score".into() }) }}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                {(decision.more > 0).then(|| view! {
                    <p class="muted small" data-testid="decision-more">{format!("…and {} more nodes of the pool with lower scores, not recorded.", decision.more)}</p>
                })}
            </section>
        })}
        // A script that printed nothing has an empty log: no empty box.
        {move || live.get().and_then(|d| d.log_tail).filter(|log| !log.trim().is_empty()).map(|log| view! {
            <section class="card">
                <h2>"Log"</h2>
                <pre class="log" data-testid="log">{log}</pre>
            </section>
        })}
    }
}
