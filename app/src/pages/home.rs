use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::current_user;

/// The signed-in home. The page guard has already sent anonymous visitors to the login page.
#[component]
pub fn Home() -> impl IntoView {
    let user = Resource::new(|| (), |_| current_user());
    view! {
        <Title text="Home" />
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match user.await {
                    Ok(Some(u)) => view! {
                        <section class="card">
                            <h1 data-testid="welcome">"Welcome, " {u.name.clone()}</h1>
                            <p class="muted">"Signed in as " <strong>{u.email.clone()}</strong>
                                {if u.is_admin() { " · administrator" } else { "" }}</p>
                        </section>
                        <section class="grid">
                            <article class="card">
                                <h2>"Nodes"</h2>
                                <p class="muted">"Pool your machines: add one, run the agent on it, watch its health live."</p>
                                <a class="button small" href="/nodes">"My nodes"</a>
                            </article>
                            <article class="card">
                                <h2>"Applications and jobs"</h2>
                                <p class="muted">"Upload an ONNX model or a script bundle, run it on a CSV, watch it live and download the predictions."</p>
                                <p class="row"><a class="button small" href="/apps">"My applications"</a> <a class="button small secondary" href="/jobs">"My jobs"</a></p>
                            </article>
                        </section>
                    }.into_any(),
                    _ => view! {
                        <section class="card"><p>"Your session has ended. " <a href="/login">"Log in again"</a></p></section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
