use leptos::prelude::*;
use leptos_meta::Title;

use super::{form_feedback, query_value};
use crate::auth::ChangePassword;
use crate::components::{Field, FormAlert};
use crate::jobs::{my_tokens, CreateToken, RevokeToken};
use crate::live::clock;
use crate::node_table::age;

/// "Settings": the password, and personal API tokens for scripts and notebooks.
#[component]
pub fn Settings() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let created = create.value();
    let tokens = Resource::new(move || (create.version().get(), revoke.version().get()), |_| my_tokens());
    let alert = crate::components::action_alert(created);
    let now = clock();
    view! {
        <Title text="Settings" />
        <PasswordForm />
        <section class="card">
            <h1>"API tokens"</h1>
            <p class="muted">"Scripts use the JSON API with " <code>"Authorization: Bearer <token>"</code>
                ". See " <a href="/api/v1/openapi.json">"the OpenAPI document"</a> "."</p>
            <FormAlert message=alert />
            <ActionForm action=create attr:class="row" attr:data-testid="create-token">
                <label for="token-name" class="sr-only">"Token name"</label>
                <input id="token-name" name="name" placeholder="e.g. notebook" required maxlength="64" />
                <label for="token-expiry" class="sr-only">"Expires"</label>
                <select id="token-expiry" name="expires_in_days">
                    <option value="never">"Never expires"</option>
                    <option value="7">"Expires in 7 days"</option>
                    <option value="30">"Expires in 30 days"</option>
                    <option value="90" selected>"Expires in 90 days"</option>
                    <option value="365">"Expires in a year"</option>
                </select>
                <button type="submit">"Create token"</button>
            </ActionForm>
            {move || created.get().and_then(Result::ok).map(|new| view! {
                <div class="token-panel" data-testid="new-token">
                    <p>"Your new token " <strong>{new.token.name.clone()}</strong> ". Copy it now: it is shown only once."</p>
                    <pre><code data-testid="token-secret">{new.secret.clone()}</code></pre>
                </div>
            })}
        </section>
        <section class="card">
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No tokens yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table class="table" data-testid="tokens">
                                <thead><tr><th>"Name"</th><th>"Token"</th><th>"Created"</th><th>"Last used"</th><th>"Expires"</th><th></th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|t| {
                                        let (created_at, used, expires) = (t.created_at_ms, t.last_used_at_ms, t.expires_at_ms);
                                        let expired = move || expires.is_some_and(|at| at <= now.get());
                                        view! {
                                            <tr class:revoked=move || t.revoked_at_ms.is_some() || expired()>
                                                <td>{t.name.clone()}</td>
                                                <td><code>{format!("{}…", t.prefix)}</code></td>
                                                <td>{move || age(now.get(), Some(created_at))}</td>
                                                <td>{move || if used.is_some() { age(now.get(), used) } else { "never".into() }}</td>
                                                <td>{move || match expires {
                                                    None => "never".to_string(),
                                                    Some(at) if at <= now.get() => "expired".to_string(),
                                                    Some(at) => format!("in {} days", (at - now.get()).div_euclid(86_400_000) + 1),
                                                }}</td>
                                                <td>{if t.revoked_at_ms.is_some() {
                                                    view! { <span class="muted">"revoked"</span> }.into_any()
                                                } else {
                                                    view! {
                                                        <ActionForm action=revoke attr:class="inline">
                                                            <input type="hidden" name="id" value=t.id.clone() />
                                                            <button type="submit" class="small danger">"Revoke"</button>
                                                        </ActionForm>
                                                    }.into_any()
                                                }}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Err(_) => view! { <p>"Could not load your tokens."</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// Changing one's password: a plain form, so it works before the WASM loads.
#[component]
fn PasswordForm() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let (errors, alert) = form_feedback(change.value());
    let pending = change.pending();
    let done = query_value("password");
    let changed = move || done.get() == "changed" || change.value().get().is_some_and(|r| r.is_ok_and(|e| e.is_empty()));
    view! {
        <section class="card" data-testid="password">
            <h1>"Password"</h1>
            <p class="muted">"A new password signs out every other browser and device of yours."</p>
            <Show when=changed>
                <p class="notice" role="status" data-testid="password-changed">"Your password was changed."</p>
            </Show>
            <FormAlert message=alert />
            <ActionForm action=change attr:novalidate=true attr:class="stack">
                <Field label="Current password" name="current" kind="password" autocomplete="current-password" required=true
                    error=Signal::derive(|| None) />
                <Field label="New password" name="password" kind="password" autocomplete="new-password" required=true
                    error=Signal::derive(move || errors.get().password) />
                <button type="submit" disabled=move || pending.get()>"Change password"</button>
            </ActionForm>
        </section>
    }
}
