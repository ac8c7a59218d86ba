//! `runner::onnx` against the fixtures of `scripts/make_fixtures.py`: real models (scikit-learn
//! via skl2onnx, an onnx.helper CNN), onnxruntime's outputs as the reference, and broken files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::records;
use runner::onnx::{check_csv, Model, OnnxError, TensorInfo, BATCH_ROW_MULTIPLE};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn load(name: &str) -> Model {
    Model::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_err(name: &str) -> OnnxError {
    match Model::load(&fixture(name)) {
        Ok(m) => panic!("{name} loaded, with {:?}", m.info()),
        Err(e) => e,
    }
}

/// Runs `csv` (a fixture) through the model; returns the predictions and the progress calls.
fn predict(model: &Model, csv: &str, batch_rows: usize) -> (String, Vec<u64>) {
    let input = std::fs::File::open(fixture(csv)).unwrap();
    let mut out = Vec::new();
    let mut calls = Vec::new();
    let rows = model.predict_csv(input, &mut out, batch_rows, &mut |n| calls.push(n)).unwrap();
    assert_eq!(Some(&rows), calls.last(), "the return value is the last progress");
    (String::from_utf8(out).unwrap(), calls)
}

fn expected(name: &str) -> Vec<Vec<String>> {
    records(&std::fs::read_to_string(fixture(name)).unwrap())
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("`{s}` is not a number"))
}

/// Compares predictions with onnxruntime's: same header and row count, `exact` columns equal as
/// text, every other column within `1e-5 * max(1, |expected|)`.
fn assert_matches(actual: &str, expected: &[Vec<String>], exact: &[usize]) {
    let actual = records(actual);
    assert_eq!(actual[0], expected[0], "header");
    assert_eq!(actual.len(), expected.len(), "row count");
    for (line, (a, e)) in actual.iter().zip(expected).enumerate().skip(1) {
        assert_eq!(a.len(), e.len(), "line {}: columns", line + 1);
        for (col, (av, ev)) in a.iter().zip(e).enumerate() {
            if col == 0 || exact.contains(&col) {
                assert_eq!(av, ev, "line {}, column {}", line + 1, col + 1);
            } else {
                let (x, y) = (num(av), num(ev));
                let tol = 1e-5 * y.abs().max(1.0);
                assert!((x - y).abs() <= tol, "line {}, column {}: {x} vs {y}", line + 1, col + 1);
            }
        }
    }
}

fn info(name: &str, shape: &[Option<usize>], dtype: &str) -> TensorInfo {
    TensorInfo { name: name.into(), shape: shape.to_vec(), dtype: dtype.into() }
}

#[test]
fn model_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    shareable::<OnnxError>();
}

#[test]
fn iris_classifier_info() {
    let model = load("iris_logreg.onnx");
    let i = model.info();
    assert_eq!(i.inputs, vec![info("float_input", &[None, Some(4)], "f32")]);
    assert_eq!(i.outputs, vec![info("label", &[None], "i64"), info("probabilities", &[None, Some(3)], "f32")]);
    assert_eq!(i.features, 4);
    assert_eq!(i.output_columns, ["row", "label", "prob_0", "prob_1", "prob_2"]);
}

#[test]
fn iris_classifier_matches_onnxruntime() {
    let model = load("iris_logreg.onnx");
    let (out, calls) = predict(&model, "iris.csv", 4096);
    assert_eq!(calls, [150]);
    assert_matches(&out, &expected("iris_logreg.expected.csv"), &[1]);
}

#[test]
fn iris_classifier_with_string_labels_names_its_columns_after_the_classes() {
    let model = load("iris_logreg_names.onnx");
    let i = model.info();
    assert_eq!(i.outputs[0], info("label", &[None], "string"));
    assert_eq!(i.output_columns, ["row", "label", "prob_setosa", "prob_versicolor", "prob_virginica"]);
    let (out, _) = predict(&model, "iris.csv", 64);
    assert_matches(&out, &expected("iris_logreg_names.expected.csv"), &[1]);
}

#[test]
fn diabetes_regressor_matches_onnxruntime() {
    let model = load("diabetes_linreg.onnx");
    let i = model.info();
    assert_eq!(i.features, 10);
    assert_eq!(i.outputs, vec![info("variable", &[None, Some(1)], "f32")]);
    assert_eq!(i.output_columns, ["row", "variable"]);
    let (out, calls) = predict(&model, "diabetes.csv", 128);
    assert_eq!(calls, [128, 256, 384, 442]);
    assert_matches(&out, &expected("diabetes_linreg.expected.csv"), &[]);
}

