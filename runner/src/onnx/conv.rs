//! Small 2-D convolutions (`Conv`, NCHW, one group, no dilation, constant weights), computed
//! directly: each image's patches are gathered into a `[pixels, patch]` matrix that goes
//! through the patch-by-channels weights as one small dense layer ([`Layer`]), with a following
//! `Relu` and a following `MaxPool` (no padding) folded in.
//!
//! Why: tract's convolution works out its patch geometry and an im2col copy on every run, which
//! for the small images of tabular-style CNNs (8×8 digits) cost more than the arithmetic: a
//! single-row prediction took 21 µs against onnxruntime's 7 µs, and big batches ran at a sixth
//! of its speed. Anything else (groups, dilations, `SAME_*` padding, computed weights, big
//! kernels) stays tract's.

use std::sync::Arc;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{tensor_proto::DataType, NodeProto};
use tract_onnx::tract_hir::internal::*;

use super::layer::{Activation, Layer};
use super::ml_ops::{is_float_initializer, op_named, rules_with_weights, stock_op};
use super::rowwise::RowRelu;
use tract_onnx::tract_hir::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

/// Above this many weights, tract's im2col and matrix kernels win.
const MAX_WEIGHTS: usize = 64 * 64 * 9;

/// Replaces tract-onnx's `Conv` builder.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Conv", conv);
}

