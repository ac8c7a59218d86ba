//! Every model of the zoo (`scripts/zoo.sh`: scikit-learn exports with skl2onnx's default
//! options and `zipmap=False`, pipelines, PyTorch-style networks) through `runner::onnx::Model`,
//! against onnxruntime's outputs: labels exactly, every other value within 1e-5 (relative above
//! 1). The zoo lives outside the repository (`$AIEDGE_ZOO`, default `/var/tmp/aiedge-zoo`); a
//! missing zoo fails the test, it never passes silently. All failures are reported at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::records;
use runner::onnx::Model;

fn zoo_dir() -> PathBuf {
    std::env::var_os("AIEDGE_ZOO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp/aiedge-zoo"))
}

/// One line of `manifest.tsv`.
struct Entry {
    name: String,
    input: String,
    /// The `zipmap=False` twin of a ZipMap classifier.
    twin: Option<String>,
}

fn manifest(dir: &Path) -> Vec<Entry> {
    let path = dir.join("manifest.tsv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the model zoo is missing ({}: {e}); run scripts/zoo.sh (or set AIEDGE_ZOO)", path.display()));
    let entries: Vec<Entry> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 3, "bad manifest line {l:?}; rebuild with scripts/zoo.sh");
            Entry { name: f[0].to_string(), input: f[1].to_string(), twin: (f[2] != "-").then(|| f[2].to_string()) }
        })
        .collect();
    assert!(!entries.is_empty(), "the zoo manifest lists no models; run scripts/zoo.sh");
    entries
}

/// Runs one model; `Err` says what differs from onnxruntime.
fn check(dir: &Path, e: &Entry) -> Result<(), String> {
    let model = Model::load(&dir.join(format!("{}.onnx", e.name))).map_err(|err| format!("load: {err}"))?;
    if let Some(twin) = &e.twin {
        let twin = Model::load(&dir.join(format!("{twin}.onnx"))).map_err(|err| format!("twin load: {err}"))?;
        if twin.info().output_columns != model.info().output_columns {
            return Err(format!(
                "columns {:?} differ from its zipmap=False twin's {:?}",
                model.info().output_columns,
                twin.info().output_columns
            ));
        }
    }
    let input = std::fs::File::open(dir.join(&e.input)).map_err(|err| format!("{}: {err}", e.input))?;
    let mut out = Vec::new();
    // A batch size that splits the inputs (up to 300 rows) into several batches.
    model.predict_csv(input, &mut out, 128, &mut |_| {}).map_err(|err| format!("predict: {err}"))?;
    let actual = records(&String::from_utf8(out).unwrap());
    let expected = records(&std::fs::read_to_string(dir.join(format!("{}.expected.csv", e.name))).unwrap());
    compare(&actual, &expected)
}

fn compare(actual: &[Vec<String>], expected: &[Vec<String>]) -> Result<(), String> {
    if actual.first() != expected.first() {
        return Err(format!("header {:?}, expected {:?}", actual.first(), expected.first()));
    }
    if actual.len() != expected.len() {
        return Err(format!("{} lines, expected {}", actual.len(), expected.len()));
    }
    let header = &expected[0];
    let mut bad = Vec::new();
    for (line, (a, x)) in actual.iter().zip(expected).enumerate().skip(1) {
        if a.len() != x.len() {
            return Err(format!("line {}: {} columns, expected {}", line + 1, a.len(), x.len()));
        }
        for (col, (av, xv)) in a.iter().zip(x).enumerate() {
            let ok = match (av.parse::<f64>(), xv.parse::<f64>()) {
                _ if header[col] == "label" || header[col] == "row" => av == xv,
                (Ok(p), Ok(q)) => (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-5 * q.abs().max(1.0),
                _ => av == xv,
            };
            if !ok {
                bad.push(format!("line {} {}: {av} vs {xv}", line + 1, header[col]));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        let n = bad.len();
        bad.truncate(3);
        Err(format!("{n} values differ, e.g. {}", bad.join("; ")))
    }
}

#[test]
fn every_zoo_model_matches_onnxruntime() {
    let dir = zoo_dir();
    let entries = manifest(&dir);
    let mut failures = Vec::new();
    for e in &entries {
        match check(&dir, e) {
            Ok(()) => println!("ok   {}", e.name),
            Err(msg) => {
                println!("FAIL {}: {msg}", e.name);
                failures.push(format!("{}: {msg}", e.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} zoo models differ from onnxruntime:\n  {}",
        failures.len(),
        entries.len(),
        failures.join("\n  ")
    );
}
