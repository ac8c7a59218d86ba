//! Every parser of input that comes from outside (a user's CSV, model or bundle) answers any
//! bytes with a value or an error: it never panics, never loops, and a bundle never writes
//! outside the directory it is extracted into. Arbitrary bytes, and real files with bytes
//! changed at random (which get past the first checks and reach the deeper code).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use runner::bundle::{self, BundleLimits, Manifest};
use runner::onnx::{check_csv, Model};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)).unwrap()
}

/// `bytes` with some of them replaced: (position as a fraction of the length, new byte).
fn mutate(mut bytes: Vec<u8>, changes: &[(f64, u8)]) -> Vec<u8> {
    let len = bytes.len();
    for (at, byte) in changes {
        bytes[((*at * len as f64) as usize).min(len - 1)] = *byte;
    }
    bytes
}

/// A small valid bundle: a manifest and a script.
fn bundle_bytes() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("aiedge.toml", options).unwrap();
        zip.write_all(b"runtime = \"python3\"\nentrypoint = \"main.py\"\n").unwrap();
        zip.start_file("main.py", options).unwrap();
        zip.write_all(b"print('hello')\n").unwrap();
        zip.add_directory("data/", options).unwrap();
        zip.start_file("data/x.csv", options).unwrap();
        zip.write_all(&b"a,b\n1,2\n".repeat(50)).unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn csv_inputs(bytes in proptest::collection::vec(any::<u8>(), 0..2048), columns in proptest::option::of(0usize..8)) {
        let _ = check_csv(bytes.as_slice(), columns);
    }

    #[test]
    fn csv_with_changed_bytes(changes in proptest::collection::vec((0.0..1.0f64, any::<u8>()), 1..16)) {
        let _ = check_csv(mutate(fixture("iris.csv"), &changes).as_slice(), Some(4));
    }

    #[test]
    fn manifests(text in "\\PC{0,400}") {
        let _ = Manifest::parse(&text);
    }

    #[test]
    fn manifest_like_text(runtime in "[a-z0-9 \"=\\n]{0,40}", entry in "\\PC{0,60}") {
        let _ = Manifest::parse(&format!("runtime = \"{runtime}\"\nentrypoint = \"{entry}\"\n"));
    }

    #[test]
    fn onnx_models(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Model::from_bytes(&bytes);
    }
}

proptest! {
    // Each case loads a model or opens a zip: fewer of them.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn onnx_models_with_changed_bytes(changes in proptest::collection::vec((0.0..1.0f64, any::<u8>()), 1..8)) {
        let _ = Model::from_bytes(&mutate(fixture("iris_logreg.onnx"), &changes));
    }

    #[test]
    fn bundles(bytes in proptest::collection::vec(any::<u8>(), 0..4096), changes in proptest::collection::vec((0.0..1.0f64, any::<u8>()), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let limits = BundleLimits { max_entries: 100, max_uncompressed_bytes: 1 << 20 };
        for (i, candidate) in [bytes, mutate(bundle_bytes(), &changes)].into_iter().enumerate() {
            let zip = dir.path().join(format!("b{i}.zip"));
            std::fs::write(&zip, &candidate).unwrap();
            let _ = bundle::inspect(&zip, &limits);
            let dest = dir.path().join(format!("out{i}"));
            std::fs::create_dir(&dest).unwrap();
            let _ = bundle::extract(&zip, &dest, &limits);
        }
        // Nothing but the zips and the two extraction directories next to them.
        let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        prop_assert_eq!(names, vec!["b0.zip", "b1.zip", "out0", "out1"]);
    }
}

/// The case proptest found: one byte of a valid model set to 0 made tract-onnx panic ("no entry
/// found for key"); it is an invalid model now, and the caller goes on.
#[test]
fn a_model_that_made_tract_panic_is_an_invalid_model() {
    let broken = mutate(fixture("iris_logreg.onnx"), &[(0.10750398876661385, 0)]);
    match Model::from_bytes(&broken) {
        Err(runner::onnx::OnnxError::Invalid(why)) => assert!(why.contains("tract stopped reading it"), "{why}"),
        Err(other) => panic!("another error than expected: {other}"),
        Ok(_) => panic!("the broken model loaded"),
    }
    // The same thread goes on loading good models.
    assert!(Model::from_bytes(&fixture("iris_logreg.onnx")).is_ok());
}
