//! ONNX-ML operators this runner implements itself and registers into tract-onnx's operator
//! register (replacing tract's own where it has one), so scikit-learn exports run in process.
//!
//! - [`trees`]: `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (a flattened, batched
//!   evaluator; tract's interprets node by node, hundreds of times slower than onnxruntime).
//! - [`preprocess`]: `Scaler` (StandardScaler, MinMaxScaler) and `Imputer` (SimpleImputer).
//! - [`svm`]: `SVMClassifier` (with Platt probabilities) and `SVMRegressor`.
//! - [`linear`]: `LinearClassifier`, `LinearRegressor`, `Normalizer` (tract has them, but by
//!   expansion into generic ops that ran 7 to 10 times slower than onnxruntime).
//! - `ArrayFeatureExtractor`: tract's drops the last axis for a scalar index; onnxruntime's
//!   keeps it, and skl2onnx's graphs rely on that.
//!
//! Each one is a [`Kernel`]: a batch of rows of f32 features in, tensors out. One tract op
//! (`MlOp`, with its inference-time `MlExpansion`) wraps any kernel, so an operator is only
//! its attributes parsing and its arithmetic. Outputs follow onnxruntime, which gives the
//! reference outputs; a string-labelled classifier outputs a real string tensor.

pub mod linear;
pub mod preprocess;
pub mod svm;
pub mod trees;

use std::fmt;
use std::sync::{Arc, OnceLock};

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::cast::cast;

/// Inserts the operators of this module into tract-onnx's register (replacing tract's
/// versions of `TreeEnsembleClassifier`, the linear models, `Normalizer` and
/// `ArrayFeatureExtractor`).
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleClassifier", |_, node| build(node, trees_op::classifier));
    reg.insert("TreeEnsembleRegressor", |_, node| build(node, trees_op::regressor));
    reg.insert("Scaler", |_, node| build(node, preprocess::scaler));
    reg.insert("Imputer", |_, node| build(node, preprocess::imputer));
    reg.insert("SVMClassifier", |_, node| build(node, svm::classifier));
    reg.insert("SVMRegressor", |_, node| build(node, svm::regressor));
    reg.insert("LinearClassifier", |_, node| build(node, linear::classifier));
    reg.insert("LinearRegressor", |_, node| build(node, linear::regressor));
    reg.insert("Normalizer", |_, node| build(node, linear::normalizer));
    reg.insert("ArrayFeatureExtractor", |_, _| Ok((expand(ArrayFeatureExtractor), vec![])));
}

/// `ArrayFeatureExtractor` as onnxruntime runs it: a scalar index still gives a last axis of
/// one (`[N, C]` and index `1` give `[N, 1]`). tract's is a plain `Gather`, which drops that
/// axis, and then skl2onnx's SVC and LinearSVC post-processing (a `Concat` on axis 1) fails.
#[derive(Debug, Clone)]
struct ArrayFeatureExtractor;

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, i64::datum_type())?;
        s.given_2(&inputs[0].rank, &inputs[1].rank, move |s, x_rank, i_rank| s.equals(&outputs[0].rank, x_rank - 1 + i_rank.max(1)))?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, x, indices| {
            let mut shape: TVec<TDim> = x.iter().take(x.len().saturating_sub(1)).cloned().collect();
            if indices.is_empty() {
                shape.push(1.to_dim());
            } else {
                shape.extend(indices.iter().cloned());
            }
            s.equals(&outputs[0].shape, shape)
        })?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        use tract_onnx::tract_hir::tract_core::ops::array::Gather;
        let axis = model.outlet_fact(inputs[0])?.rank().saturating_sub(1);
        let mut indices = inputs[1];
        if model.outlet_fact(indices)?.rank() == 0 {
            indices = model.wire_node(format!("{prefix}.as_1d"), AxisOp::Add(0), &[indices])?[0];
        }
        model.wire_node(prefix, Gather { axis, output_type: None }, &[inputs[0], indices])
    }
}