fn conv(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |n: &str| node.attribute.iter().find(|a| a.name == n);
    let ints = |n: &str| attr(n).map(|a| a.ints.clone()).unwrap_or_default();
    let auto_pad = attr("auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned());
    let group = attr("group").map_or(1, |a| a.i);
    let dilations = ints("dilations");
    let strides = ints("strides");
    let pads = ints("pads");
    let weights = ctx.model.graph.as_ref().and_then(|g| g.initializer.iter().find(|t| Some(&t.name) == node.input.get(1)));
    let bias_ok = match node.input.get(2).filter(|b| !b.is_empty()) {
        None => true,
        Some(b) => is_float_initializer(ctx, b),
    };
    let fits = group == 1
        && dilations.iter().all(|&d| d == 1)
        && matches!(auto_pad.as_deref(), None | Some("NOTSET") | Some("VALID") | Some(""))
        && (strides.is_empty() || (strides.len() == 2 && strides.iter().all(|&s| s >= 1)))
        && (pads.is_empty() || (pads.len() == 4 && pads.iter().all(|&p| p >= 0)))
        && bias_ok
        && weights.is_some_and(|w| {
            w.data_type == DataType::Float as i32 && w.dims.len() == 4 && w.dims.iter().product::<i64>() as usize <= MAX_WEIGHTS
        });
    if !fits {
        return stock_op("Conv", ctx, node);
    }
    let valid = auto_pad.as_deref() == Some("VALID");
    let pad = |i: usize| {
        if valid {
            0
        } else {
            pads.get(i).copied().unwrap_or(0) as usize
        }
    };
    let stride = |i: usize| strides.get(i).copied().unwrap_or(1) as usize;
    Ok((expand(DirectConv { strides: [stride(0), stride(1)], pads: [pad(0), pad(1), pad(2), pad(3)] }), vec![]))
}

/// Output size of one spatial axis.
fn out_size(input: i64, kernel: i64, pad_begin: usize, pad_end: usize, stride: usize) -> i64 {
    (input + pad_begin as i64 + pad_end as i64 - kernel) / stride as i64 + 1
}

#[derive(Debug, Clone)]
struct DirectConv {
    strides: [usize; 2],
    /// Top, left, bottom, right.
    pads: [usize; 4],
}

impl Expansion for DirectConv {
    fn name(&self) -> StaticName {
        "Conv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        rules_with_weights(s, inputs, outputs, "Conv", 4)?;
        s.equals(&outputs[0].shape[1], &inputs[1].shape[0])?;
        for axis in 0..2 {
            let (begin, end, stride) = (self.pads[axis], self.pads[axis + 2], self.strides[axis]);
            s.given_2(&inputs[0].shape[2 + axis], &inputs[1].shape[2 + axis], move |s, input, kernel| {
                if let (Ok(i), Ok(k)) = (input.to_i64(), kernel.to_i64()) {
                    s.equals(&outputs[0].shape[2 + axis], out_size(i, k, begin, end, stride).to_dim())?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = model.outlet_fact(inputs[0])?.clone();
        let w = model.outlet_fact(inputs[1])?.konst.clone().ok_or_else(|| anyhow!("Conv's weights are not a constant"))?;
        let dims: Vec<usize> = x.shape.iter().skip(1).filter_map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok())).collect();
        if x.datum_type != f32::datum_type() || w.datum_type() != f32::datum_type() || dims.len() != 3 {
            bail!("Conv: only f32 [N, C, H, W] inputs are supported here");
        }
        let &[oc, ic, kh, kw] = w.shape() else {
            bail!("Conv's weights are {:?}, not [out, in, kh, kw]", w.shape());
        };
        let [c, h, wd] = [dims[0], dims[1], dims[2]];
        if c != ic {
            bail!("Conv's weights take {ic} channels, the input has {c}");
        }
        let oh = out_size(h as i64, kh as i64, self.pads[0], self.pads[2], self.strides[0]);
        let ow = out_size(wd as i64, kw as i64, self.pads[1], self.pads[3], self.strides[1]);
        if oh < 1 || ow < 1 {
            bail!("Conv: a {kh}×{kw} kernel does not fit a {h}×{wd} input");
        }
        let plain = w.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        // [oc, ic, kh, kw] -> [ic, kh, kw, oc]: one tap's weights for all outputs, contiguous.
        let mut taps = vec![0f32; values.len()];
        for o in 0..oc {
            for t in 0..ic * kh * kw {
                taps[t * oc + o] = values[o * ic * kh * kw + t];
            }
        }
        let mut bias = vec![0f32; oc];
        if let Some(&b) = inputs.get(2) {
            let b = model.outlet_fact(b)?.konst.clone().ok_or_else(|| anyhow!("Conv's bias is not a constant"))?;
            let plain = b.try_as_plain_ram()?;
            let values = plain.as_slice::<f32>()?;
            if values.len() != oc {
                bail!("Conv's bias has {} values for {oc} outputs", values.len());
            }
            bias.copy_from_slice(values);
        }
        let op = ConvOp {
            layer: Arc::new(Layer::new(&taps, &bias, oc)),
            input: [ic, h, wd],
            kernel: [kh, kw],
            out: [oc, oh as usize, ow as usize],
            strides: self.strides,
            pads: [self.pads[0], self.pads[1]],
            pool: None,
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

#[derive(Debug, Clone)]
struct ConvOp {
    /// Weights `[ic · kh · kw, oc]` and bias: a dense layer from a patch to the outputs.
    layer: Arc<Layer>,
    /// Channels, height, width.
    input: [usize; 3],
    kernel: [usize; 2],
    /// Channels, height, width.
    out: [usize; 3],
    strides: [usize; 2],
    /// Top, left.
    pads: [usize; 2],
    /// A max pooling of the output folded in (torch's `Conv`, `Relu`, `MaxPool`).
    pool: Option<MaxPool2d>,
}

/// Max pooling without padding or dilation: window and strides, height then width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaxPool2d {
    kernel: [usize; 2],
    strides: [usize; 2],
}

impl MaxPool2d {
    /// From tract's `MaxPool` when it is this simple case on NCHW images.
    fn of(op: &MaxPool) -> Option<MaxPool2d> {
        let spec = &op.pool_spec;
        let no_padding = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(b, e) => b.iter().chain(e).all(|&p| p == 0),
            PaddingSpec::ExplicitOnnxPool(b, e, ceil) => !ceil && b.iter().chain(e).all(|&p| p == 0),
            _ => false,
        };
        let ok = op.with_index_outputs.is_none()
            && spec.data_format == DataFormat::NCHW
            && spec.kernel_shape.len() == 2
            && spec.kernel_shape.iter().all(|&k| k >= 1)
            && spec.dilations().iter().all(|&d| d == 1)
            && spec.strides().len() == 2
            && spec.strides().iter().all(|&s| s >= 1)
            && no_padding;
        let strides = spec.strides();
        ok.then(|| MaxPool2d { kernel: [spec.kernel_shape[0], spec.kernel_shape[1]], strides: [strides[0], strides[1]] })
    }

    /// The pooled size of an `[h, w]` plane, if the window fits it.
    fn out(&self, [h, w]: [usize; 2]) -> Option<[usize; 2]> {
        let axis = |n: usize, i: usize| n.checked_sub(self.kernel[i]).map(|rest| rest / self.strides[i] + 1);
        Some([axis(h, 0)?, axis(w, 1)?])
    }

    /// `plane` (`[h, w]`) into `out` (`[oh, ow]`, from [`MaxPool2d::out`]). NaN is skipped
    /// (`f32::max`).
    fn pool(&self, plane: &[f32], [h, w]: [usize; 2], out: &mut [f32], [oh, ow]: [usize; 2]) {
        debug_assert!(plane.len() >= h * w && out.len() >= oh * ow);
        let [kh, kw] = self.kernel;
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, x0) = (oy * self.strides[0], ox * self.strides[1]);
                let mut best = f32::NEG_INFINITY;
                for y in y0..y0 + kh {
                    for &v in &plane[y * w + x0..y * w + x0 + kw] {
                        best = best.max(v);
                    }
                }
                out[oy * ow + ox] = best;
            }
        }
    }
}

/// Per-run buffers of [`ConvOp::image`].
struct Scratch {
    padded: Vec<f32>,
    patches: Vec<f32>,
    acc: Vec<f32>,
    /// The convolution's output before pooling, `[oc, oh, ow]` (empty without pooling).
    unpooled: Vec<f32>,
}

impl Scratch {
    fn new(op: &ConvOp) -> Scratch {
        let [ic, _, _] = op.input;
        let [kh, kw] = op.kernel;
        let [oc, oh, ow] = op.out;
        let [ph, pw] = op.padded();
        Scratch {
            padded: vec![0f32; ic * ph * pw],
            patches: vec![0f32; oh * ow * ic * kh * kw],
            acc: vec![0f32; oh * ow * oc],
            unpooled: vec![0f32; if op.pool.is_some() { oc * oh * ow } else { 0 }],
        }
    }
}

impl PartialEq for ConvOp {
    /// Same layer only when it shares the weights (they are the model's).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
    }
}