#[test]
fn tiny_cnn_takes_its_image_as_a_flat_row() {
    let model = load("tiny_cnn.onnx");
    let i = model.info();
    assert_eq!(i.inputs, vec![info("image", &[None, Some(1), Some(4), Some(4)], "f32")]);
    assert_eq!(i.features, 16);
    assert_eq!(i.outputs, vec![info("probabilities", &[None, Some(3)], "f32")]);
    assert_eq!(i.output_columns, ["row", "probabilities_0", "probabilities_1", "probabilities_2"]);
    let (out, _) = predict(&model, "tiny_cnn.csv", 4096);
    assert_matches(&out, &expected("tiny_cnn.expected.csv"), &[]);
}

/// Progress calls for `rows` rows in batches of `batch` rows.
fn batches(rows: u64, batch: u64) -> Vec<u64> {
    let mut calls: Vec<u64> = (batch..=rows).step_by(batch as usize).collect();
    if !rows.is_multiple_of(batch) {
        calls.push(rows);
    }
    calls
}

#[test]
fn batch_size_does_not_change_the_output() {
    assert_eq!(BATCH_ROW_MULTIPLE, 64);
    for (model, csv, rows) in
        [("iris_logreg.onnx", "iris.csv", 150u64), ("diabetes_linreg.onnx", "diabetes.csv", 442), ("tiny_cnn.onnx", "tiny_cnn.csv", 25)]
    {
        let model = load(model);
        let (big, calls) = predict(&model, csv, 4096);
        assert_eq!(calls, [rows]);
        for (batch, runs_as) in [(1, 64), (7, 64), (0, 64), (64, 64), (65, 128), (100, 128)] {
            let (out, calls) = predict(&model, csv, batch);
            assert_eq!(out, big, "{csv}: batch {batch} vs 4096");
            assert_eq!(calls, batches(rows, runs_as), "{csv}: batch {batch} runs as {runs_as}");
        }
    }
}

#[test]
fn truncated_file_is_not_an_onnx_model() {
    let e = load_err("bad_truncated.onnx");
    assert!(matches!(e, OnnxError::NotOnnx(_)), "{e:?}");
    assert!(e.to_string().starts_with("not an ONNX model: "), "{e}");
    assert!(e.is_user_error());
}

#[test]
fn empty_and_garbage_bytes_are_not_onnx_models() {
    for bytes in [&b""[..], b"name,age\nbob,42\n", &[0xffu8; 64]] {
        let e = Model::from_bytes(bytes).expect_err("garbage loaded");
        assert!(e.to_string().starts_with("not an ONNX model: "), "{e}");
        assert!(e.is_user_error());
    }
}

#[test]
fn unknown_operator_is_named_with_its_node_and_domain() {
    let e = load_err("bad_op.onnx");
    assert_eq!(e.to_string(), "unsupported operator `Frobnicate` from domain `com.example` (node `frob_1`)");
    assert!(e.is_user_error());
}

#[test]
fn zipmap_classifier_gives_the_columns_and_values_of_its_zipmap_false_twin() {
    let model = load("iris_logreg_zipmap.onnx");
    assert_eq!(model.info().output_columns, load("iris_logreg.onnx").info().output_columns);
    let (out, _) = predict(&model, "iris.csv", 64);
    assert_matches(&out, &expected("iris_logreg.expected.csv"), &[1]);
}

#[test]
fn a_zipmap_whose_maps_are_read_is_refused_by_name() {
    let e = load_err("bad_zipmap_consumed.onnx");
    assert!(matches!(&e, OnnxError::UnsupportedOperator { op, .. } if op == "ZipMap"), "{e:?}");
    assert!(e.to_string().starts_with("unsupported operator `ZipMap` (node `"), "{e}");
    assert!(e.is_user_error());
}

#[test]
fn integer_input_is_refused() {
    let e = load_err("bad_int_input.onnx");
    assert_eq!(e.to_string(), "the model's input `codes` is i64; only float (f32) tensors are supported");
    assert!(e.is_user_error());
}

#[test]
fn two_inputs_are_refused() {
    let e = load_err("bad_two_inputs.onnx");
    assert_eq!(e.to_string(), "the model has 2 inputs; only single-input models are supported");
}

#[test]
fn missing_model_file_is_not_the_users_fault() {
    let e = load_err("no_such_model.onnx");
    assert!(matches!(e, OnnxError::Io(_)), "{e:?}");
    assert!(!e.is_user_error());
}

