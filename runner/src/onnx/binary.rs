//! `Add`, `Sub`, `Mul`, `Div` between a tensor and a row that varies only along the last axis
//! (a bias, a mean, a scale, a scalar, or the training point a nearest-neighbour model's `Scan`
//! compares every row with): one vectorised pass.
//!
//! Why: tract broadcasts these element by element through ndarray's generic zip unless the two
//! operands line up with one of its kernels, which made the bias additions and centring of
//! MLPs and PCA 60% of their time, and those models 5 to 10 times slower than onnxruntime.
//! Everything else (other shapes, other types) is tract's own op.

use std::sync::Arc;

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::binary::InferenceBinOp;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::tract_core::ops::math;

use super::ml_ops::{expansion_rules, op_named, typed_op_like_input};

/// Replaces tract-onnx's builders for the four arithmetic operators.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Add", |_, _| Ok((RowBinary::op(Kind::Add), vec![])));
    reg.insert("Sub", |_, _| Ok((RowBinary::op(Kind::Sub), vec![])));
    reg.insert("Mul", |_, _| Ok((RowBinary::op(Kind::Mul), vec![])));
    reg.insert("Div", |_, _| Ok((RowBinary::op(Kind::Div), vec![])));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

impl Kind {
    fn tract(self) -> InferenceBinOp {
        InferenceBinOp(match self {
            Kind::Add => Box::new(math::Add),
            Kind::Sub => Box::new(math::Sub),
            Kind::Mul => Box::new(math::Mul),
            Kind::Div => Box::new(math::Div),
        })
    }

    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Kind::Add => a + b,
            Kind::Sub => a - b,
            Kind::Mul => a * b,
            Kind::Div => a / b,
        }
    }
}

#[derive(Debug, Clone)]
struct RowBinary {
    kind: Kind,
    /// tract's own: its type and shape rules, and what the fast path does not cover.
    tract: InferenceBinOp,
}

impl RowBinary {
    fn op(kind: Kind) -> Box<dyn InferenceOp> {
        expand(RowBinary { kind, tract: kind.tract() })
    }
}

impl Expansion for RowBinary {
    fn name(&self) -> StaticName {
        format!("{:?}", self.kind).into()
    }

    expansion_rules!(from tract);

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let a = model.outlet_fact(inputs[0])?.clone();
        let b = model.outlet_fact(inputs[1])?.clone();
        for (var, konst, const_first, input) in [(&a, &b, false, inputs[0]), (&b, &a, true, inputs[1])] {
            if let Some(row) = per_column_constant(var, konst) {
                let op = RowConst { kind: self.kind, row: Arc::new(row), const_first };
                return model.wire_node(prefix, op, &[input]);
            }
        }
        for (var, row, row_first, pair) in [(&a, &b, false, [inputs[0], inputs[1]]), (&b, &a, true, [inputs[1], inputs[0]])] {
            if is_row_of(var, row) {
                let op = RowVar { kind: self.kind, row_first };
                return model.wire_node(prefix, op, &pair);
            }
        }
        self.tract.wire(prefix, model, inputs)
    }
}

/// The constant `konst` as one value per column of `var` (both f32), when it only varies along
/// `var`'s last axis and broadcasting it does not change `var`'s shape.
fn per_column_constant(var: &TypedFact, konst: &TypedFact) -> Option<Vec<f32>> {
    let value = konst.konst.as_ref()?;
    if var.konst.is_some()
        || var.datum_type != f32::datum_type()
        || konst.datum_type != f32::datum_type()
        || value.rank() > var.rank()
        || var.rank() == 0
    {
        return None;
    }
    let columns = var.shape.last()?.as_i64().and_then(|c| usize::try_from(c).ok())?;
    let shape = value.shape();
    let (last, leading) = match shape.split_last() {
        Some((&l, leading)) => (l, leading),
        None => (1, &[][..]),
    };
    if leading.iter().any(|&d| d != 1) || !(last == 1 || last == columns) || columns == 0 {
        return None;
    }
    let plain = value.try_as_plain_ram().ok()?;
    let values = plain.as_slice::<f32>().ok()?;
    Some(if last == 1 { vec![values[0]; columns] } else { values.to_vec() })
}

/// Whether `row` (variable, f32) broadcasts along `var`'s last axis only: all its dimensions
/// are 1 but the last, which is `var`'s (known) last, and it has no more axes than `var`.
fn is_row_of(var: &TypedFact, row: &TypedFact) -> bool {
    let dims = row.shape.dims();
    let Some((last, leading)) = dims.split_last() else {
        return false;
    };
    var.datum_type == f32::datum_type()
        && row.datum_type == f32::datum_type()
        && var.konst.is_none()
        && row.konst.is_none()
        && var.rank() >= 1
        && dims.len() <= var.rank()
        && leading.iter().all(|d| d.is_one())
        && last.as_i64().is_some_and(|l| l > 0)
        && var.shape.last() == Some(last)
        && var.shape.dims() != dims
}

/// `x <op> row` (or `row <op> x`) for a variable `row` of the last axis's length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowVar {
    kind: Kind,
    row_first: bool,
}

op_named!(RowVar, |op| format!("RowVar{:?}", op.kind));

