//! Small dense layers: `MatMul` and `Gemm` of a `[rows, k]` f32 tensor by a constant `[k, m]`
//! matrix (plus a constant bias), the layers of scikit-learn MLPs, PCA and PyTorch MLP heads.
//!
//! Why: tract's matrix product packs both operands into tiles for its SIMD kernels on every
//! run; for the few-dozen-wide layers of tabular models, packing, tiling and the separate bias
//! addition cost more than the arithmetic. Here the weights are packed once, at load, for
//! [`Layer`]'s kernel, and the layer absorbs the bias `Add`, the `Relu` after it and a constant
//! shift before it. Bigger layers (more than [`MAX_WEIGHTS`] weights) and everything else stay
//! tract's.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::matmul::MatMulInference;

use super::binary::{row_constant, Kind};
use super::layer::{Activation, InputStep, Layer};
use super::rowwise::RowRelu;

use super::ml_ops::{expansion_rules, is_float_initializer, op_named, rules_with_weights, stock_op, MlOp};

/// Above this many weights, tract's tiled kernels win.
const MAX_WEIGHTS: usize = 64 * 64;

/// Replaces tract-onnx's `MatMul` and `Gemm` builders.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("MatMul", |_, _| Ok((expand(DenseMatMul(MatMulInference::default())), vec![])));
    reg.insert("Gemm", gemm);
}

fn gemm(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr_f = |n: &str, d: f32| node.attribute.iter().find(|a| a.name == n).map_or(d, |a| a.f);
    let attr_i = |n: &str| node.attribute.iter().find(|a| a.name == n).is_some_and(|a| a.i != 0);
    let (alpha, beta) = (attr_f("alpha", 1.0), attr_f("beta", 1.0));
    let (trans_a, trans_b) = (attr_i("transA"), attr_i("transB"));
    // This layer only when B (and C, if any) are float constants of the graph: then the layer is
    // known at load time. (In a subgraph, or with computed weights, tract's Gemm.)
    let constant_inputs = node.input.iter().skip(1).filter(|n| !n.is_empty()).all(|n| is_float_initializer(ctx, n));
    if trans_a || !constant_inputs || node.input.len() < 2 {
        return stock_op("Gemm", ctx, node);
    }
    Ok((expand(DenseGemm { alpha, beta, trans_b }), vec![]))
}

/// `MatMul`: this layer when B is a small constant matrix and A is `[rows, k]` f32, else
/// tract's.
#[derive(Debug, Clone)]
struct DenseMatMul(MatMulInference);

impl Expansion for DenseMatMul {
    fn name(&self) -> StaticName {
        "MatMul".into()
    }

    expansion_rules!(from 0);

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let a = model.outlet_fact(inputs[0])?.clone();
        let b = model.outlet_fact(inputs[1])?.clone();
        if let Some(weights) = b.konst.as_ref().and_then(|w| Dense::weights(&a, w, false)) {
            let m = weights.len() / a_columns(&a).unwrap_or(1).max(1);
            let op = Dense::new(weights, vec![0.0; m], m);
            return model.wire_node(prefix, op, &[inputs[0]]);
        }
        self.0.wire(prefix, model, inputs)
    }
}

/// `Gemm` with constant B and C (checked when parsing): `alpha · A · B' + beta · C`.
#[derive(Debug, Clone)]
struct DenseGemm {
    alpha: f32,
    beta: f32,
    trans_b: bool,
}