#[test]
fn check_csv_accepts_the_fixtures() {
    let iris = || std::fs::File::open(fixture("iris.csv")).unwrap();
    assert_eq!(check_csv(iris(), None).unwrap(), (4, 150));
    assert_eq!(check_csv(iris(), Some(4)).unwrap(), (4, 150));
    let diabetes = std::fs::File::open(fixture("diabetes.csv")).unwrap();
    assert_eq!(check_csv(diabetes, None).unwrap(), (10, 442));
}

#[test]
fn check_csv_tolerates_spaces_quotes_blank_lines_and_no_final_newline() {
    let text = "a, b ,\"c\"\n1, 2.5 ,\"-3e2\"\n\n4,5,6";
    assert_eq!(check_csv(text.as_bytes(), Some(3)).unwrap(), (3, 2));
}

fn csv_err(text: &str, expected: Option<usize>) -> OnnxError {
    match check_csv(text.as_bytes(), expected) {
        Ok(r) => panic!("{text:?} passed: {r:?}"),
        Err(e) => {
            assert!(e.is_user_error(), "{e:?}");
            e
        }
    }
}

#[test]
fn check_csv_names_the_line_of_a_short_row() {
    let e = csv_err("a,b,c,d\n1,2,3,4\n1,2,3\n", None);
    assert_eq!(e.to_string(), "line 3: expected 4 columns, found 3");
    let e = csv_err("a,b\n1,2\n1,2\n1,2\n1,2,3\n", None);
    assert_eq!(e.to_string(), "line 5: expected 2 columns, found 3");
}

#[test]
fn check_csv_names_line_and_column_of_a_non_number() {
    let e = csv_err("a,b\n1,2\n3,4\n5,6\n7,abc\n", None);
    assert_eq!(e.to_string(), "line 5, column 2: `abc` is not a number");
    let e = csv_err("a,b\n1,\n", None);
    assert_eq!(e.to_string(), "line 2, column 2: the cell is empty; expected a number");
    let long = "x".repeat(100);
    let e = csv_err(&format!("a\n{long}\n"), None);
    assert!(e.to_string().len() < 80, "{e}");
}

#[test]
fn check_csv_refuses_empty_and_header_only_files() {
    assert!(matches!(csv_err("", None), OnnxError::EmptyCsv));
    assert!(matches!(csv_err("\n\n", None), OnnxError::EmptyCsv));
    let e = csv_err("a,b,c\n", None);
    assert_eq!(e.to_string(), "the input CSV has no rows (only a header)");
}

#[test]
fn check_csv_compares_the_header_with_the_expected_columns() {
    let e = csv_err("a,b,c\n1,2,3\n", Some(4));
    assert_eq!(e.to_string(), "the input CSV header has 3 columns but the model takes 4 features");
}

#[test]
fn predict_refuses_a_csv_with_other_columns_before_writing() {
    let model = load("iris_logreg.onnx");
    let input = std::fs::File::open(fixture("diabetes.csv")).unwrap();
    let mut out = Vec::new();
    let e = model.predict_csv(input, &mut out, 4096, &mut |_| {}).unwrap_err();
    assert_eq!(e.to_string(), "the input CSV header has 10 columns but the model takes 4 features");
    assert!(e.is_user_error());
    assert!(out.is_empty());
}

#[test]
fn predict_names_the_line_of_a_bad_row_after_earlier_batches() {
    let model = load("iris_logreg.onnx");
    let mut text = String::from("a,b,c,d\n");
    for _ in 0..140 {
        text.push_str("5.1,3.5,1.4,0.2\n");
    }
    text.push_str("5.1,3.5,x,0.2\n");
    let mut calls = Vec::new();
    let e = model.predict_csv(text.as_bytes(), Vec::new(), 64, &mut |n| calls.push(n)).unwrap_err();
    assert_eq!(e.to_string(), "line 142, column 3: `x` is not a number");
    assert_eq!(calls, [64, 128], "the batches before the bad row ran");
}

#[test]
fn predict_refuses_header_only_input() {
    let model = load("diabetes_linreg.onnx");
    let e = model.predict_csv("a,b,c,d,e,f,g,h,i,j\n".as_bytes(), Vec::new(), 16, &mut |_| {}).unwrap_err();
    assert!(matches!(e, OnnxError::NoRows), "{e:?}");
}

#[test]
fn a_failing_output_is_an_io_error_not_the_users() {
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let model = load("iris_logreg.onnx");
    let input = std::fs::File::open(fixture("iris.csv")).unwrap();
    let e = model.predict_csv(input, Full, 4096, &mut |_| {}).unwrap_err();
    assert!(matches!(e, OnnxError::Io(_)), "{e:?}");
    assert!(!e.is_user_error());
}
