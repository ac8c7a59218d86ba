use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::charts::{duration, Lines, Series};
use crate::components::FormAlert;
use crate::jobs::my_apps;
use crate::live::ticker;
use crate::pages::jobs::StatusBadge;
use crate::schedules::{
    load_schedule, my_schedules, preview_schedule, DeleteSchedule, Overlap, PauseSchedule, RunOutcome, ScheduleDetail, ScheduleState,
    ScheduleView, UpdateSchedule,
};
use crate::upload::{Lands, UploadForm};

/// How often an open schedule page (and the list) is fetched again.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Zones offered in the form's list (any IANA name is accepted).
const ZONES: &[&str] = &[
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "Europe/Madrid",
    "Europe/Helsinki",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Asia/Singapore",
    "Australia/Sydney",
    "Africa/Lagos",
];

/// What an overlap policy does, in the words of the forms and the schedule's page.
fn overlap_label(policy: Overlap) -> &'static str {
    match policy {
        Overlap::Skip => "skip the new run",
        Overlap::Allow => "run both",
        Overlap::Replace => "cancel the previous run",
    }
}

/// The overlap policy's field, for the new schedule's form and the edit form.
#[component]
fn OverlapField(id: &'static str, selected: Overlap) -> impl IntoView {
    view! {
        <div class="field">
            <label for=id>"If the previous run has not ended"</label>
            <select id=id name="overlap">
                {Overlap::ALL.iter().map(|p| view! { <option value=p.as_str() selected=*p == selected>{overlap_label(*p)}</option> }).collect_view()}
            </select>
        </div>
    }
}

/// "0 2 * * * (Europe/Berlin)" or "once".
fn when(s: &ScheduleView) -> String {
    match &s.cron {
        Some(cron) => format!("{cron} ({})", s.time_zone),
        None => format!("once ({})", s.time_zone),
    }
}