// Glue shared by the tract ops of `onnx/` (dense, conv, binary, rowwise and the kernels here):
// the same rules and trait boilerplate were spelled out op by op. It sits in this module, which
// the others already use, so that `onnx.rs` keeps its list of modules.

/// Builds `node` with tract-onnx's own `op` builder: the replacements (`dense`, `conv`) leave it
/// the nodes their fast path does not cover.
pub(crate) fn stock_op(op: &str, ctx: &ParsingContext, node: &NodeProto) -> Built {
    static STOCK: OnceLock<OnnxOpRegister> = OnceLock::new();
    let builder = STOCK.get_or_init(|| tract_onnx::onnx().op_register).0.get(op).ok_or_else(|| anyhow!("tract-onnx has no {op}"))?;
    builder(ctx, node)
}

/// Whether `name` is a float constant (an initializer) of the model's graph.
pub(crate) fn is_float_initializer(ctx: &ParsingContext, name: &str) -> bool {
    ctx.model.graph.as_ref().is_some_and(|g| g.initializer.iter().any(|t| t.name == name && t.data_type == DataType::Float as i32))
}

/// Rules of an op with one input and one output of the same datum type and shape.
pub(crate) fn rules_like_input<'r, 'p: 'r>(s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
    s.equals(&outputs[0].shape, &inputs[0].shape)?;
    Ok(())
}

/// Rules shared by the layers with weights (`Gemm`, `Conv`): x, w and an optional bias in, one
/// output of x's type with x's first (batch) dimension; x, w and the output of rank `rank`.
pub(crate) fn rules_with_weights<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    op: &str,
    rank: i64,
) -> InferenceResult {
    if inputs.len() < 2 || inputs.len() > 3 {
        bail!("{op} takes 2 or 3 inputs, got {}", inputs.len());
    }
    check_output_arity(outputs, 1)?;
    s.equals(&inputs[0].rank, rank)?;
    s.equals(&inputs[1].rank, rank)?;
    s.equals(&outputs[0].rank, rank)?;
    s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
    s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
    Ok(())
}

/// `Expansion::rules` in one line: `expansion_rules!(like_input)` for [`rules_like_input`], or
/// `expansion_rules!(from field)` to take the rules of the tract op in `self.field`.
macro_rules! expansion_rules {
    (like_input) => {
        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            $crate::onnx::ml_ops::rules_like_input(s, inputs, outputs)
        }
    };
    (from $field:tt) => {
        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            self.$field.rules(s, inputs, outputs)
        }
    };
}
pub(crate) use expansion_rules;

/// `impl Op` with only a name: `op_named!(Type, "Name")`, or `op_named!(Type, |op| expr)` for
/// a name computed from the op (`self` cannot cross into a macro argument).
macro_rules! op_named {
    ($ty:ty, |$op:ident| $name:expr) => {
        impl Op for $ty {
            fn name(&self) -> StaticName {
                let $op = self;
                $name.into()
            }

            op_as_typed_op!();
        }
    };
    ($ty:ty, $name:expr) => {
        $crate::onnx::ml_ops::op_named!($ty, |_op| $name);
    };
}
pub(crate) use op_named;

/// `impl TypedOp` for an op whose one output has its input's type and shape.
macro_rules! typed_op_like_input {
    ($ty:ty) => {
        impl TypedOp for $ty {
            fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
                Ok(tvec!(inputs[0].without_value()))
            }

            as_op!();
        }
    };
}
pub(crate) use typed_op_like_input;

/// A test's copy of an output tensor's values.
#[cfg(test)]
fn values<T: Datum>(t: &Tensor) -> Vec<T> {
    t.try_as_plain_ram().unwrap().as_slice::<T>().unwrap().to_vec()
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// Parses a node into a kernel; a refusal names the node and says why.
fn build(node: &NodeProto, parse: fn(&Attrs) -> Result<Arc<dyn Kernel>, String>) -> Built {
    let kernel = parse(&Attrs(node)).map_err(|e| {
        let name = if node.name.is_empty() { node.output.first().map(String::as_str).unwrap_or("") } else { &node.name };
        anyhow!("`{}` node `{name}`: {e}", node.op_type)
    })?;
    Ok((expand(MlExpansion(kernel)), vec![]))
}

/// How many values per row an output has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// A `[N]` output (labels).
    Rank1,
    /// A `[N, k]` output.
    Fixed(usize),
    /// `[N, features]`: as many as the input (scalers, imputers).
    SameAsInput,
}

