//! A file upload form with a progress bar.
//!
//! Without the WASM it is a plain multipart form: the browser posts it and the server redirects
//! to the new page (or back with `?error=`). Once hydrated, the submit goes through
//! `XMLHttpRequest`, whose upload events drive a `<progress>` bar, and the JSON answer decides
//! where to go next.

use leptos::prelude::*;

/// Where a successful upload leads: `/apps/{id}`, `/jobs/{id}` or `/schedules/{id}`.
#[derive(Clone, Copy)]
pub enum Lands {
    App,
    Job,
    Schedule,
}

impl Lands {
    #[cfg(feature = "hydrate")]
    fn page(self, id: &str) -> String {
        match self {
            Lands::App => format!("/apps/{id}"),
            Lands::Job => format!("/jobs/{id}"),
            Lands::Schedule => format!("/schedules/{id}"),
        }
    }
}

#[component]
pub fn UploadForm(
    /// The API route the form posts to.
    action: &'static str,
    lands: Lands,
    /// What the submit button says.
    submit: &'static str,
    #[prop(optional)] testid: &'static str,
    children: Children,
) -> impl IntoView {
    // (sent, total) while uploading.
    let (progress, set_progress) = signal(None::<(f64, f64)>);
    let (error, set_error) = signal(None::<String>);
    let query = leptos_router::hooks::use_query_map();
    let shown_error = move || error.get().or_else(|| query.read().get("error"));
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        #[cfg(feature = "hydrate")]
        send(ev, action, lands, set_progress, set_error);
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, lands, set_progress, set_error);
    };
    view! {
        <form method="post" action=action enctype="multipart/form-data" class="upload" data-testid=testid on:submit=on_submit>
            {children()}
            <div class="row">
                <button type="submit" disabled=move || progress.get().is_some()>{submit}</button>
                {move || progress.get().map(|(sent, total)| {
                    let pct = if total > 0.0 { (sent / total * 100.0).round() } else { 0.0 };
                    view! {
                        <progress max="100" value=pct data-testid="upload-progress"></progress>
                        <span class="muted small">{format!("{pct:.0} % of {}", human_bytes(total))}</span>
                    }
                })}
            </div>
            <Show when=move || shown_error().is_some()>
                <div class="alert" role="alert" data-testid="upload-error">{shown_error}</div>
            </Show>
        </form>
    }
}

/// `1.5 MB`-style sizes.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(feature = "hydrate")]
fn send(
    ev: leptos::ev::SubmitEvent,
    action: &'static str,
    lands: Lands,
    set_progress: WriteSignal<Option<(f64, f64)>>,
    set_error: WriteSignal<Option<String>>,
) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;

    let Some(form) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlFormElement>().ok()) else { return };
    let Ok(data) = web_sys::FormData::new_with_form(&form) else { return };
    let Ok(xhr) = web_sys::XmlHttpRequest::new() else { return };
    ev.prevent_default();
    if xhr.open("POST", action).is_err() {
        return;
    }
    let _ = xhr.set_request_header("Accept", "application/json");
    set_error.set(None);
    set_progress.set(Some((0.0, 0.0)));
    if let Ok(upload) = xhr.upload() {
        let on_progress = Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |e: web_sys::ProgressEvent| {
            set_progress.set(Some((e.loaded(), e.total())));
        });
        upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        on_progress.forget();
    }
    let request = xhr.clone();
    let on_done = Closure::<dyn FnMut()>::new(move || {
        set_progress.set(None);
        let body = request.response_text().ok().flatten().unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match (request.status().unwrap_or(0), json["id"].as_str()) {
            (200..=299, Some(id)) => {
                if let Some(w) = web_sys::window() {
                    let _ = w.location().set_href(&lands.page(id));
                }
            }
            _ => set_error
                .set(Some(json["error"]["message"].as_str().map_or_else(|| "The upload failed. Try again.".to_string(), str::to_string))),
        }
    });
    xhr.set_onloadend(Some(on_done.as_ref().unchecked_ref()));
    on_done.forget();
    if xhr.send_with_opt_form_data(Some(&data)).is_err() {
        set_progress.set(None);
        set_error.set(Some("The upload could not start.".into()));
    }
}
