//! Layout and form pieces shared by the pages.

use leptos::prelude::*;
use leptos_router::hooks::use_location;

use crate::auth::{current_user, FormError, Logout};

/// The top bar: the product's name, and who is signed in (or the way to sign in).
#[component]
pub fn Nav() -> impl IntoView {
    let location = use_location();
    // Fetched again on each navigation, so signing in or out shows at once.
    let user = Resource::new(move || location.pathname.get(), |_| current_user());
    let logout = ServerAction::<Logout>::new();

    view! {
        <header class="topbar">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"◆"</span>
                " AI on the Edge"
            </a>
            <nav>
                <Transition fallback=|| ()>
                    {move || {
                        user.get()
                            .map(|u| match u.ok().flatten() {
                                Some(u) => {
                                    let admin = u.is_admin();
                                    view! {
                                        <a href="/home">"Home"</a>
                                        <a href="/apps">"Applications"</a>
                                        <a href="/jobs">"Jobs"</a>
                                        <a href="/schedules">"Schedules"</a>
                                        <a href="/nodes">"My nodes"</a>
                                        <a href="/settings">"Settings"</a>
                                        <Show when=move || admin>
                                            <a href="/admin">"Admin"</a>
                                            <a href="/usage">"Usage"</a>
                                        </Show>
                                        <span class="who" data-testid="who">{u.name.clone()}</span>
                                        <ActionForm action=logout attr:class="inline">
                                            <button type="submit" class="link">"Log out"</button>
                                        </ActionForm>
                                    }
                                        .into_any()
                                }
                                None => {
                                    view! {
                                        <a href="/login">"Log in"</a>
                                        <a class="button small" href="/register">"Create account"</a>
                                    }
                                        .into_any()
                                }
                            })
                    }}
                </Transition>
            </nav>
        </header>
    }
}

/// A labelled input with its error, if any, shown under it.
#[component]
pub fn Field(
    label: &'static str,
    name: &'static str,
    #[prop(default = "text")] kind: &'static str,
    #[prop(default = "")] autocomplete: &'static str,
    #[prop(optional, into)] value: Signal<String>,
    #[prop(into)] error: Signal<Option<FormError>>,
    #[prop(optional)] hint: &'static str,
    #[prop(optional)] required: bool,
) -> impl IntoView {
    let id = format!("field-{name}");
    let err_id = format!("{id}-error");
    let has_error = move || error.get().is_some();
    view! {
        <div class="field" class:invalid=has_error>
            <label for=id.clone()>{label}</label>
            <input
                id=id
                name=name
                type=kind
                autocomplete=autocomplete
                value=move || value.get()
                required=required
                aria-invalid=move || if has_error() { "true" } else { "false" }
                aria-describedby=err_id.clone()
            />
            <Show when=move || !hint.is_empty() && !has_error()>
                <p class="hint">{hint}</p>
            </Show>
            <p class="error" id=err_id role="alert">
                {move || error.get().map(FormError::message)}
            </p>
        </div>
    }
}

/// What a form's alert line says once its action answered: the server's words for a refusal,
/// a line of our own when the server could not be reached, nothing after a success.
pub fn action_alert<T, V>(value: V) -> Signal<Option<String>>
where
    V: Get<Value = Option<Result<T, ServerFnError>>> + Send + Sync + 'static,
    T: 'static,
{
    Signal::derive(move || match value.get() {
        Some(Err(ServerFnError::ServerError(message))) => Some(message),
        Some(Err(_)) => Some("Could not reach the server. Check your connection and try again.".to_string()),
        _ => None,
    })
}

/// An error about the form as a whole.
#[component]
pub fn FormAlert(#[prop(into)] message: Signal<Option<String>>) -> impl IntoView {
    view! {
        <Show when=move || message.get().is_some()>
            <div class="alert" role="alert" data-testid="form-alert">{move || message.get()}</div>
        </Show>
    }
}
