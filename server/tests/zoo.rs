//! One model of every family in the ONNX zoo (`scripts/zoo.sh`) through the whole platform:
//! uploaded through the JSON API, run by a real `node-agent` on its input, the predictions
//! downloaded and compared with onnxruntime's. `runner/tests/zoo.rs` checks every zoo model in
//! process; this checks that what the runner can do, a user gets. A missing zoo fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::path::PathBuf;

use common::fleet::{assert_same_predictions, json, Agent, User};
use common::{DbKind, TestServer};

/// One per family: linear (default ZipMap export), string labels, SVM, trees (forest, binary
/// boosting, histogram boosting, regressors), MLP and k-NN pipelines, imputation with missing
/// values, PCA, and the PyTorch-style networks.
const FAMILIES: &[&str] = &[
    "iris_logreg",
    "bc_logreg_str",
    "iris_svc",
    "iris_rf",
    "bc_gb",
    "digits_hgb",
    "diabetes_gb",
    "bc_minmax_mlp",
    "iris_knn",
    "bcnan_imputer_rf",
    "digits_pca_logreg",
    "diabetes_std_svr",
    "torch_mlp",
    "torch_cnn",
];

fn zoo() -> PathBuf {
    let dir = std::env::var_os("AIEDGE_ZOO").map_or_else(|| PathBuf::from("/var/tmp/aiedge-zoo"), PathBuf::from);
    assert!(dir.join("manifest.tsv").exists(), "the model zoo is missing in {}; run scripts/zoo.sh (or set AIEDGE_ZOO)", dir.display());
    dir
}

/// The input file of a zoo model, from the manifest.
fn input_of(dir: &std::path::Path, model: &str) -> String {
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap();
    let line =
        manifest.lines().find(|l| l.split('\t').next() == Some(model)).unwrap_or_else(|| panic!("{model} not in the zoo; rebuild it"));
    line.split('\t').nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_family_runs_through_the_platform() {
    let dir = zoo();
    let server = TestServer::start(DbKind::Sqlite).await;
    let user = User::new(&server, "zoo@example.org").await;
    let (node, token) = user.add_node("zoo-box").await;
    let _agent = Agent::start(&server, &token, "zoo-box", &["--max-jobs", "4"]);
    user.wait_node_active(&node).await;

    let mut jobs = Vec::new();
    for model in FAMILIES {
        let bytes = std::fs::read(dir.join(format!("{model}.onnx"))).unwrap();
        json(user.upload(model, &format!("{model}.onnx"), bytes, None).await, 201).await;
        let input = std::fs::read(dir.join(input_of(&dir, model))).unwrap();
        let job = json(user.submit(model, Some(input)).await, 201).await;
        jobs.push((model, job["id"].as_str().unwrap().to_string()));
    }
    for (model, id) in jobs {
        let done = user.wait_job(&id).await;
        assert_eq!(done["status"], "succeeded", "{model}: {done}");
        let got = user.get(&format!("/api/v1/jobs/{id}/result")).await.text().await.unwrap();
        let expected = std::fs::read_to_string(dir.join(format!("{model}.expected.csv"))).unwrap();
        println!("comparing {model}"); // shown with a failure
        assert_same_predictions(&got, &expected);
    }
    server.stop().await;
}
