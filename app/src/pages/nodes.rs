use leptos::prelude::*;
use leptos_meta::Title;

use crate::components::FormAlert;
use crate::live::{clock, live_nodes};
use crate::node_table::NodeTable;
use crate::nodes::{my_nodes, node_history, AddNode};

/// "My nodes": add a node (name → one-time token and command), and watch your nodes live.
#[component]
pub fn Nodes() -> impl IntoView {
    let add = ServerAction::<AddNode>::new();
    let added = add.value();
    let alert = crate::components::action_alert(added);
    let data = Resource::new(move || add.version().get(), |_| async move { (my_nodes().await, node_history("mine".into()).await) });
    let now = clock();

    view! {
        <Title text="My nodes" />
        <section class="card">
            <h1>"My nodes"</h1>
            <p class="muted">"Add a machine: name it, then run the command we show on that machine. The token works once, for 30 minutes."</p>
            <FormAlert message=alert />
            <ActionForm action=add attr:class="row" attr:data-testid="add-node-form">
                <label for="node-name" class="sr-only">"Node name"</label>
                <input id="node-name" name="name" placeholder="e.g. lab-pc-3" required maxlength="64" />
                <button type="submit">"Add node"</button>
            </ActionForm>
            {move || added.get().and_then(Result::ok).map(|new| {
                let (install, command) = (new.install.clone(), new.command.clone());
                view! {
                    <div class="token-panel" data-testid="new-node">
                        <p>"Node " <strong>{new.node.name.clone()}</strong> " is waiting for its agent. Paste this on the machine (Linux on x86-64, 64-bit ARM or ARMv7, e.g. a Raspberry Pi):"</p>
                        <pre><code data-testid="install-command">{new.install.clone()}</code></pre>
                        <CopyButton text=install />
                        <p class="muted small">
                            "It downloads the agent from this server, checks its SHA-256, installs it as the systemd service "
                            <code>"aiedge-agent"</code>" under a user of its own, enrols the machine and starts it. "
                            <a href="/install.sh">"Read the script"</a>" first if you like."
                        </p>
                        <details>
                            <summary>"Already have the agent, or no root? Run it by hand"</summary>
                            <pre><code data-testid="agent-command">{new.command.clone()}</code></pre>
                            <CopyButton text=command />
                        </details>
                        <p class="muted small">"The token is shown only now, works once and expires in 30 minutes."</p>
                    </div>
                }
            })}
        </section>
        <section class="card">
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match data.await {
                        (Ok(list), history) => {
                            let empty = list.is_empty();
                            let (nodes, history, _) = live_nodes("mine", list, history.unwrap_or_default());
                            view! {
                                <Show when=move || !empty fallback=|| view! { <p class="muted">"No nodes yet."</p> }>
                                    <NodeTable nodes history now admin=false />
                                </Show>
                            }.into_any()
                        }
                        (Err(_), _) => view! { <p>"Could not load your nodes."</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// Copies `text` to the clipboard (once the WASM runs; the text is selectable anyway).
#[component]
fn CopyButton(text: String) -> impl IntoView {
    let (copied, set_copied) = signal(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(&text);
            set_copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&text, set_copied);
    };
    view! {
        <button type="button" class="small secondary" on:click=copy>
            {move || if copied.get() { "Copied" } else { "Copy command" }}
        </button>
    }
}
