//! Models are checked in a child with memory and time limits: a valid model is described, a
//! broken one refused with tract's reason, and a memory bomb refused with the limit it broke,
//! while the calling process stays as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use runner::model_check::{check, CheckError, CheckLimits};
use tract_onnx::pb;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

const LIMITS: CheckLimits = CheckLimits { memory_bytes: 512 << 20, time_limit: Duration::from_secs(30) };

async fn check_file(path: &Path) -> Result<runner::onnx::ModelInfo, CheckError> {
    check(Path::new(env!("CARGO_BIN_EXE_model-check")), &[], path, LIMITS).await
}

fn float_tensor(name: &str, dims: &[pb::tensor_shape_proto::dimension::Value]) -> pb::ValueInfoProto {
    let dim = dims.iter().map(|d| pb::tensor_shape_proto::Dimension { value: Some(d.clone()), ..Default::default() }).collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

/// A valid-looking model of a few hundred bytes, y = x + sum(zeros([60000, 60000])): tract
/// folds the constant while it loads, which takes 14.4 GB.
fn memory_bomb() -> Vec<u8> {
    use pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let shape = pb::TensorProto {
        name: "shape".into(),
        dims: vec![2],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: vec![60_000, 60_000],
        ..Default::default()
    };
    let mut sum = node("ReduceSum", &["big"], "total");
    sum.attribute.push(pb::AttributeProto {
        name: "keepdims".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    });
    let graph = pb::GraphProto {
        name: "bomb".into(),
        node: vec![node("ConstantOfShape", &["shape"], "big"), sum, node("Add", &["x", "total"], "y")],
        initializer: vec![shape],
        input: vec![float_tensor("x", &[DimParam("N".into()), DimValue(1)])],
        output: vec![float_tensor("y", &[DimParam("N".into()), DimValue(1)])],
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_valid_model_is_described() {
    let info = check_file(&fixture("iris_logreg.onnx")).await.unwrap();
    assert_eq!(info.features, 4);
    assert_eq!(info, runner::onnx::Model::load(&fixture("iris_logreg.onnx")).unwrap().info().clone());
}

#[tokio::test]
async fn a_broken_model_is_refused_with_the_reason() {
    let err = check_file(&fixture("bad_op.onnx")).await.unwrap_err();
    assert!(matches!(err, CheckError::Invalid(_)), "{err:?}");
    let inline = runner::onnx::Model::load(&fixture("bad_op.onnx")).unwrap_err();
    assert_eq!(err.to_string(), inline.to_string());
}

#[tokio::test]
async fn a_memory_bomb_is_refused_with_the_limit() {
    let bomb = memory_bomb();
    assert!(bomb.len() < 1024, "a small file: {} bytes", bomb.len());
    // The committed fixture (the server's upload test sends it) is this builder's output.
    assert_eq!(std::fs::read(fixture("bad_memory_bomb.onnx")).unwrap(), bomb);
    let err = check_file(&fixture("bad_memory_bomb.onnx")).await.unwrap_err();
    assert!(matches!(err, CheckError::TooMuchMemory(_)), "{err:?}");
    assert_eq!(err.to_string(), "the model needs more than 512 MiB to load");
    assert!(err.is_users());
}

#[tokio::test]
async fn a_missing_checker_is_the_platforms_fault() {
    let err = check(Path::new("/nonexistent/checker"), &[], &fixture("iris_logreg.onnx"), LIMITS).await.unwrap_err();
    assert!(matches!(err, CheckError::Failed(_)) && !err.is_users(), "{err:?}");
}

#[tokio::test]
async fn a_slow_check_is_stopped_at_the_time_limit() {
    // `sleep` stands in for a model that takes long to load: it ignores the arguments it is given
    // after its own.
    let limits = CheckLimits { time_limit: Duration::from_millis(300), ..LIMITS };
    let started = std::time::Instant::now();
    let err = check(Path::new("/bin/sh"), &["-c", "exec sleep 30", "sh"], &fixture("iris_logreg.onnx"), limits).await.unwrap_err();
    assert!(matches!(err, CheckError::TooSlow(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
