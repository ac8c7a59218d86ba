//! Rewrites and reads of the ONNX graph before tract sees it.
//!
//! - [`drop_zipmaps`]: skl2onnx ends every classifier (default options) in a `ZipMap`, which
//!   turns the `[N, C]` probabilities into one `{class: probability}` map per row. The runner
//!   writes those probabilities as `prob_<class>` columns anyway, so a `ZipMap` whose output is
//!   a graph output becomes an `Identity`: the model then gives exactly what its `zipmap=False`
//!   twin gives, and the class names come from the `ZipMap`'s labels.
//! - [`extracted_class_labels`]: MLP and k-NN classifiers have no classifier operator; their
//!   label is `ArrayFeatureExtractor(classes, argmax)`, so the class names are that constant.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

/// Replaces every `ZipMap` whose output is a graph output (and read by no node) by an
/// `Identity`, and declares that output as a float tensor. A `ZipMap` read by another node is
/// left alone, so the runner refuses it by name.
pub(super) fn drop_zipmaps(graph: &mut pb::GraphProto) {
    let consumed: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut dropped = HashSet::new();
    for node in &mut graph.node {
        if node.op_type != "ZipMap" || node.output.len() != 1 || node.input.len() != 1 {
            continue;
        }
        let out = &node.output[0];
        if consumed.contains(out) || !outputs.contains(out) {
            continue;
        }
        dropped.insert(out.clone());
        node.op_type = "Identity".into();
        node.domain = String::new();
        node.attribute.clear();
    }
    for output in &mut graph.output {
        if dropped.contains(&output.name) {
            // Was `seq(map(int64|string, float))`; now what feeds it, a float tensor.
            output.r#type = Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            });
        }
    }
}

/// The class labels of a label output computed as `ArrayFeatureExtractor(<constant>, …)`,
/// possibly through `Reshape`, `Identity`, `Cast`, `Squeeze` or `Flatten`.
pub(super) fn extracted_class_labels(graph: &pb::GraphProto, label: &str) -> Option<Vec<String>> {
    let producer: HashMap<&str, &pb::NodeProto> = graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let mut current = label;
    for _ in 0..8 {
        let node = producer.get(current)?;
        match node.op_type.as_str() {
            "Reshape" | "Identity" | "Cast" | "Squeeze" | "Flatten" => current = node.input.first()?,
            "ArrayFeatureExtractor" => {
                let name = node.input.first()?;
                let init = graph.initializer.iter().find(|t| &t.name == name)?;
                return tensor_labels(init);
            }
            _ => return None,
        }
    }
    None
}

/// The values of a 1-D int64 or string constant, as text.
fn tensor_labels(t: &pb::TensorProto) -> Option<Vec<String>> {
    use pb::tensor_proto::DataType;
    if t.dims.len() > 1 && t.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return None;
    }
    match DataType::try_from(t.data_type).ok()? {
        DataType::String => Some(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        DataType::Int64 => {
            if !t.int64_data.is_empty() {
                Some(t.int64_data.iter().map(i64::to_string).collect())
            } else if !t.raw_data.is_empty() && t.raw_data.len().is_multiple_of(8) {
                Some(
                    t.raw_data
                        .chunks_exact(8)
                        .map(|b| {
                            let mut bytes = [0u8; 8];
                            bytes.copy_from_slice(b);
                            i64::from_le_bytes(bytes).to_string()
                        })
                        .collect(),
                )
            } else {
                None
            }
        }
        _ => None,
    }
}
