//! `Softmax`, `ArgMax` and `TopK` over the trailing axis, one pass over contiguous rows; and
//! `Relu`.
//!
//! Why: classifiers end in a softmax and an argmax over a handful of classes, for every row.
//! tract runs both through generic axis machinery that slices the tensor row by row (an
//! ndarray view, a kernel call and a small allocation per row), which made MLP classifiers 10
//! times slower than onnxruntime even though their matrix products were fast. Here, f32 input
//! whose reduced axes are the trailing ones (what every classifier export has) takes a plain
//! loop; anything else goes to tract's own implementation. tract's `Relu` is a `max` with a
//! broadcast zero, which goes through the same element-by-element path (a quarter of an MLP's
//! time); here it is one pass over the buffer. tract's `TopK` sorts each whole row to keep `k`
//! values: the nearest-neighbour models (k = 5 of every training row) spent half their time
//! sorting; here a row is one pass keeping the `k` best in order.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::activations::Clip;
use tract_onnx::tract_hir::ops::nn::{LayerSoftmax, Reduce, Reducer, Softmax};

use super::ml_ops::{expansion_rules, op_named, rules_like_input, typed_op_like_input};

/// Replaces tract-onnx's `Softmax` and `ArgMax` builders.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Softmax", softmax);
    reg.insert("ArgMax", arg_max);
    reg.insert("Relu", |_, _| Ok((expand(Relu), vec![])));
    reg.insert("TopK", top_k);
}

fn top_k(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    // `sorted = 0` allows any order; best first is one of them.
    Ok((expand(TopK { axis: attr_int(node, "axis").unwrap_or(-1), largest: attr_int(node, "largest").unwrap_or(1) != 0 }), vec![]))
}

#[derive(Debug, Clone)]
struct TopK {
    axis: i64,
    largest: bool,
}

impl Expansion for TopK {
    fn name(&self) -> StaticName {
        "TopK".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    /// tract-onnx's rules for its `TopK`.
    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&outputs[1].datum_type, i64::datum_type())?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        s.equals(&inputs[0].rank, &outputs[1].rank)?;
        s.equals(&inputs[1].rank, 1)?;
        s.equals(&inputs[1].shape[0], 1.to_dim())?;
        s.given(&inputs[0].rank, move |s, rank| {
            let axis = if self.axis >= 0 { self.axis } else { self.axis + rank } as usize;
            for ix in 0..rank as usize {
                if ix != axis {
                    s.equals(&inputs[0].shape[ix], &outputs[0].shape[ix])?;
                    s.equals(&inputs[0].shape[ix], &outputs[1].shape[ix])?;
                } else {
                    s.given(&inputs[1].value, move |s, k| {
                        if let Ok(k) = k.cast_to::<TDim>().and_then(|t| t.try_as_plain_ram()?.to_scalar::<TDim>().cloned()) {
                            s.equals(&outputs[0].shape[ix], k.clone())?;
                            s.equals(&outputs[1].shape[ix], k)?;
                        }
                        Ok(())
                    })?;
                }
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = model.outlet_fact(inputs[0])?.clone();
        let axis = resolve(self.axis, x.rank())?;
        let k =
            model.outlet_fact(inputs[1])?.konst.as_ref().and_then(|k| k.cast_to_scalar::<i64>().ok()).and_then(|k| usize::try_from(k).ok());
        if let (Some(k), true) = (k, x.datum_type == f32::datum_type() && axis + 1 == x.rank()) {
            let op = RowTopK { k, largest: self.largest };
            return model.wire_node(prefix, op, &[inputs[0]]);
        }
        let fallback_k = model.symbols.new_with_prefix("k").into();
        let op = tract_onnx::tract_hir::tract_core::ops::array::Topk { axis, fallback_k, largest: self.largest };
        model.wire_node(prefix, op, &[inputs[0], inputs[1]])
    }
}

/// The `k` largest (or smallest) values of each row of the last axis and their indices, best
/// first; equal values keep their order (the lower index first), as onnxruntime's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowTopK {
    k: usize,
    largest: bool,
}

impl RowTopK {
    /// Whether `a` ranks strictly before `b`.
    #[inline(always)]
    fn better(&self, a: f32, b: f32) -> bool {
        if self.largest {
            a > b
        } else {
            a < b
        }
    }