impl Expansion for DenseGemm {
    fn name(&self) -> StaticName {
        "Gemm".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        rules_with_weights(s, inputs, outputs, "Gemm", 2)?;
        let m = if self.trans_b { 0 } else { 1 };
        s.equals(&outputs[0].shape[1], &inputs[1].shape[m])?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let a = model.outlet_fact(inputs[0])?.clone();
        let b = model.outlet_fact(inputs[1])?.clone();
        let k = a_columns(&a).ok_or_else(|| anyhow!("Gemm needs a known number of columns"))?;
        let b = b.konst.ok_or_else(|| anyhow!("Gemm's B is not a constant"))?;
        let mut weights =
            Dense::weights(&a, &b, self.trans_b).ok_or_else(|| anyhow!("Gemm's B {:?} does not fit A {:?}", b.shape(), a.shape))?;
        if self.alpha != 1.0 {
            weights.iter_mut().for_each(|w| *w *= self.alpha);
        }
        let m = weights.len() / k.max(1);
        let mut bias = vec![0f32; m];
        if let Some(&c) = inputs.get(2) {
            let c = model.outlet_fact(c)?.konst.clone().ok_or_else(|| anyhow!("Gemm's C is not a constant"))?;
            let plain = c.try_as_plain_ram()?;
            let values = plain.as_slice::<f32>()?;
            let leading_ones = c.shape().iter().rev().skip(1).all(|&d| d == 1);
            match values.len() {
                1 => bias.iter_mut().for_each(|b| *b = self.beta * values[0]),
                n if n == m && leading_ones => bias.iter_mut().zip(values).for_each(|(b, c)| *b = self.beta * c),
                _ => bail!("Gemm's C {:?} is not one value per output", c.shape()),
            }
        }
        model.wire_node(prefix, Dense::new(weights, bias, m), &[inputs[0]])
    }
}

/// A's known number of columns, when A is a variable `[rows, k]` f32 tensor.
fn a_columns(a: &TypedFact) -> Option<usize> {
    if a.rank() != 2 || a.datum_type != f32::datum_type() || a.konst.is_some() {
        return None;
    }
    a.shape[1].as_i64().and_then(|k| usize::try_from(k).ok())
}

/// `out = act(x · W + bias)` over `[rows, k]` f32, the arithmetic in [`Layer`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dense {
    layer: Arc<Layer>,
}

impl Eq for Dense {}

impl Dense {
    fn new(weights: Vec<f32>, bias: Vec<f32>, m: usize) -> Dense {
        Dense::of(Layer::new(&weights, &bias, m))
    }

    fn of(layer: Layer) -> Dense {
        Dense { layer: Arc::new(layer) }
    }

    /// B as `[k, m]` row-major f32 (transposed when `trans_b`), when it fits `[rows, k]` A and
    /// is small enough for this layer.
    fn weights(a: &TypedFact, b: &Tensor, trans_b: bool) -> Option<Vec<f32>> {
        let k = a_columns(a)?;
        if b.datum_type() != f32::datum_type() || b.rank() != 2 || b.len() > MAX_WEIGHTS {
            return None;
        }
        let (rows, cols) = (b.shape()[0], b.shape()[1]);
        let plain = b.try_as_plain_ram().ok()?;
        let values = plain.as_slice::<f32>().ok()?;
        if !trans_b {
            return (rows == k && cols > 0).then(|| values.to_vec());
        }
        if cols != k || rows == 0 {
            return None;
        }
        let mut w = vec![0f32; values.len()];
        for j in 0..rows {
            for i in 0..k {
                w[i * rows + j] = values[j * k + i];
            }
        }
        Some(w)
    }

    /// This layer with its neighbours folded in, when one of them is a constant bias added to
    /// its output, a ReLU of its output, or before it a `Scaler` or a constant subtracted from
    /// its input (PCA's centring). skl2onnx writes a scaled MLP as `Scaler` + `MatMul` + `Add` +
    /// `Relu` and PCA as `Sub` + `MatMul`: four passes over the batch become one.
    fn fused(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        let output = OutletId::new(node.id, 0);
        let output_is_final = model.outputs.contains(&output);
        if let (false, Some(succ)) = (output_is_final, model.single_succ(node.id)?) {
            if let Some(layer) = self.absorb_successor(model, succ, output)? {
                let patch = TypedModelPatch::fuse_with_next(model, node, Dense::of(layer))?;
                return Ok(Some(patch));
            }
        }
        if let Some((x, layer)) = self.absorb_predecessor(model, node)? {
            let mut patch = TypedModelPatch::replace_single_op(model, node, &[x], Dense::of(layer))?;
            patch.obliterate(node.inputs[0].node)?;
            return Ok(Some(patch));
        }
        Ok(None)
    }

