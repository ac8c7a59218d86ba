//! `node-agent predict`: a model run locally exactly as a job runs it, against onnxruntime's
//! reference outputs (see scripts/make_fixtures.py), and clear errors for bad models and CSVs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner/fixtures").join(name)
}

fn predict(model: &Path, input: &Path, output: &str) -> std::process::Output {
    common::agent().arg("predict").arg("--model").arg(model).arg("--input").arg(input).args(["--output", output]).output().unwrap()
}

/// Same header, same labels, numbers within 1e-5 (1e-4 relative for large values: f32).
fn assert_close(got: &str, expected: &str) {
    let (got, expected): (Vec<_>, Vec<_>) = (got.lines().collect(), expected.lines().collect());
    assert_eq!(got.len(), expected.len());
    assert_eq!(got[0], expected[0]);
    for (g, e) in got.iter().zip(&expected) {
        for (a, b) in g.split(',').zip(e.split(',')) {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => assert!((x - y).abs() <= 1e-5_f64.max(1e-4 * y.abs()), "{g} vs {e}"),
                _ => assert_eq!(a, b),
            }
        }
    }
}

#[test]
fn predicts_like_onnxruntime_to_a_file_and_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("predictions.csv");
    let run = predict(&fixture("iris_logreg.onnx"), &fixture("iris.csv"), out.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("4 features") && stderr.contains("150 rows"), "{stderr}");
    let expected = std::fs::read_to_string(fixture("iris_logreg.expected.csv")).unwrap();
    assert_close(&std::fs::read_to_string(&out).unwrap(), &expected);

    let run = predict(&fixture("diabetes_linreg.onnx"), &fixture("diabetes.csv"), "-");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_close(&String::from_utf8(run.stdout).unwrap(), &std::fs::read_to_string(fixture("diabetes_linreg.expected.csv")).unwrap());
}

#[test]
fn bad_models_and_inputs_fail_with_a_clear_message_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let bad_csv = dir.path().join("bad.csv");
    std::fs::write(&bad_csv, "a,b,c\n1,2,3\n").unwrap();
    let out = dir.path().join("out.csv");
    for (model, input, says) in [
        (fixture("bad_op.onnx"), fixture("iris.csv"), "Frobnicate"),
        (fixture("bad_truncated.onnx"), fixture("iris.csv"), "not an ONNX model"),
        (fixture("iris_logreg.onnx"), bad_csv.clone(), "3 columns"),
        (fixture("iris_logreg.onnx"), dir.path().join("missing.csv"), "missing.csv"),
    ] {
        let run = predict(&model, &input, out.to_str().unwrap());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "a failed run left an output file");
    }
}