/// One output of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    pub datum_type: DatumType,
    pub width: Width,
}

impl OutputSpec {
    /// An f32 output (scores, values).
    fn f32(width: Width) -> OutputSpec {
        OutputSpec { datum_type: DatumType::F32, width }
    }
}

/// What an ONNX-ML operator computes: `rows` rows of `stride` f32 values (row-major) in, one
/// tensor per [`OutputSpec`] out.
pub trait Kernel: fmt::Debug + Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn outputs(&self) -> Vec<OutputSpec>;
    /// Refuses an input with `features` values per row (checked once, when the model loads).
    fn check_features(&self, features: usize) -> Result<(), String>;
    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>>;
    /// For a kernel that computes `(x - offset) * scale` per feature (the `Scaler`): offset and
    /// scale for `features` features, so a dense layer after it can do it on the fly.
    fn input_affine(&self, _features: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }
}

/// A classifier's class labels, which are its label output's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassLabels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl ClassLabels {
    /// From `<prefix>_int64s`/`<prefix>_ints` or `<prefix>_strings`.
    fn of(a: &Attrs, ints: &str, strings: &str) -> Result<ClassLabels, String> {
        let i = a.ints(ints);
        let s = a.strings(strings);
        match (i.is_empty(), s.is_empty()) {
            (false, true) => Ok(ClassLabels::Ints(i.to_vec())),
            (true, false) => Ok(ClassLabels::Strings(s)),
            (true, true) => Err(format!("neither `{ints}` nor `{strings}` is set")),
            (false, false) => Err(format!("both `{ints}` and `{strings}` are set")),
        }
    }

    fn len(&self) -> usize {
        match self {
            ClassLabels::Ints(v) => v.len(),
            ClassLabels::Strings(v) => v.len(),
        }
    }

    fn datum_type(&self) -> DatumType {
        match self {
            ClassLabels::Ints(_) => DatumType::I64,
            ClassLabels::Strings(_) => DatumType::String,
        }
    }

    /// A classifier's outputs: a label per row, then `scores` f32 scores per row.
    fn outputs(&self, scores: usize) -> Vec<OutputSpec> {
        vec![OutputSpec { datum_type: self.datum_type(), width: Width::Rank1 }, OutputSpec::f32(Width::Fixed(scores))]
    }

    /// The `[N]` label tensor for class indices.
    fn tensor(&self, indices: &[usize]) -> TractResult<Tensor> {
        Ok(match self {
            ClassLabels::Ints(v) => {
                let labels: Vec<i64> = indices.iter().map(|&i| v.get(i).copied().unwrap_or(0)).collect();
                tensor1(&labels)
            }
            ClassLabels::Strings(v) => {
                let labels: Vec<String> = indices.iter().map(|&i| v.get(i).cloned().unwrap_or_default()).collect();
                tract_ndarray::Array1::from(labels).into_tensor()
            }
        })
    }
}

/// A `[rows, width]` f32 tensor.
fn matrix(values: Vec<f32>, rows: usize, width: usize) -> TractResult<Tensor> {
    Ok(tract_ndarray::Array2::from_shape_vec((rows, width), values)?.into_tensor())
}

/// Typed reading of a node's attributes (absent lists read as empty).
pub struct Attrs<'a>(pub &'a NodeProto);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn ints(&self, name: &str) -> &[i64] {
        self.get(name).map_or(&[], |a| a.ints.as_slice())
    }

    pub fn floats(&self, name: &str) -> &[f32] {
        self.get(name).map_or(&[], |a| a.floats.as_slice())
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.get(name).map_or_else(Vec::new, |a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| a.i)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| a.f)
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// Refuses the double-precision variants (`*_as_tensor`) of attributes this runner reads as
    /// f32: converting thresholds would move rows across them.
    pub fn refuse_tensors(&self, names: &[&str]) -> Result<(), String> {
        for n in names {
            if self.has(n) {
                return Err(format!("`{n}` (double precision) is not supported"));
            }
        }
        Ok(())
    }
}

