use leptos::prelude::*;
use leptos_meta::Title;

use super::{form_feedback, query_value};
use crate::auth::Login;
use crate::components::{Field, FormAlert};

#[component]
pub fn Login() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let (errors, alert) = form_feedback(login.value());
    let pending = login.pending();
    let next = query_value("next");

    view! {
        <Title text="Log in" />
        <section class="card narrow">
            <h1>"Log in"</h1>
            <FormAlert message=alert />
            <ActionForm action=login attr:novalidate=true attr:data-testid="login-form">
                <Field label="Email" name="email" kind="email" autocomplete="username"
                    value=query_value("email") error=Signal::derive(move || errors.get().email) required=true />
                <Field label="Password" name="password" kind="password" autocomplete="current-password"
                    error=Signal::derive(move || errors.get().password) required=true />
                <input type="hidden" name="next" value=move || next.get() />
                <label class="check">
                    <input type="checkbox" name="remember" value="on" />
                    " Remember me for 30 days"
                </label>
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Logging in…" } else { "Log in" }}
                </button>
            </ActionForm>
            <p class="muted">"New here? " <a href="/register">"Create an account"</a></p>
        </section>
    }
}
