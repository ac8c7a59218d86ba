use leptos::prelude::*;
use leptos_meta::Title;

use crate::admin::admin_overview;
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
                        <section class="card">
                            <h2>"Accounts"</h2>
                            <table>
                                <thead><tr><th>"Email"</th><th>"Name"</th><th>"Role"</th></tr></thead>
                                <tbody>
                                    {o.users.into_iter().map(|u| view! {
                                        <tr><td>{u.email}</td><td>{u.name}</td><td>{u.role.as_str()}</td></tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </section>
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
