use leptos::prelude::*;
use leptos_meta::Title;

/// What the platform is, for a first-time visitor.
#[component]
pub fn Landing() -> impl IntoView {
    view! {
        <Title text="" />
        <section class="hero">
            <h1>"Run your models where your data lives."</h1>
            <p class="lead">
                "AI on the Edge pools the machines you already own (sensor gateways, lab PCs, "
                "single-board computers, GPU boxes) and runs ML inference on them. Upload an ONNX "
                "model or a script, run it on your data on the healthiest machine, watch it live, "
                "and download the predictions."
            </p>
            <div class="actions">
                <a class="button" href="/register">"Create an account"</a>
                <a class="button secondary" href="/login">"Log in"</a>
            </div>
        </section>
        <section class="features">
            <article>
                <h2>"Pool your machines"</h2>
                <p>"Add a machine with one command. Its agent reports free CPU, memory, speed and temperature every two seconds."</p>
            </article>
            <article>
                <h2>"The best node, every time"</h2>
                <p>"Every node is scored on load, performance and heat; each job goes to the best one, and moves if that node dies."</p>
            </article>
            <article>
                <h2>"Watch it happen"</h2>
                <p>"Job status, node health and charts update live in the browser. Scripts and notebooks get a JSON API."</p>
            </article>
        </section>
    }
}
