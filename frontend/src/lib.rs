//! The browser entry point: hydrates the HTML that the server rendered, so every page works
//! before this WASM loads and becomes interactive once it has.

// Leptos views are deeply nested types; the release build of the node table needs more room.
#![recursion_limit = "512"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