    fn row(&self, row: &[f32], values: &mut [f32], indices: &mut [i64]) {
        let mut len = 0;
        for (j, &v) in row.iter().enumerate() {
            if len == self.k && !self.better(v, values[len - 1]) {
                continue;
            }
            // Insert after every kept value that is not worse (ties keep the lower index first).
            let mut at = len.min(self.k - 1);
            while at > 0 && self.better(v, values[at - 1]) {
                if at < self.k {
                    values[at] = values[at - 1];
                    indices[at] = indices[at - 1];
                }
                at -= 1;
            }
            values[at] = v;
            indices[at] = j as i64;
            len = (len + 1).min(self.k);
        }
    }
}

op_named!(RowTopK, "RowTopK");

impl EvalOp for RowTopK {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut shape: TVec<usize> = x.shape().into();
        let n = shape.pop().unwrap_or(0);
        if self.k > n {
            bail!("TopK of {} values from rows of {n}", self.k);
        }
        let plain = x.try_as_plain_ram()?;
        let input = plain.as_slice::<f32>()?;
        let rows = input.len().checked_div(n).unwrap_or(0);
        let mut values = vec![0f32; rows * self.k];
        let mut indices = vec![0i64; rows * self.k];
        if self.k > 0 {
            for ((row, v), i) in input.chunks_exact(n).zip(values.chunks_exact_mut(self.k)).zip(indices.chunks_exact_mut(self.k)) {
                self.row(row, v, i);
            }
        }
        shape.push(self.k);
        Ok(tvec!(Tensor::from_shape(&shape, &values)?.into_tvalue(), Tensor::from_shape(&shape, &indices)?.into_tvalue()))
    }
}

impl TypedOp for RowTopK {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.dims().into();
        shape.pop();
        shape.push(self.k.to_dim());
        Ok(tvec!(f32::fact(shape.clone()), i64::fact(shape)))
    }

    as_op!();
}

#[derive(Debug, Clone)]
struct Relu;

impl Expansion for Relu {
    fn name(&self) -> StaticName {
        "Relu".into()
    }

    expansion_rules!(like_input);

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        if model.outlet_fact(inputs[0])?.datum_type == f32::datum_type() {
            model.wire_node(prefix, RowRelu, inputs)
        } else {
            Clip::new(Some(0.0), None).wire(prefix, model, inputs)
        }
    }
}

/// `max(x, 0)` over an f32 tensor (NaN stays NaN, as in onnxruntime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowRelu;

op_named!(RowRelu, "RowRelu");

impl EvalOp for RowRelu {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut out = args_1!(inputs).into_tensor();
        let mut view = out.try_as_plain_ram_mut()?;
        view.as_slice_mut::<f32>()?.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
        Ok(tvec!(out.into_tvalue()))
    }
}

typed_op_like_input!(RowRelu);

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn softmax(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    // Before opset 13, Softmax flattens everything from `axis` (default 1) into one axis.
    let coerce = ctx.onnx_operator_set_version < 13;
    let axis = attr_int(node, "axis").unwrap_or(if coerce { 1 } else { -1 });
    Ok((expand(TrailingSoftmax { axis, coerce }), vec![]))
}

fn arg_max(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axis = attr_int(node, "axis").unwrap_or(0);
    let keep_dims = attr_int(node, "keepdims").unwrap_or(1) != 0;
    let take_last = attr_int(node, "select_last_index").unwrap_or(0) != 0;
    Ok((
        expand(TrailingArgMax { axis, keep_dims, take_last, tract: Reduce::new(Some(vec![axis]), keep_dims, Reducer::ArgMax(take_last)) }),
        vec![],
    ))
}

fn resolve(axis: i64, rank: usize) -> TractResult<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank).ok_or_else(|| anyhow!("axis {axis} out of range for rank {rank}"))
}

#[derive(Debug, Clone)]
struct TrailingSoftmax {
    axis: i64,
    coerce: bool,
}

impl Expansion for TrailingSoftmax {
    fn name(&self) -> StaticName {
        "Softmax".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        rules_like_input(s, inputs, outputs)?;
        s.equals(&outputs[0].rank, &inputs[0].rank)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        let axis = resolve(self.axis, fact.rank())?;
        if fact.datum_type == f32::datum_type() && (self.coerce || axis + 1 == fact.rank()) {
            return model.wire_node(prefix, RowSoftmax { from_axis: axis }, inputs);
        }
        if self.coerce {
            LayerSoftmax::new(self.axis as isize, true).wire(prefix, model, inputs)
        } else {
            Softmax::new(self.axis as isize).wire(prefix, model, inputs)
        }
    }
}

/// Softmax over the axes from `from_axis` to the end, each row on its own (onnxruntime's
/// formula: subtract the max, exponentiate, divide by the sum).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowSoftmax {
    from_axis: usize,
}

op_named!(RowSoftmax, "RowSoftmax");

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let width: usize = x.shape()[self.from_axis.min(x.rank())..].iter().product();
        let mut out = x.into_tensor();
        if width > 0 {
            let mut view = out.try_as_plain_ram_mut()?;
            softmax_rows(view.as_slice_mut::<f32>()?, width);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

typed_op_like_input!(RowSoftmax);

#[derive(Debug, Clone)]
struct TrailingArgMax {
    axis: i64,
    keep_dims: bool,
    take_last: bool,
    /// tract's own, for its rules and for what the fast path does not cover.
    tract: Reduce,
}

impl Expansion for TrailingArgMax {
    fn name(&self) -> StaticName {
        "ArgMax".into()
    }

    expansion_rules!(from tract);

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        let axis = resolve(self.axis, fact.rank())?;
        if fact.datum_type == f32::datum_type() && axis + 1 == fact.rank() {
            return model.wire_node(prefix, RowArgMax { keep_dims: self.keep_dims, take_last: self.take_last }, inputs);
        }
        self.tract.wire(prefix, model, inputs)
    }
}

