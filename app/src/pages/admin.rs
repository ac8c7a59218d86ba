use leptos::prelude::*;
use leptos_meta::Title;

use leptos::form::ActionForm;
use leptos_router::hooks::use_query_map;

use crate::admin::{admin_accounts, admin_overview, SetAccountDisabled, SetAccountRole};
use crate::components::{action_alert, FormAlert};
use crate::live::{clock, live_nodes};
use crate::node_table::NodeTable;
use crate::nodes::{all_nodes, node_history};

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

/// The accounts, searchable by email or name, each with its role and state and the admin's
/// actions on it. Plain forms: they work before the WASM loads.
#[component]
fn Accounts() -> impl IntoView {
    let query = use_query_map();
    let q = move || query.read().get("q").unwrap_or_default();
    let disable = ServerAction::<SetAccountDisabled>::new();
    let role = ServerAction::<SetAccountRole>::new();
    let accounts = Resource::new(move || (q(), disable.version().get(), role.version().get()), |(q, _, _)| admin_accounts(q));
    let disable_alert = action_alert(disable.value());
    let role_alert = action_alert(role.value());
    view! {
        <section class="card" id="accounts">
            <h2>"Accounts"</h2>
            <p class="muted">"A disabled account cannot sign in, its API tokens are refused and its queued jobs wait until it is enabled again. A new role takes effect at the account's next sign-in: its sessions end."</p>
            <form method="get" action="/admin" class="row">
                <input type="search" name="q" value=q placeholder="Email or name" aria-label="Search accounts" />
                <button type="submit" class="secondary">"Search"</button>
            </form>
            <FormAlert message=disable_alert />
            <FormAlert message=role_alert />
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
                                        let (id_for_state, id_for_role) = (u.id.clone(), u.id.clone());
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