/// "Schedules": the user's schedules, and a form for a new one.
#[component]
pub fn Schedules() -> impl IntoView {
    let tick = ticker(REFRESH);
    let list = Resource::new(move || tick.get(), |_| my_schedules());
    view! {
        <Title text="Schedules" />
        <section class="card">
            <h1>"Schedules"</h1>
            <p class="muted">"Jobs that run by themselves: every night at 02:00 in your time zone, every 5 minutes, or once next Monday at 09:00."</p>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match list.await {
                        Ok(list) if list.is_empty() => view! { <p class="muted" data-testid="no-schedules">"No schedules yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table class="table" data-testid="schedules">
                                <thead><tr><th>"Name"</th><th>"Application"</th><th>"When"</th><th>"State"</th><th>"Next run"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|s| view! {
                                        <tr data-schedule=s.id.clone()>
                                            <td><a href=format!("/schedules/{}", s.id)>{s.name.clone()}</a></td>
                                            <td>{s.app_name.clone()}</td>
                                            <td><code>{when(&s)}</code></td>
                                            <td><span class=format!("badge schedule-{}", s.state.as_str())>{s.state.as_str()}</span></td>
                                            <td>{s.upcoming.first().map(|f| f.local.clone()).unwrap_or_else(|| "—".into())}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(_) => view! { <p>"Could not load your schedules."</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <NewSchedule />
    }
}

/// The browser's own time zone, once the WASM runs (the server cannot know it).
fn browser_zone() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        let format = js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new());
        js_sys::Reflect::get(&format.resolved_options(), &"timeZone".into()).ok().and_then(|z| z.as_string())
    }
    #[cfg(not(feature = "hydrate"))]
    None
}

/// The form for a new schedule: a plain multipart post without the WASM; with it, the next
/// fire times show as the expression is typed.
#[component]
fn NewSchedule() -> impl IntoView {
    let apps = Resource::new(|| (), |_| my_apps());
    let (cron, set_cron) = signal(String::new());
    let (at, set_at) = signal(String::new());
    let (zone, set_zone) = signal("UTC".to_string());
    Effect::new(move |_| {
        if let Some(z) = browser_zone() {
            set_zone.set(z);
        }
    });
    let preview = Resource::new(move || (cron.get(), at.get(), zone.get()), |(c, a, z)| preview_schedule(c, a, z));
    view! {
        <section class="card">
            <h2>"New schedule"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match apps.await {
                        Ok(apps) if apps.is_empty() => view! {
                            <p class="muted">"Upload an " <a href="/apps">"application"</a> " first: a schedule runs one of yours."</p>
                        }.into_any(),
                        Ok(apps) => view! {
                            <UploadForm action="/api/v1/schedules" lands=Lands::Schedule submit="Create schedule" testid="schedule-form">
                                <div class="field">
                                    <label for="schedule-app">"Application"</label>
                                    <select id="schedule-app" name="application" required>
                                        {apps.into_iter().map(|a| view! { <option value=a.id.clone()>{a.name.clone()}</option> }).collect_view()}
                                    </select>
                                </div>
                                <div class="field">
                                    <label for="schedule-name">"Name"</label>
                                    <input id="schedule-name" name="name" placeholder="nightly scoring" />
                                </div>
                                <div class="field">
                                    <label for="schedule-cron">"Repeat (cron)"</label>
                                    <input id="schedule-cron" name="cron" placeholder="0 2 * * *" autocomplete="off" spellcheck="false"
                                        on:input=move |ev| set_cron.set(event_target_value(&ev)) />
                                    <p class="hint">
                                        "minute hour day-of-month month day-of-week, or seconds first: "
                                        <code>"0 2 * * *"</code>" every day at 02:00; "<code>"*/5 * * * *"</code>" every 5 minutes; "
                                        <code>"0 9 * * MON-FRI"</code>"; "<code>"0 9 L * *"</code>" the last day of the month; "
                                        <code>"*/10 * * * * *"</code>" every 10 seconds."
                                    </p>
                                </div>
                                <div class="field">
                                    <label for="schedule-at">"…or once, at"</label>
                                    <input id="schedule-at" name="at" type="datetime-local" on:input=move |ev| set_at.set(event_target_value(&ev)) />
                                </div>
                                <div class="field">
                                    <label for="schedule-zone">"Time zone"</label>
                                    <input id="schedule-zone" name="time_zone" list="zones" prop:value=move || zone.get()
                                        on:change=move |ev| set_zone.set(event_target_value(&ev)) />
                                    <datalist id="zones">{ZONES.iter().map(|z| view! { <option value=*z /> }).collect_view()}</datalist>
                                </div>
                                <div class="preview" data-testid="schedule-preview">
                                    <Transition fallback=|| ()>
                                        {move || preview.get().map(|p| match p {
                                            Ok(p) if p.error.is_some() => view! { <p class="error" role="alert" data-testid="preview-error">{p.error}</p> }.into_any(),
                                            Ok(p) if p.upcoming.is_empty() => view! {
                                                <p class="muted small">"The next fire times show here as you type."</p>
                                            }.into_any(),
                                            Ok(p) => view! {
                                                <p class="small"><strong>{p.description}</strong></p>
                                                <ol class="upcoming small">{p.upcoming.into_iter().map(|f| view! { <li>{f.local}</li> }).collect_view()}</ol>
                                            }.into_any(),
                                            Err(_) => ().into_any(),
                                        })}
                                    </Transition>
                                </div>
                                <OverlapField id="schedule-overlap" selected=Overlap::Skip />
                                <div class="field">
                                    <label for="schedule-deadline">"Starting deadline (seconds)"</label>
                                    <input id="schedule-deadline" name="deadline_s" type="number" min="0" max="604800" value="3600" />
                                    <p class="hint">"After the server was down or the schedule paused, the latest missed run still starts if at most this late; older ones are skipped."</p>
                                </div>
                                <div class="field">
                                    <label for="schedule-input">"Input CSV (leave empty for the application's default input)"</label>
                                    <input id="schedule-input" name="input" type="file" accept=".csv,text/csv" />
                                </div>
                                <label class="choice">
                                    <input type="checkbox" name="pool" value="own" />
                                    " Only on my own nodes, not on nodes others share with me"
                                </label>
                            </UploadForm>
                        }.into_any(),
                        Err(_) => view! { <p>"Could not load your applications."</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// One schedule: when it fires next, its runs with their jobs and a chart of run time, and
/// pause, resume, edit and delete.
#[component]
pub fn SchedulePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let tick = ticker(REFRESH);
    let actions = Actions { pause: ServerAction::new(), update: ServerAction::new(), delete: ServerAction::new() };
    // Fetched again after each action too, so a pause or an edit shows at once.
    let versions = move || (actions.pause.version().get(), actions.update.version().get());
    let detail = Resource::new(move || (id(), tick.get(), versions()), |(id, _, _)| load_schedule(id));
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(Some(d)) => view! { <ScheduleDetailView d actions /> }.into_any(),
                    Ok(None) => view! { <section class="card"><h1>"Not found"</h1><p>"No such schedule."</p></section> }.into_any(),
                    Err(_) => view! { <p>"Could not load the schedule."</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// What a schedule's page can do to it.
#[derive(Clone, Copy)]
struct Actions {
    pause: ServerAction<PauseSchedule>,
    update: ServerAction<UpdateSchedule>,
    delete: ServerAction<DeleteSchedule>,
}

#[component]
fn ScheduleDetailView(d: ScheduleDetail, actions: Actions) -> impl IntoView {
    let s = d.schedule;
    let Actions { pause, update, delete } = actions;
    let alert = crate::components::action_alert(update.value());
    let pause_alert = crate::components::action_alert(pause.value());
    let paused = s.state == ScheduleState::Paused;
    let (pause_id, delete_id, edit_id) = (s.id.clone(), s.id.clone(), s.id.clone());
    // Oldest first, for the chart.
    let fired: Vec<_> = d.runs.iter().rev().filter(|r| r.outcome == RunOutcome::Fired).cloned().collect();
    // The time of day ("Mon 2026-12-07 02:00:00 CET" → "02:00:00"); the table has the rest.
    let labels: Vec<String> = fired.iter().map(|r| r.local.get(15..23).unwrap_or(&r.local).to_string()).collect();
    let run_times = Series::sparse("run time", fired.iter().map(|r| r.run_ms.map(|ms| ms as f64)));
    let lateness = Series::new("lateness", fired.iter().map(|r| (r.recorded_at_ms - r.fire_at_ms).max(0) as f64));
    view! {
        <Title text=s.name.clone() />
        <section class="card">
            <p class="muted small"><a href="/schedules">"← Schedules"</a></p>
            <h1 data-testid="schedule-name">{s.name.clone()} " " <span class=format!("badge schedule-{}", s.state.as_str()) data-testid="schedule-state">{s.state.as_str()}</span></h1>
            <dl class="facts">
                <dt>"Runs"</dt><dd><a href=format!("/apps/{}", s.app_id)>{s.app_name.clone()}</a> " on " {s.input_name.clone()}</dd>
                <dt>"When"</dt><dd><code>{when(&s)}</code> <span class="muted">" · " {s.description.clone()}</span></dd>
                <dt>"If still running"</dt><dd>{overlap_label(s.overlap)}</dd>
                <dt>"Starting deadline"</dt><dd>{format!("{} s", s.deadline_s)}</dd>
            </dl>
            <h2>"Next runs"</h2>
            {if s.upcoming.is_empty() {
                view! { <p class="muted" data-testid="upcoming-none">{match s.state { ScheduleState::Paused => "None while paused.", _ => "None: it has no more fire times." }}</p> }.into_any()
            } else {
                view! { <ol class="upcoming" data-testid="upcoming">{s.upcoming.iter().map(|f| view! { <li>{f.local.clone()}</li> }).collect_view()}</ol> }.into_any()
            }}
            <div class="row">
                <ActionForm action=pause attr:class="inline">
                    <input type="hidden" name="id" value=pause_id />
                    <input type="hidden" name="paused" value=if paused { "false" } else { "true" } />
                    <button type="submit" class="secondary" data-testid="pause-resume">{if paused { "Resume" } else { "Pause" }}</button>
                </ActionForm>
                <ActionForm action=delete attr:class="inline">
                    <input type="hidden" name="id" value=delete_id />
                    <button type="submit" class="danger small">"Delete schedule"</button>
                </ActionForm>
                <span class="muted small">" Deleting keeps the jobs it ran."</span>
            </div>
            <FormAlert message=pause_alert />
        </section>
        <section class="card">
            <h2>"Runs"</h2>
            {(!fired.is_empty()).then(|| view! {
                <Lines title="Run time and lateness per run" series=vec![run_times, lateness] labels unit=duration testid="run-chart" />
            })}
            {if d.runs.is_empty() {
                view! { <p class="muted" data-testid="no-runs">"No runs yet."</p> }.into_any()
            } else {
                view! {
                    <table class="table compact" data-testid="runs">
                        <thead><tr><th>"Fire time"</th><th>"Outcome"</th><th>"Job"</th><th>"Took"</th><th>"Note"</th></tr></thead>
                        <tbody>
                            {d.runs.into_iter().map(|r| view! {
                                <tr data-outcome=r.outcome.as_str()>
                                    <td>{r.local.clone()}</td>
                                    <td><span class=format!("badge run-{}", r.outcome)>{r.outcome.as_str()}{(r.count > 1).then(|| format!(" ×{}", r.count))}</span></td>
                                    <td>{r.job_id.clone().map(|j| view! {
                                        <a href=format!("/jobs/{j}")><code>{j.chars().take(8).collect::<String>()}</code></a>
                                        " " {r.job_status.map(|st| view! { <StatusBadge status=st.as_str() /> })}
                                    })}</td>
                                    <td>{r.run_ms.map(|ms| duration(ms as f64))}</td>
                                    <td class="small">{r.note.clone()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
        <section class="card">
            <h2>"Edit"</h2>
            <ActionForm action=update attr:data-testid="edit-schedule">
                <input type="hidden" name="id" value=edit_id />
                <div class="field"><label for="edit-name">"Name"</label><input id="edit-name" name="name" value=s.name.clone() /></div>
                {match s.cron.clone() {
                    Some(cron) => view! { <div class="field"><label for="edit-cron">"Repeat (cron)"</label><input id="edit-cron" name="cron" value=cron spellcheck="false" /></div> }.into_any(),
                    None => view! { <div class="field"><label for="edit-at">"Once, at"</label><input id="edit-at" name="at" type="datetime-local" /></div> }.into_any(),
                }}
                <div class="field"><label for="edit-zone">"Time zone"</label><input id="edit-zone" name="time_zone" list="zones" value=s.time_zone.clone() /></div>
                <datalist id="zones">{ZONES.iter().map(|z| view! { <option value=*z /> }).collect_view()}</datalist>
                <OverlapField id="edit-overlap" selected=s.overlap />
                <div class="field"><label for="edit-deadline">"Starting deadline (seconds)"</label><input id="edit-deadline" name="deadline_s" type="number" min="0" max="604800" value=s.deadline_s.to_string() /></div>
                <button type="submit">"Save"</button>
            </ActionForm>
            <FormAlert message=alert />
        </section>
    }
}
