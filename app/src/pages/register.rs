use leptos::prelude::*;
use leptos_meta::Title;

use super::{form_feedback, query_value};
use crate::auth::Register;
use crate::components::{Field, FormAlert};

/// Must agree with `auth::PASSWORD_MIN_CHARS`.
const PASSWORD_HINT: &str = "At least 8 characters.";

#[component]
pub fn Register() -> impl IntoView {
    let register = ServerAction::<Register>::new();
    let (errors, alert) = form_feedback(register.value());
    let pending = register.pending();

    view! {
        <Title text="Create account" />
        <section class="card narrow">
            <h1>"Create your account"</h1>
            <FormAlert message=alert />
            <ActionForm action=register attr:novalidate=true attr:data-testid="register-form">
                <Field label="Email" name="email" kind="email" autocomplete="email"
                    value=query_value("email") error=Signal::derive(move || errors.get().email) required=true />
                <Field label="Name (optional)" name="name" autocomplete="name"
                    value=query_value("name") error=Signal::derive(move || errors.get().name) />
                <Field label="Password" name="password" kind="password" autocomplete="new-password"
                    hint=PASSWORD_HINT error=Signal::derive(move || errors.get().password) required=true />
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Creating…" } else { "Create account" }}
                </button>
            </ActionForm>
            <p class="muted">"Already have an account? " <a href="/login">"Log in"</a></p>
        </section>
    }
}
