//! One module per page.

mod admin;
mod apps;
mod home;
mod jobs;
mod landing;
mod login;
mod node;
mod nodes;
mod not_found;
mod register;
mod schedules;
mod settings;
mod usage;

pub use admin::Admin;
pub use apps::{AppPage, Apps};
pub use home::Home;
pub use jobs::{JobPage, Jobs};
pub use landing::Landing;
pub use login::Login;
pub use node::NodePage;
pub use nodes::Nodes;
pub use not_found::NotFound;
pub use register::Register;
pub use schedules::{SchedulePage, Schedules};
pub use settings::Settings;
pub use usage::Usage;

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::auth::{FormError, FormErrors};

/// A form's errors and its alert line, from the action's answer once the app is hydrated, or
/// from the query that a no-JS post was redirected back with.
fn form_feedback<V>(value: V) -> (Signal<FormErrors>, Signal<Option<String>>)
where
    V: Get<Value = Option<Result<FormErrors, ServerFnError>>> + Clone + Send + Sync + 'static,
{
    let value2 = value.clone();
    let query = use_query_map();
    let errors = Signal::derive(move || match value.get() {
        Some(Ok(errors)) => errors,
        Some(Err(_)) => FormErrors::default(),
        None => FormErrors::from_query(|k| query.read().get(k)),
    });
    let reply = crate::components::action_alert(value2);
    let alert = Signal::derive(move || reply.get().or_else(|| errors.get().form.map(FormError::message)));
    (errors, alert)
}

/// A query parameter as a signal, for refilling a form after a no-JS round trip.
fn query_value(key: &'static str) -> Signal<String> {
    let query = use_query_map();
    Signal::derive(move || query.read().get(key).unwrap_or_default())
}