impl EvalOp for RowVar {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, row) = args_2!(inputs);
        let row = row.try_as_plain_ram()?;
        let row = row.as_slice::<f32>()?;
        let mut out = x.into_tensor();
        let mut view = out.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<f32>()?;
        if row.is_empty() || values.len() % row.len() != 0 {
            bail!("{} values do not make rows of {}", values.len(), row.len());
        }
        apply_rows(self.kind, self.row_first, values, row);
        Ok(tvec!(out.into_tvalue()))
    }
}

typed_op_like_input!(RowVar);

/// `v <op> row` (or `row <op> v`) for each `row.len()`-long piece `v` of `values`.
fn apply_rows(kind: Kind, row_first: bool, values: &mut [f32], row: &[f32]) {
    for chunk in values.chunks_exact_mut(row.len()) {
        if row_first {
            chunk.iter_mut().zip(row).for_each(|(v, c)| *v = kind.apply(*c, *v));
        } else {
            chunk.iter_mut().zip(row).for_each(|(v, c)| *v = kind.apply(*v, *c));
        }
    }
}

/// A node that combines a variable with a constant row, for a neighbour to fold it in.
pub(crate) struct RowConstant {
    pub kind: Kind,
    /// One value per column of the variable.
    pub row: Vec<f32>,
    /// `row <op> x` rather than `x <op> row`.
    pub const_first: bool,
    /// The variable.
    pub input: OutletId,
}

/// `node` as a [`RowConstant`], when it is this module's `RowConst` or tract's binary op with a
/// constant row (`columns` values, or one) on one side and the variable's shape on the output.
pub(crate) fn row_constant(model: &TypedModel, node: &TypedNode, columns: usize) -> TractResult<Option<RowConstant>> {
    if let Some(op) = node.op_as::<RowConst>() {
        return Ok((op.row.len() == columns).then(|| RowConstant {
            kind: op.kind,
            row: op.row.to_vec(),
            const_first: op.const_first,
            input: node.inputs[0],
        }));
    }
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    let kind = match bin.0.name() {
        "Add" => Kind::Add,
        "Sub" => Kind::Sub,
        "Mul" => Kind::Mul,
        "Div" => Kind::Div,
        _ => return Ok(None),
    };
    let output = model.outlet_fact(OutletId::new(node.id, 0))?;
    for (var, konst, const_first) in [(0, 1, false), (1, 0, true)] {
        let (var, konst) = (node.inputs[var], node.inputs[konst]);
        let var_fact = model.outlet_fact(var)?;
        if var_fact.shape != output.shape {
            continue; // the constant broadcasts the variable to a new shape
        }
        if let Some(row) = per_column_constant(var_fact, model.outlet_fact(konst)?) {
            if row.len() == columns {
                return Ok(Some(RowConstant { kind, row, const_first, input: var }));
            }
        }
    }
    Ok(None)
}

/// `x <op> row` (or `row <op> x`), `row` repeated along every leading axis.
#[derive(Debug, Clone)]
struct RowConst {
    kind: Kind,
    row: Arc<Vec<f32>>,
    const_first: bool,
}

impl PartialEq for RowConst {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.const_first == other.const_first
            && self.row.len() == other.row.len()
            && self.row.iter().zip(other.row.iter()).all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for RowConst {}

op_named!(RowConst, |op| format!("Row{:?}", op.kind));

impl EvalOp for RowConst {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut out = x.into_tensor();
        let width = self.row.len();
        let mut view = out.try_as_plain_ram_mut()?;
        let values = view.as_slice_mut::<f32>()?;
        if values.len() % width != 0 {
            bail!("{} values do not make rows of {width}", values.len());
        }
        apply_rows(self.kind, self.const_first, values, &self.row);
        Ok(tvec!(out.into_tvalue()))
    }
}

typed_op_like_input!(RowConst);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_apply_in_both_operand_orders() {
        let mut v = vec![10.0, 20.0, 30.0, 40.0];
        apply_rows(Kind::Sub, false, &mut v, &[1.0, 2.0]);
        assert_eq!(v, [9.0, 18.0, 29.0, 38.0]);
        apply_rows(Kind::Div, true, &mut v, &[90.0, 36.0]);
        assert_eq!(v, [10.0, 2.0, 90.0 / 29.0, 36.0 / 38.0]);
    }

    #[test]
    fn only_per_column_constants_take_the_fast_path() {
        let x = f32::fact([TDim::from(4), 3.to_dim()]);
        let konst = |t: Tensor| TypedFact::try_from(t).unwrap();
        assert_eq!(per_column_constant(&x, &konst(tensor1(&[1f32, 2., 3.]))), Some(vec![1., 2., 3.]));
        assert_eq!(per_column_constant(&x, &konst(tensor0(2f32))), Some(vec![2., 2., 2.]));
        assert_eq!(per_column_constant(&x, &konst(tensor2(&[[1f32], [2.], [3.], [4.]]))), None);
        assert_eq!(per_column_constant(&x, &konst(tensor1(&[1i64, 2, 3]))), None);
        let row = f32::fact([1.to_dim(), 3.to_dim()]);
        assert!(is_row_of(&x, &row));
        assert!(!is_row_of(&x, &x), "same shapes are not a broadcast");
    }
}