/// Index of the largest value of each row of the last axis (the first one on ties, or the last
/// with `select_last_index`), as i64.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowArgMax {
    keep_dims: bool,
    take_last: bool,
}

op_named!(RowArgMax, "RowArgMax");

impl EvalOp for RowArgMax {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut shape: TVec<usize> = x.shape().into();
        let width = shape.pop().unwrap_or(1);
        if width == 0 {
            bail!("ArgMax over an empty axis");
        }
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let out: Vec<i64> = values
            .chunks_exact(width)
            .map(|row| {
                let mut best = 0;
                for (k, &v) in row.iter().enumerate() {
                    if v > row[best] || (self.take_last && v == row[best]) {
                        best = k;
                    }
                }
                best as i64
            })
            .collect();
        if self.keep_dims {
            shape.push(1);
        }
        Ok(tvec!(Tensor::from_shape(&shape, &out)?.into_tvalue()))
    }
}

impl TypedOp for RowArgMax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.dims().into();
        shape.pop();
        if self.keep_dims {
            shape.push(1.to_dim());
        }
        Ok(tvec!(i64::fact(shape)))
    }

    as_op!();
}

/// Softmax of each `width`-long row of `values`, in place (onnxruntime's formula: subtract the
/// row's max, exponentiate, divide by the sum). In three passes, so the middle one, the
/// exponentials, runs over the whole buffer and vectorises even when rows hold 3 classes; rows
/// of up to 16 take passes compiled for their exact width (with the width only known at run
/// time, the per-row loop set-up cost more than the arithmetic).
pub(crate) fn softmax_rows(values: &mut [f32], width: usize) {
    macro_rules! by_width {
        ($($w:literal)*) => {
            match width {
                0 => {}
                $($w => softmax_fixed::<$w>(values),)*
                _ => {
                    values.chunks_exact_mut(width).for_each(subtract_max);
                    values.iter_mut().for_each(|v| *v = exp(*v));
                    values.chunks_exact_mut(width).for_each(divide_by_sum);
                }
            }
        };
    }
    by_width!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

fn softmax_fixed<const W: usize>(values: &mut [f32]) {
    for row in values.chunks_exact_mut(W) {
        if let Ok(row) = <&mut [f32; W]>::try_from(row) {
            subtract_max(row);
        }
    }
    values.iter_mut().for_each(|v| *v = exp(*v));
    for row in values.chunks_exact_mut(W) {
        if let Ok(row) = <&mut [f32; W]>::try_from(row) {
            divide_by_sum(row);
        }
    }
}

#[inline(always)]
fn subtract_max(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    row.iter_mut().for_each(|v| *v -= max);
}

#[inline(always)]
fn divide_by_sum(row: &mut [f32]) {
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

/// `e^x` within 2 ulp (Cephes' `expf` polynomial), branch-free so loops over it vectorise;
/// the libm call it replaces was half the time of an MLP classifier's softmax. Inputs below
/// -87.3 (where e^x is subnormal) give e^-87.3 ≈ 1.2e-38.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    // 2^n, built in the exponent bits (n is within [-126, 128) after the clamp).
    let n = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    e * f32::from_bits(((n + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_in_order_and_ties_by_index() {
        let run = |largest, k, row: &[f32]| {
            let op = RowTopK { k, largest };
            let (mut v, mut i) = (vec![0.0; k], vec![0; k]);
            op.row(row, &mut v, &mut i);
            (v, i)
        };
        let row = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(run(false, 3, &row), (vec![1.0, 1.0, 2.0], vec![1, 3, 6]));
        assert_eq!(run(true, 3, &row), (vec![9.0, 6.0, 5.0], vec![5, 7, 4]));
        assert_eq!(run(true, 1, &row), (vec![9.0], vec![5]));
        assert_eq!(run(false, 8, &row).1, vec![1, 3, 6, 0, 2, 4, 7, 5]);
        assert_eq!(run(false, 2, &[2.0, 2.0, 2.0]).1, vec![0, 1]);
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(((got - want) / want).abs() < 2.5e-7, "exp({x}) = {got}, libm {want}");
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_inputs() {
        let mut v = [1.0, 2.0, 3.0, 1000.0, 0.0, -1000.0];
        softmax_rows(&mut v, 3);
        let e = [(-2f32).exp(), (-1f32).exp(), 1.0];
        let s: f32 = e.iter().sum();
        for (got, want) in v[..3].iter().zip(e.iter().map(|x| x / s)) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
        assert_eq!(v[3], 1.0);
        assert!(v[4] < 1e-30 && v[5] < 1e-30, "{v:?}");
    }
}
