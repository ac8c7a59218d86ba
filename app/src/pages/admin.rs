use leptos::prelude::*;
use leptos_meta::Title;

use leptos::form::ActionForm;
use leptos_router::hooks::use_query_map;

use crate::admin::{admin_accounts, admin_overview, admin_storage, AccountDeleted, DeleteAccount, SetAccountDisabled, SetAccountRole};
use crate::charts::RowBars;
use crate::components::{action_alert, FormAlert};
use crate::live::{clock, live_nodes};
use crate::node_table::{age, NodeTable};
use crate::nodes::{all_nodes, node_history};
use crate::upload::human_bytes;

/// The admin dashboard: the live resource view of every node, and the accounts.
#[component]
pub fn Admin() -> impl IntoView {
    let overview = Resource::new(|| (), |_| admin_overview());
    let fleet = Resource::new(|| (), |_| async move { (all_nodes().await, node_history("all".into()).await) });
    let now = clock();
    view! {
        <Title text="Admin" />
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Ok(o) => view! {
                        <section class="card">
                            <h1>"Admin"</h1>
                            <div class="stats">
                                <div class="stat"><span class="value" data-testid="user-count">{o.users.len()}</span><span class="label">"accounts"</span></div>
                                <div class="stat"><span class="value">{o.admins}</span><span class="label">"admins"</span></div>
                            </div>
                            <p><a href="/jobs?scope=all" data-testid="all-jobs">"Everyone's jobs →"</a></p>
                        </section>
                        <section class="card">
                            <h2>"Resources"</h2>
                            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                                {move || Suspend::new(async move {
                                    let (list, history) = fleet.await;
                                    let (nodes, history, _) = live_nodes("all", list.unwrap_or_default(), history.unwrap_or_default());
                                    view! { <NodeTable nodes history now admin=true /> }
                                })}
                            </Suspense>
                        </section>
                        <Storage />
                        <Accounts />
                    }.into_any(),
                    Err(_) => view! {
                        <section class="card" data-testid="forbidden">
                            <h1>"Admins only"</h1>
                            <p>"This page is for administrators. " <a href="/home">"Back to your home"</a></p>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Storage used per account (a bar each, largest first) and in all, as the lease holder last
/// measured it (every ten minutes), and the database's size.
#[component]
fn Storage() -> impl IntoView {
    let report = Resource::new(|| (), |_| admin_storage());
    let now = clock();
    let bytes = |n: i64| human_bytes(n as f64);
    view! {
        <section class="card" id="storage" data-testid="storage">
            <h2>"Storage"</h2>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match report.await {
                        Ok(r) => {
                            let measured = match r.measured_at_ms {
                                Some(at) => view! { "Measured " {move || age(now.get(), Some(at))} "; measured again every ten minutes." }.into_any(),
                                None => view! { "Not measured yet: the first measurement comes a few seconds after the server starts." }.into_any(),
                            };
                            let rows: Vec<(String, Vec<f64>)> = r.accounts.iter().take(20)
                                .map(|a| (a.email.clone().unwrap_or_else(|| "no account (orphans, uploads)".into()), vec![a.bytes as f64]))
                                .collect();
                            view! {
                                <div class="stats">
                                    <div class="stat"><span class="value" data-testid="stored-bytes">{bytes(r.stored_bytes)}</span><span class="label">"stored (files and small artifacts)"</span></div>
                                    <div class="stat"><span class="value" data-testid="database-bytes">{bytes(r.database_bytes)}</span><span class="label">"database on disk"</span></div>
                                </div>
                                <RowBars title="Stored, per account" testid="chart-storage" names=vec!["stored"] rows unit=human_bytes />
                                <div class="table-scroll">
                                    <table class="table compact" data-testid="storage-accounts">
                                        <thead><tr><th>"Account"</th><th class="num">"Stored"</th><th class="num">"Objects"</th><th class="num">"Jobs"</th></tr></thead>
                                        <tbody>
                                            {r.accounts.into_iter().map(|a| view! {
                                                <tr data-testid="storage-account">
                                                    <td>{a.email.unwrap_or_else(|| "no account".into())}</td>
                                                    <td class="num">{bytes(a.bytes)}</td>
                                                    <td class="num">{a.objects}</td>
                                                    <td class="num">{a.jobs}</td>
                                                </tr>
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                                <p class="muted small" data-testid="storage-measured">{measured}</p>
                            }.into_any()
                        }
                        Err(e) => view! { <div class="alert" role="alert">{e.to_string()}</div> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// The accounts, searchable by email or name, each with its role and state and the admin's
/// actions on it. Plain forms: they work before the WASM loads. Deleting is behind a disclosure
/// (`<details>`, no script needed) that states what goes, with an "I understand" box the form
/// requires; afterwards the page says what was deleted (from the action's answer, or from the
/// query a plain form post is sent back with).
#[component]
fn Accounts() -> impl IntoView {
    let query = use_query_map();
    let q = move || query.read().get("q").unwrap_or_default();
    let disable = ServerAction::<SetAccountDisabled>::new();
    let role = ServerAction::<SetAccountRole>::new();
    let delete = ServerAction::<DeleteAccount>::new();
    let accounts = Resource::new(
        move || (q(), disable.version().get(), role.version().get(), delete.version().get()),
        |(q, _, _, _)| admin_accounts(q),
    );
    let disable_alert = action_alert(disable.value());
    let role_alert = action_alert(role.value());
    let delete_alert = action_alert(delete.value());
    let deleted = move || delete.value().get().and_then(Result::ok).or_else(|| AccountDeleted::from_query(|k| query.read().get(k)));
    view! {
        <section class="card" id="accounts">
            <h2>"Accounts"</h2>
            <p class="muted">"A disabled account cannot sign in, its API tokens are refused and its queued jobs wait until it is enabled again. A new role takes effect at the account's next sign-in: its sessions end. Deleting an account is for good: its unfinished jobs are cancelled, its nodes removed (other accounts' jobs on them move to other nodes), and its schedules, applications, jobs with their files, API tokens and sessions deleted."</p>
            <form method="get" action="/admin" class="row">
                <input type="search" name="q" value=q placeholder="Email or name" aria-label="Search accounts" />
                <button type="submit" class="secondary">"Search"</button>
            </form>
            <FormAlert message=disable_alert />
            <FormAlert message=role_alert />
            <FormAlert message=delete_alert />
            {move || deleted().map(|d| view! { <p class="notice" role="status" data-testid="account-deleted">{d.message()}</p> })}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match accounts.await {
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No account matches."</p> }.into_any(),
                        Ok(list) => view! {
                            <table class="table compact" data-testid="accounts">
                                <thead><tr><th>"Email"</th><th>"Name"</th><th>"Role"</th><th>"State"</th><th>""</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| {
                                        let (next_role, role_label) = if u.is_admin() { ("user", "Make user") } else { ("admin", "Make admin") };
                                        let (next_disabled, state_label) = if u.disabled { ("false", "Enable") } else { ("true", "Disable") };
                                        let (id_for_state, id_for_role, id_for_delete) = (u.id.clone(), u.id.clone(), u.id.clone());
                                        view! {
                                            <tr data-testid="account" class:disabled=u.disabled>
                                                <td>{u.email.clone()}</td>
                                                <td>{u.name.clone()}</td>
                                                <td>{u.role.as_str()}</td>
                                                <td>{if u.disabled { "disabled" } else { "enabled" }}</td>
                                                <td class="row">
                                                    <ActionForm action=disable attr:class="inline">
                                                        <input type="hidden" name="id" value=id_for_state />
                                                        <input type="hidden" name="disabled" value=next_disabled />
                                                        <button type="submit" class="secondary">{state_label}</button>
                                                    </ActionForm>
                                                    <ActionForm action=role attr:class="inline">
                                                        <input type="hidden" name="id" value=id_for_role />
                                                        <input type="hidden" name="role" value=next_role />
                                                        <button type="submit" class="secondary">{role_label}</button>
                                                    </ActionForm>
                                                    <details data-testid="delete-account">
                                                        <summary>"Delete…"</summary>
                                                        <ActionForm action=delete attr:class="stack">
                                                            <input type="hidden" name="id" value=id_for_delete />
                                                            <p class="small">
                                                                "Deletes " <strong>{u.email.clone()}</strong> " for good. Its queued and running jobs are cancelled (a node running one stops it). "
                                                                "Its nodes are removed: their agents' credentials are revoked, and other accounts' jobs on them move to other nodes. "
                                                                "Its schedules, its applications, its jobs with their inputs, results and logs, its nodes' history, its API tokens and its sessions are deleted. This cannot be undone."
                                                            </p>
                                                            <label class="choice"><input type="checkbox" name="confirm" value="yes" required /> "I understand"</label>
                                                            <button type="submit" class="danger">"Delete account"</button>
                                                        </ActionForm>
                                                    </details>
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(e) => view! { <div class="alert" role="alert">{e.to_string()}</div> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}
