//! Small dense layers: `MatMul` and `Gemm` of a `[rows, k]` f32 tensor by a constant `[k, m]`
//! matrix (plus a constant bias), the layers of scikit-learn MLPs, PCA and PyTorch MLP heads.
//!
//! Why: tract's matrix product packs both operands into tiles for its SIMD kernels on every
//! run; for the few-dozen-wide layers of tabular models, packing, tiling and the separate bias
//! addition cost more than the arithmetic. Here the weights are laid out once, at load, and each
//! row's outputs are built feature by feature, a vectorised update of all `m` outputs at once.
//! Bigger layers (more than [`MAX_WEIGHTS`] weights) and everything else stay tract's.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::matmul::MatMulInference;

use super::ml_ops::{
    expansion_rules, is_float_initializer, op_named, rules_with_weights, stock_op,
};

/// Above this many weights, tract's tiled kernels win.
const MAX_WEIGHTS: usize = 64 * 64;

/// Replaces tract-onnx's `MatMul` and `Gemm` builders.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("MatMul", |_, _| {
        Ok((expand(DenseMatMul(MatMulInference::default())), vec![]))
    });
    reg.insert("Gemm", gemm);
}

fn gemm(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr_f = |n: &str, d: f32| {
        node.attribute
            .iter()
            .find(|a| a.name == n)
            .map_or(d, |a| a.f)
    };
    let attr_i = |n: &str| {
        node.attribute
            .iter()
            .find(|a| a.name == n)
            .is_some_and(|a| a.i != 0)
    };
    let (alpha, beta) = (attr_f("alpha", 1.0), attr_f("beta", 1.0));
    let (trans_a, trans_b) = (attr_i("transA"), attr_i("transB"));
    // This layer only when B (and C, if any) are float constants of the graph: then the layer is
    // known at load time. (In a subgraph, or with computed weights, tract's Gemm.)
    let constant_inputs = node
        .input
        .iter()
        .skip(1)
        .filter(|n| !n.is_empty())
        .all(|n| is_float_initializer(ctx, n));
    if trans_a || !constant_inputs || node.input.len() < 2 {
        return stock_op("Gemm", ctx, node);
    }
    Ok((
        expand(DenseGemm {
            alpha,
            beta,
            trans_b,
        }),
        vec![],
    ))
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

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
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

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        rules_with_weights(s, inputs, outputs, "Gemm", 2)?;
        let m = if self.trans_b { 0 } else { 1 };
        s.equals(&outputs[0].shape[1], &inputs[1].shape[m])?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let a = model.outlet_fact(inputs[0])?.clone();
        let b = model.outlet_fact(inputs[1])?.clone();
        let k = a_columns(&a).ok_or_else(|| anyhow!("Gemm needs a known number of columns"))?;
        let b = b
            .konst
            .ok_or_else(|| anyhow!("Gemm's B is not a constant"))?;
        let mut weights = Dense::weights(&a, &b, self.trans_b)
            .ok_or_else(|| anyhow!("Gemm's B {:?} does not fit A {:?}", b.shape(), a.shape))?;
        if self.alpha != 1.0 {
            weights.iter_mut().for_each(|w| *w *= self.alpha);
        }
        let m = weights.len() / k.max(1);
        let mut bias = vec![0f32; m];
        if let Some(&c) = inputs.get(2) {
            let c = model
                .outlet_fact(c)?
                .konst
                .clone()
                .ok_or_else(|| anyhow!("Gemm's C is not a constant"))?;
            let plain = c.try_as_plain_ram()?;
            let values = plain.as_slice::<f32>()?;
            let leading_ones = c.shape().iter().rev().skip(1).all(|&d| d == 1);
            match values.len() {
                1 => bias.iter_mut().for_each(|b| *b = self.beta * values[0]),
                n if n == m && leading_ones => bias
                    .iter_mut()
                    .zip(values)
                    .for_each(|(b, c)| *b = self.beta * c),
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

/// `out[r] = bias + x[r] · W`, W `[k, m]` row-major.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    weights: Arc<Vec<f32>>,
    /// W transposed, `[m, k]`: the outputs past the last whole block of 8 are dot products.
    transposed: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    m: usize,
}

impl Dense {
    pub(crate) fn new(weights: Vec<f32>, bias: Vec<f32>, m: usize) -> Dense {
        let k = weights.len() / m.max(1);
        let mut transposed = vec![0f32; weights.len()];
        for i in 0..k {
            for j in 0..m {
                transposed[j * k + i] = weights[i * m + j];
            }
        }
        Dense {
            weights: Arc::new(weights),
            transposed: Arc::new(transposed),
            bias: Arc::new(bias),
            m,
        }
    }

    /// One row: blocks of 16, then 8, outputs accumulate in registers feature by feature; the
    /// rest are dot products with the transposed weights.
    #[inline]
    pub(crate) fn row(&self, x: &[f32], out: &mut [f32]) {
        let (k, m) = (x.len(), self.m);
        let mut j = 0;
        while j + 16 <= m {
            let mut acc = [0f32; 16];
            acc.copy_from_slice(&self.bias[j..j + 16]);
            for (&v, w) in x.iter().zip(self.weights.chunks_exact(m)) {
                let w = &w[j..j + 16];
                for t in 0..16 {
                    acc[t] += v * w[t];
                }
            }
            out[j..j + 16].copy_from_slice(&acc);
            j += 16;
        }
        while j + 8 <= m {
            let mut acc = [0f32; 8];
            acc.copy_from_slice(&self.bias[j..j + 8]);
            for (&v, w) in x.iter().zip(self.weights.chunks_exact(m)) {
                let w = &w[j..j + 8];
                for t in 0..8 {
                    acc[t] += v * w[t];
                }
            }
            out[j..j + 8].copy_from_slice(&acc);
            j += 8;
        }
        for (j, o) in out.iter_mut().enumerate().skip(j) {
            *o = self.bias[j]
                + crate::onnx::ml_ops::linear::dot(x, &self.transposed[j * k..(j + 1) * k]);
        }
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
}

impl PartialEq for Dense {
    /// Same layer only when it shares the weights (they are the model's).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && Arc::ptr_eq(&self.bias, &other.bias)
    }
}

impl Eq for Dense {}

op_named!(Dense, "Dense");

impl EvalOp for Dense {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let &[rows, k] = x.shape() else {
            bail!("Dense expects [rows, k], got {:?}", x.shape());
        };
        if k * self.m != self.weights.len() {
            bail!("Dense: {k} columns for {} weights", self.weights.len());
        }
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let m = self.m;
        let mut out = vec![0f32; rows * m];
        for (row, o) in values.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(m)) {
            self.row(row, o);
        }
        Ok(tvec!(tract_ndarray::Array2::from_shape_vec(
            (rows, m),
            out
        )?
        .into_tvalue()))
    }
}