impl Eq for ConvOp {}

impl ConvOp {
    /// The zero-padded image's height and width: every window falls inside it.
    fn padded(&self) -> [usize; 2] {
        let [_, h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [_, oh, ow] = self.out;
        [(self.pads[0] + h).max((oh - 1) * self.strides[0] + kh), (self.pads[1] + w).max((ow - 1) * self.strides[1] + kw)]
    }

    /// The output's `[channels, height, width]`, after pooling.
    fn output_dims(&self) -> [usize; 3] {
        let [oc, oh, ow] = self.out;
        match self.pool.and_then(|p| p.out([oh, ow])) {
            Some([ph, pw]) => [oc, ph, pw],
            None => self.out,
        }
    }

    /// One image `x` (`[ic, h, w]`) into `out` ([`ConvOp::output_dims`]). Scratch: `padded` holds the
    /// zero-padded image (its border stays zero from one image to the next), `patches` its
    /// `oh · ow` windows of `ic · kh · kw` values, `acc` their `oh · ow · oc` outputs.
    fn image(&self, x: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        let [ic, h, w] = self.input;
        let [ph, pw] = self.padded();
        for c in 0..ic {
            for y in 0..h {
                let start = (c * ph + y + self.pads[0]) * pw + self.pads[1];
                scratch.padded[start..start + w].copy_from_slice(&x[(c * h + y) * w..][..w]);
            }
        }
        // Windows as rows; the widths convolutions use get a copy of constant length.
        match self.kernel[1] {
            1 => self.windows::<1>(scratch),
            2 => self.windows::<2>(scratch),
            3 => self.windows::<3>(scratch),
            5 => self.windows::<5>(scratch),
            _ => self.windows::<0>(scratch),
        }
        let [oc, oh, ow] = self.out;
        let pixels = oh * ow;
        self.layer.forward(&scratch.patches, pixels, &mut scratch.acc);
        let planes = match self.pool {
            Some(_) => &mut scratch.unpooled[..],
            None => &mut *out,
        };
        // [pixels, oc] -> [oc, pixels]
        for (o, plane) in planes.chunks_exact_mut(pixels.max(1)).take(oc).enumerate() {
            for (dst, &v) in plane.iter_mut().zip(scratch.acc.iter().skip(o).step_by(oc)) {
                *dst = v;
            }
        }
        if let Some(pool) = self.pool {
            let [_, ph, pw] = self.output_dims();
            for (plane, o) in scratch.unpooled.chunks_exact(pixels.max(1)).zip(out.chunks_exact_mut((ph * pw).max(1))) {
                pool.pool(plane, [oh, ow], o, [ph, pw]);
            }
        }
    }

    /// Copies every window of the padded image into a row of `patches`; `KW` is the kernel's
    /// width when it is known at compile time (a short copy inlined, rather than a call to
    /// `memcpy` for three values), 0 otherwise.
    #[inline(always)]
    fn windows<const KW: usize>(&self, scratch: &mut Scratch) {
        let [ic, _, _] = self.input;
        let [kh, kw] = self.kernel;
        let [_, oh, ow] = self.out;
        let [ph, pw] = self.padded();
        let mut rows = scratch.patches.chunks_exact_mut((ic * kh * kw).max(1));
        for oy in 0..oh {
            for ox in 0..ow {
                let Some(patch) = rows.next() else { unreachable!("one patch per output pixel") };
                let (y0, x0) = (oy * self.strides[0], ox * self.strides[1]);
                let mut runs = patch.chunks_exact_mut(kw.max(1));
                for c in 0..ic {
                    for ky in 0..kh {
                        let start = (c * ph + y0 + ky) * pw + x0;
                        let (Some(run), Some(src)) = (runs.next(), scratch.padded.get(start..start + kw)) else {
                            unreachable!("windows fit the padded image")
                        };
                        if KW == 0 {
                            run.copy_from_slice(src);
                        } else {
                            run[..KW].copy_from_slice(&src[..KW]);
                        }
                    }
                }
            }
        }
    }

    /// This convolution with the `Relu` and then the `MaxPool` that read it folded in.
    fn fused(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        let output = OutletId::new(node.id, 0);
        if model.outputs.contains(&output) || self.pool.is_some() {
            return Ok(None);
        }
        let Some(succ) = model.single_succ(node.id)? else {
            return Ok(None);
        };
        let fused = if succ.op_is::<RowRelu>() && self.layer.activation() == Activation::Identity {
            let layer = (*self.layer).clone().with_activation(Activation::Relu);
            ConvOp { layer: Arc::new(layer), ..self.clone() }
        } else if let Some(pool) = succ.op_as::<MaxPool>().and_then(MaxPool2d::of) {
            let [_, oh, ow] = self.out;
            if pool.out([oh, ow]).is_none() {
                return Ok(None);
            }
            ConvOp { pool: Some(pool), ..self.clone() }
        } else {
            return Ok(None);
        };
        Ok(Some(TypedModelPatch::fuse_with_next(model, node, fused)?))
    }
}

op_named!(ConvOp, "DirectConv");

impl EvalOp for ConvOp {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let [ic, h, w] = self.input;
        if x.rank() != 4 || x.shape()[1..] != [ic, h, w] {
            bail!("Conv expects [N, {ic}, {h}, {w}], got {:?}", x.shape());
        }
        let n = x.shape()[0];
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let [pc, ph, pw] = self.output_dims();
        let mut out = Tensor::zero::<f32>(&[n, pc, ph, pw])?;
        let mut scratch = Scratch::new(self);
        let mut view = out.try_as_plain_ram_mut()?;
        for (image, o) in values.chunks_exact((ic * h * w).max(1)).zip(view.as_slice_mut::<f32>()?.chunks_exact_mut((pc * ph * pw).max(1)))
        {
            self.image(image, o, &mut scratch);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for ConvOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [oc, oh, ow] = self.output_dims();
        Ok(tvec!(f32::fact([inputs[0].shape[0].clone(), oc.to_dim(), oh.to_dim(), ow.to_dim()])))
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
    fn matches_a_plain_convolution_with_pads_and_strides() {
        for (oc, stride, pad) in [(3, 1, 1), (10, 2, 0), (16, 2, 1), (1, 1, 0)] {
            let (ic, h, wd, k) = (2, 5, 6, 3);
            let w: Vec<f32> = (0..oc * ic * k * k).map(|i| (i % 5) as f32 - 2.0).collect();
            let x: Vec<f32> = (0..ic * h * wd).map(|i| (i % 7) as f32 * 0.5).collect();
            let bias: Vec<f32> = (0..oc).map(|o| o as f32).collect();
            let oh = out_size(h as i64, k as i64, pad, pad, stride) as usize;
            let ow = out_size(wd as i64, k as i64, pad, pad, stride) as usize;
            let mut taps = vec![0f32; w.len()];
            for o in 0..oc {
                for t in 0..ic * k * k {
                    taps[t * oc + o] = w[o * ic * k * k + t];
                }
            }
            let op = ConvOp {
                layer: Arc::new(Layer::new(&taps, &bias, oc)),
                input: [ic, h, wd],
                kernel: [k, k],
                out: [oc, oh, ow],
                strides: [stride, stride],
                pads: [pad, pad],
                pool: None,
            };
            let mut out = vec![0f32; oc * oh * ow];
            // Twice: the padded image's border must still be zero for the second one.
            let mut scratch = Scratch::new(&op);
            op.image(&x, &mut out, &mut scratch);
            op.image(&x, &mut out, &mut scratch);
            // A plain, obviously right convolution.
            for o in 0..oc {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut want = bias[o];
                        for c in 0..ic {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as i64 - pad as i64;
                                    let ix = (ox * stride + kx) as i64 - pad as i64;
                                    if (0..h as i64).contains(&iy) && (0..wd as i64).contains(&ix) {
                                        want += w[((o * ic + c) * k + ky) * k + kx] * x[(c * h + iy as usize) * wd + ix as usize];
                                    }
                                }
                            }
                        }
                        let got = out[(o * oh + oy) * ow + ox];
                        assert!((got - want).abs() < 1e-4, "oc {oc}, stride {stride}, pad {pad}");
                    }
                }
            }
            // The same with a 2×2 max pooling (stride 1 and 2) folded in.
            for pool_stride in [1, 2] {
                let pool = MaxPool2d { kernel: [2, 2], strides: [pool_stride, pool_stride] };
                let Some([ph, pw]) = pool.out([oh, ow]) else {
                    continue;
                };
                let pooled_op = ConvOp { pool: Some(pool), ..op.clone() };
                assert_eq!(pooled_op.output_dims(), [oc, ph, pw]);
                let mut pooled = vec![0f32; oc * ph * pw];
                pooled_op.image(&x, &mut pooled, &mut Scratch::new(&pooled_op));
                for o in 0..oc {
                    for py in 0..ph {
                        for px in 0..pw {
                            let (y, x) = (py * pool_stride, px * pool_stride);
                            let at = |dy: usize, dx: usize| out[(o * oh + y + dy) * ow + x + dx];
                            let want = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                            assert_eq!(pooled[(o * ph + py) * pw + px], want, "pool stride {pool_stride}");
                        }
                    }
                }
            }
        }
    }
}
