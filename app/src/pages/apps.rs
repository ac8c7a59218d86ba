use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::jobs::{get_app, my_apps, AppDetails, AppView, DeleteApp};
use crate::live::clock;
use crate::node_table::age;
use crate::upload::{human_bytes, Lands, UploadForm};

/// "Applications": upload an ONNX model or a script bundle, and list yours.
#[component]
pub fn Apps() -> impl IntoView {
    let apps = Resource::new(|| (), |_| my_apps());
    let now = clock();
    view! {
        <Title text="Applications" />
        <section class="card">
            <h1>"Applications"</h1>
            <p class="muted">"An ONNX model (" <code>".onnx"</code> ", optionally with a default input CSV), or a script bundle: a "
                <code>".zip"</code> " with an " <code>"aiedge.toml"</code> " naming the entry command, its runtime, its output file and a time limit."</p>
            <UploadForm action="/api/v1/applications" lands=Lands::App submit="Upload" testid="upload-app">
                <div class="field">
                    <label for="app-name">"Name"</label>
                    <input id="app-name" name="name" placeholder="e.g. iris-classifier" maxlength="64" />
                    <p class="hint">"Defaults to the file name."</p>
                </div>
                <div class="field">
                    <label for="app-file">"Model or bundle"</label>
                    <input id="app-file" name="file" type="file" accept=".onnx,.zip" required />
                </div>
                <div class="field">
                    <label for="app-input">"Default input CSV (optional)"</label>
                    <input id="app-input" name="default_input" type="file" accept=".csv,text/csv" />
                </div>
            </UploadForm>
        </section>
        <section class="card">
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match apps.await {
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No applications yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table class="table" data-testid="apps">
                                <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Size"</th><th>"SHA-256"</th><th>"Uploaded"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|a| {
                                        let created = a.created_at_ms;
                                        view! {
                                            <tr>
                                                <td><a href=format!("/apps/{}", a.id)>{a.name.clone()}</a></td>
                                                <td>{kind_label(&a)}</td>
                                                <td>{human_bytes(a.size_bytes as f64)}</td>
                                                <td><code title=a.sha256.clone()>{a.sha256.chars().take(12).collect::<String>()}</code></td>
                                                <td>{move || age(now.get(), Some(created))}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(_) => view! { <p>"Could not load your applications."</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

fn kind_label(a: &AppView) -> &'static str {
    match a.details {
        AppDetails::Onnx { .. } => "ONNX model",
        AppDetails::Script { .. } => "Script bundle",
    }
}

/// One application: what it is, a form to run it, and deletion.
#[component]
pub fn AppPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let app = Resource::new(id, get_app);
    let delete = ServerAction::<DeleteApp>::new();
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match app.await {
                    Ok(Some(a)) => {
                        let id = a.id.clone();
                        let delete_id = a.id.clone();
                        let has_default = a.default_input_rows.is_some();
                        view! {
                            <Title text=a.name.clone() />
                            <section class="card">
                                <p class="muted small"><a href="/apps">"← Applications"</a></p>
                                <h1 data-testid="app-name">{a.name.clone()}</h1>
                                <p class="muted">{kind_label(&a)} " · " {human_bytes(a.size_bytes as f64)} " · SHA-256 " <code>{a.sha256.clone()}</code></p>
                                <Details details=a.details.clone() />
                                {a.default_input_rows.map(|rows| view! { <p>"Default input: " {rows} " rows."</p> })}
                            </section>
                            <section class="card">
                                <h2>"Run"</h2>
                                <UploadForm action="/api/v1/jobs" lands=Lands::Job submit="Run" testid="run-form">
                                    <input type="hidden" name="application" value=id.clone() />
                                    <div class="field">
                                        <label for="job-input">{if has_default { "Input CSV (leave empty for the default input)" } else { "Input CSV" }}</label>
                                        <input id="job-input" name="input" type="file" accept=".csv,text/csv" required=!has_default />
                                    </div>
                                    <label class="choice">
                                        <input type="checkbox" name="pool" value="own" data-testid="own-nodes-only" />
                                        " Only on my own nodes, not on nodes others share with me"
                                    </label>
                                </UploadForm>
                            </section>
                            <section class="card">
                                <ActionForm action=delete attr:class="inline">
                                    <input type="hidden" name="id" value=delete_id />
                                    <button type="submit" class="danger small">"Delete application"</button>
                                </ActionForm>
                                <span class="muted small">" Past jobs keep their results; new jobs cannot use it."</span>
                            </section>
                        }.into_any()
                    }
                    Ok(None) => view! { <section class="card"><h1>"Not found"</h1><p>"No such application."</p></section> }.into_any(),
                    Err(_) => view! { <p>"Could not load the application."</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Details(details: AppDetails) -> impl IntoView {
    match details {
        AppDetails::Onnx { inputs, outputs, features, columns } => view! {
            <table class="table compact" data-testid="model-io">
                <thead><tr><th></th><th>"Name"</th><th>"Type"</th><th>"Shape"</th></tr></thead>
                <tbody>
                    {inputs.into_iter().map(|t| view! { <tr><td>"input"</td><td><code>{t.name}</code></td><td>{t.dtype}</td><td>{t.shape}</td></tr> }).collect_view()}
                    {outputs.into_iter().map(|t| view! { <tr><td>"output"</td><td><code>{t.name}</code></td><td>{t.dtype}</td><td>{t.shape}</td></tr> }).collect_view()}
                </tbody>
            </table>
            <p>"Input CSV: a header row, then one row per example with " <strong>{features}</strong> " numeric columns."</p>
            <p>"Predictions CSV columns: " <code>{columns.join(", ")}</code></p>
        }
        .into_any(),
        AppDetails::Script { entry, runtime, output, time_limit_secs, memory_mb } => view! {
            <dl class="facts">
                <dt>"Entry"</dt><dd><code>{entry}</code></dd>
                <dt>"Runtime"</dt><dd>{runtime}</dd>
                <dt>"Output"</dt><dd><code>{output}</code></dd>
                <dt>"Limits"</dt><dd>{format!("{time_limit_secs} s, {memory_mb} MiB")}</dd>
            </dl>
        }
        .into_any(),
    }
}