impl TypedOp for Dense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact([
            inputs[0].shape[0].clone(),
            self.m.to_dim()
        ])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_a_plain_matrix_product_for_every_width() {
        for k in [1, 3, 8] {
            for m in [1, 3, 8, 11, 16, 19, 24, 35] {
                let w: Vec<f32> = (0..k * m).map(|i| (i % 7) as f32 - 3.0).collect();
                let bias: Vec<f32> = (0..m).map(|j| j as f32 * 0.5).collect();
                let x: Vec<f32> = (0..k).map(|i| 1.0 + i as f32).collect();
                let dense = Dense::new(w.clone(), bias.clone(), m);
                let mut out = vec![0f32; m];
                dense.row(&x, &mut out);
                for j in 0..m {
                    let want = bias[j] + (0..k).map(|i| x[i] * w[i * m + j]).sum::<f32>();
                    assert_eq!(out[j], want, "k {k}, m {m}, output {j}");
                }
            }
        }
    }

    #[test]
    fn transposed_b_is_laid_out_as_k_by_m() {
        let a = f32::fact([TDim::from(5), 2.to_dim()]);
        // B' is [m = 3, k = 2]: rows (1, 2), (3, 4), (5, 6).
        let b = tensor2(&[[1f32, 2.], [3., 4.], [5., 6.]]);
        assert_eq!(
            Dense::weights(&a, &b, true),
            Some(vec![1., 3., 5., 2., 4., 6.])
        );
        assert_eq!(
            Dense::weights(&a, &b, false),
            None,
            "a [3, 2] B does not fit k = 2"
        );
    }
}