/// Inference-time face of a kernel: types and shapes for tract's analysis, then [`MlOp`].
#[derive(Debug, Clone)]
struct MlExpansion(Arc<dyn Kernel>);

impl Expansion for MlExpansion {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.outputs().len())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        let specs = self.0.outputs();
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, specs.len())?;
        s.equals(&inputs[0].rank, 2)?;
        for (o, spec) in outputs.iter().zip(specs) {
            s.equals(&o.datum_type, spec.datum_type)?;
            s.equals(&o.shape[0], &inputs[0].shape[0])?;
            match spec.width {
                Width::Rank1 => s.equals(&o.rank, 1)?,
                Width::Fixed(w) => {
                    s.equals(&o.rank, 2)?;
                    s.equals(&o.shape[1], w.to_dim())?;
                }
                Width::SameAsInput => {
                    s.equals(&o.rank, 2)?;
                    s.equals(&o.shape[1], &inputs[0].shape[1])?;
                }
            }
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut input = inputs[0];
        if model.outlet_fact(input)?.datum_type != f32::datum_type() {
            // Integer or double features (after a Cast): the kernels compute in f32, as
            // onnxruntime does for float models.
            input = model.wire_node(format!("{prefix}.to_f32"), cast(f32::datum_type()), &[input])?[0];
        }
        model.wire_node(prefix, MlOp(self.0.clone()), &[input])
    }
}

/// The runnable op around a kernel.
#[derive(Debug, Clone)]
pub(crate) struct MlOp(Arc<dyn Kernel>);

impl MlOp {
    /// See [`Kernel::input_affine`].
    pub(crate) fn input_affine(&self, features: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        self.0.input_affine(features)
    }
}

impl PartialEq for MlOp {
    /// Two nodes are the same op only if they share the kernel (kernels hold whole models).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MlOp {}

op_named!(MlOp, |op| op.0.name());

impl EvalOp for MlOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let &[rows, stride] = x.shape() else {
            bail!("{} expects a [rows, features] input, got {:?}", self.0.name(), x.shape());
        };
        if stride == 0 {
            bail!("{} got rows of no values", self.0.name());
        }
        self.0.check_features(stride).map_err(|e| anyhow!("{}: {e}", self.0.name()))?;
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let out = self.0.run(values, rows, stride)?;
        Ok(out.into_iter().map(|t| t.into_tvalue()).collect())
    }
}

impl TypedOp for MlOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0].shape.dims();
        let [n, f] = shape else {
            bail!("{} expects a [rows, features] input, got {:?}", self.0.name(), inputs[0].shape);
        };
        if let Some(features) = f.as_i64().and_then(|v| usize::try_from(v).ok()) {
            // At load time: a model whose rows are too short for its operator is refused here.
            self.0.check_features(features).map_err(|e| anyhow!("{}: {e}", self.0.name()))?;
        }
        Ok(self
            .0
            .outputs()
            .into_iter()
            .map(|o| match o.width {
                Width::Rank1 => TypedFact::dt_shape(o.datum_type, [n.clone()]),
                Width::Fixed(w) => TypedFact::dt_shape(o.datum_type, [n.clone(), w.to_dim()]),
                Width::SameAsInput => TypedFact::dt_shape(o.datum_type, [n.clone(), f.clone()]),
            })
            .collect())
    }

    as_op!();
}

/// The tree ensemble operators: attribute parsing around [`trees::TreeEnsemble`].
mod trees_op {
    use super::trees::{Aggregate, Attributes, PostTransform, TreeEnsemble};
    use super::*;