    /// The layer with the node before it folded in, and that node's input, when that node
    /// is a `Scaler` or adds, subtracts or multiplies by a constant row, and feeds nothing
    /// else. Repeated, it takes a MinMaxScaler's `Mul` and `Add` both.
    fn absorb_predecessor(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<(OutletId, Layer)>> {
        /// Enough for every scaler skl2onnx writes; a bound, so a long chain stays separate.
        const MAX_STEPS: usize = 4;
        let input = node.inputs[0];
        let prec = model.node(input.node);
        let alone = prec.outputs.len() == 1 && prec.outputs[0].successors.len() == 1;
        let layer = (*self.layer).clone();
        if model.outputs.contains(&input) || !alone || layer.input_steps() + 2 > MAX_STEPS {
            return Ok(None);
        }
        let k = layer.inputs();
        let (x, layer) = if let Some(scaler) = prec.op_as::<MlOp>() {
            let Some((offset, scale)) = scaler.input_affine(k) else {
                return Ok(None);
            };
            let layer = layer.with_input_step_before(InputStep::Mul(scale)).with_input_step_before(InputStep::Sub(offset));
            (prec.inputs[0], layer)
        } else if let Some(c) = row_constant(model, prec, k)? {
            let step = match (c.kind, c.const_first) {
                (Kind::Sub, false) => InputStep::Sub(c.row),
                // `x + c` as `x - (-c)`: the same value.
                (Kind::Add, _) => InputStep::Sub(c.row.iter().map(|v| -v).collect()),
                (Kind::Mul, _) => InputStep::Mul(c.row),
                _ => return Ok(None),
            };
            (c.input, layer.with_input_step_before(step))
        } else {
            return Ok(None);
        };
        if model.outlet_fact(x)?.shape != model.outlet_fact(input)?.shape {
            return Ok(None); // the constant broadcast the input to a new shape
        }
        Ok(Some((x, layer)))
    }

    /// The layer with `succ` (which reads `output`) folded in, if it can be.
    fn absorb_successor(&self, model: &TypedModel, succ: &TypedNode, output: OutletId) -> TractResult<Option<Layer>> {
        let layer = (*self.layer).clone();
        if succ.op_is::<RowRelu>() && layer.activation() == Activation::Identity {
            return Ok(Some(layer.with_activation(Activation::Relu)));
        }
        // `out + c` or `out - c`, with `c` one value per output, after no activation.
        let Some(c) = row_constant(model, succ, layer.outputs())? else {
            return Ok(None);
        };
        let sign = match (c.kind, c.const_first) {
            (Kind::Add, _) => 1.0,
            (Kind::Sub, false) => -1.0,
            _ => return Ok(None),
        };
        if layer.activation() != Activation::Identity || c.input != output {
            return Ok(None);
        }
        let c = c.row;
        let delta: Vec<f32> = c.iter().map(|v| sign * v).collect();
        Ok(Some(layer.with_bias_added(&delta)))
    }
}

op_named!(Dense, "Dense");

impl EvalOp for Dense {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let &[rows, k] = x.shape() else {
            bail!("Dense expects [rows, k], got {:?}", x.shape());
        };
        if k != self.layer.inputs() {
            bail!("Dense: {k} columns for a layer of {} inputs", self.layer.inputs());
        }
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let m = self.layer.outputs();
        // Written in place: tract copies a `Vec` or an ndarray into a new tensor.
        let mut out = Tensor::zero::<f32>(&[rows, m])?;
        self.layer.forward(values, rows, out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Dense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact([inputs[0].shape[0].clone(), self.layer.outputs().to_dim()])))
    }

    fn declutter(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        self.fused(model, node)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_b_is_laid_out_as_k_by_m() {
        let a = f32::fact([TDim::from(5), 2.to_dim()]);
        // B' is [m = 3, k = 2]: rows (1, 2), (3, 4), (5, 6).
        let b = tensor2(&[[1f32, 2.], [3., 4.], [5., 6.]]);
        assert_eq!(Dense::weights(&a, &b, true), Some(vec![1., 3., 5., 2., 4., 6.]));
        assert_eq!(Dense::weights(&a, &b, false), None, "a [3, 2] B does not fit k = 2");
    }
}