    fn attributes(a: &Attrs, leaf: &str, n_targets: usize) -> Result<Attributes, String> {
        a.refuse_tensors(&["nodes_values_as_tensor", "base_values_as_tensor", &format!("{leaf}_weights_as_tensor")])?;
        let aggregate = match a.string("aggregate_function") {
            Some(s) => Aggregate::parse(&s)?,
            None => Aggregate::Sum,
        };
        let post_transform = match a.string("post_transform") {
            Some(s) => PostTransform::parse(&s)?,
            None => PostTransform::None,
        };
        Ok(Attributes {
            nodes_treeids: a.ints("nodes_treeids").to_vec(),
            nodes_nodeids: a.ints("nodes_nodeids").to_vec(),
            nodes_featureids: a.ints("nodes_featureids").to_vec(),
            nodes_values: a.floats("nodes_values").to_vec(),
            nodes_modes: a.strings("nodes_modes"),
            nodes_truenodeids: a.ints("nodes_truenodeids").to_vec(),
            nodes_falsenodeids: a.ints("nodes_falsenodeids").to_vec(),
            nodes_missing_value_tracks_true: a.ints("nodes_missing_value_tracks_true").to_vec(),
            target_treeids: a.ints(&format!("{leaf}_treeids")).to_vec(),
            target_nodeids: a.ints(&format!("{leaf}_nodeids")).to_vec(),
            target_ids: a.ints(&format!("{leaf}_ids")).to_vec(),
            target_weights: a.floats(&format!("{leaf}_weights")).to_vec(),
            base_values: a.floats("base_values").to_vec(),
            n_targets,
            aggregate,
            post_transform,
        })
    }

    #[derive(Debug)]
    struct Classifier {
        ensemble: TreeEnsemble,
        labels: ClassLabels,
    }

    pub(super) fn classifier(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
        let labels = ClassLabels::of(a, "classlabels_int64s", "classlabels_strings")?;
        if labels.len() < 2 {
            return Err("a classifier needs at least two classes".into());
        }
        let ensemble = TreeEnsemble::new(&attributes(a, "class", labels.len())?)?;
        Ok(Arc::new(Classifier { ensemble, labels }))
    }

    impl Kernel for Classifier {
        fn name(&self) -> &'static str {
            "TreeEnsembleClassifier"
        }

        fn outputs(&self) -> Vec<OutputSpec> {
            self.labels.outputs(self.labels.len())
        }

        fn check_features(&self, features: usize) -> Result<(), String> {
            check_tree_features(&self.ensemble, features)
        }

        fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
            let (labels, scores) = self.ensemble.classify(x, rows, stride);
            Ok(tvec!(self.labels.tensor(&labels)?, matrix(scores, rows, self.labels.len())?))
        }
    }

    #[derive(Debug)]
    struct Regressor {
        ensemble: TreeEnsemble,
    }

    pub(super) fn regressor(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
        let n_targets = a.int("n_targets").unwrap_or(1);
        if !(1..=1 << 16).contains(&n_targets) {
            return Err(format!("`n_targets` is {n_targets}"));
        }
        let ensemble = TreeEnsemble::new(&attributes(a, "target", n_targets as usize)?)?;
        Ok(Arc::new(Regressor { ensemble }))
    }

    impl Kernel for Regressor {
        fn name(&self) -> &'static str {
            "TreeEnsembleRegressor"
        }

        fn outputs(&self) -> Vec<OutputSpec> {
            vec![OutputSpec::f32(Width::Fixed(self.ensemble.n_targets()))]
        }

        fn check_features(&self, features: usize) -> Result<(), String> {
            check_tree_features(&self.ensemble, features)
        }

        fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
            let values = self.ensemble.regress(x, rows, stride);
            Ok(tvec!(matrix(values, rows, self.ensemble.n_targets())?))
        }
    }

    fn check_tree_features(e: &TreeEnsemble, features: usize) -> Result<(), String> {
        if features < e.n_features() {
            return Err(format!("the trees read feature {} but rows have {features} values", e.n_features() - 1));
        }
        Ok(())
    }
}
