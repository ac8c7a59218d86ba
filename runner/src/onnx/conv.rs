//! Small 2-D convolutions (`Conv`, NCHW, one group, no dilation, constant weights), computed
//! directly: each output pixel gathers its input patch and goes through the patch-by-channels
//! weight matrix as one small dense layer (`Dense`).
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

use super::dense::Dense;
use super::ml_ops::{is_float_initializer, op_named, rules_with_weights, stock_op};

/// Above this many weights, tract's im2col and matrix kernels win.
const MAX_WEIGHTS: usize = 64 * 64 * 9;

/// Replaces tract-onnx's `Conv` builder.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Conv", conv);
}

fn conv(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |n: &str| node.attribute.iter().find(|a| a.name == n);
    let ints = |n: &str| attr(n).map(|a| a.ints.clone()).unwrap_or_default();
    let auto_pad = attr("auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned());
    let group = attr("group").map_or(1, |a| a.i);
    let dilations = ints("dilations");
    let strides = ints("strides");
    let pads = ints("pads");
    let weights = ctx.model.graph.as_ref().and_then(|g| {
        g.initializer
            .iter()
            .find(|t| Some(&t.name) == node.input.get(1))
    });
    let bias_ok = match node.input.get(2).filter(|b| !b.is_empty()) {
        None => true,
        Some(b) => is_float_initializer(ctx, b),
    };
    let fits = group == 1
        && dilations.iter().all(|&d| d == 1)
        && matches!(
            auto_pad.as_deref(),
            None | Some("NOTSET") | Some("VALID") | Some("")
        )
        && (strides.is_empty() || (strides.len() == 2 && strides.iter().all(|&s| s >= 1)))
        && (pads.is_empty() || (pads.len() == 4 && pads.iter().all(|&p| p >= 0)))
        && bias_ok
        && weights.is_some_and(|w| {
            w.data_type == DataType::Float as i32
                && w.dims.len() == 4
                && w.dims.iter().product::<i64>() as usize <= MAX_WEIGHTS
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
    Ok((
        expand(DirectConv {
            strides: [stride(0), stride(1)],
            pads: [pad(0), pad(1), pad(2), pad(3)],
        }),
        vec![],
    ))
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

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        rules_with_weights(s, inputs, outputs, "Conv", 4)?;
        s.equals(&outputs[0].shape[1], &inputs[1].shape[0])?;
        for axis in 0..2 {
            let (begin, end, stride) = (self.pads[axis], self.pads[axis + 2], self.strides[axis]);
            s.given_2(
                &inputs[0].shape[2 + axis],
                &inputs[1].shape[2 + axis],
                move |s, input, kernel| {
                    if let (Ok(i), Ok(k)) = (input.to_i64(), kernel.to_i64()) {
                        s.equals(
                            &outputs[0].shape[2 + axis],
                            out_size(i, k, begin, end, stride).to_dim(),
                        )?;
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let x = model.outlet_fact(inputs[0])?.clone();
        let w = model
            .outlet_fact(inputs[1])?
            .konst
            .clone()
            .ok_or_else(|| anyhow!("Conv's weights are not a constant"))?;
        let dims: Vec<usize> = x
            .shape
            .iter()
            .skip(1)
            .filter_map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
            .collect();
        if x.datum_type != f32::datum_type()
            || w.datum_type() != f32::datum_type()
            || dims.len() != 3
        {
            bail!("Conv: only f32 [N, C, H, W] inputs are supported here");
        }
        let &[oc, ic, kh, kw] = w.shape() else {
            bail!("Conv's weights are {:?}, not [out, in, kh, kw]", w.shape());
        };
        let [c, h, wd] = [dims[0], dims[1], dims[2]];
        if c != ic {
            bail!("Conv's weights take {ic} channels, the input has {c}");
        }
        let oh = out_size(
            h as i64,
            kh as i64,
            self.pads[0],
            self.pads[2],
            self.strides[0],
        );
        let ow = out_size(
            wd as i64,
            kw as i64,
            self.pads[1],
            self.pads[3],
            self.strides[1],
        );
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
            let b = model
                .outlet_fact(b)?
                .konst
                .clone()
                .ok_or_else(|| anyhow!("Conv's bias is not a constant"))?;
            let plain = b.try_as_plain_ram()?;
            let values = plain.as_slice::<f32>()?;
            if values.len() != oc {
                bail!("Conv's bias has {} values for {oc} outputs", values.len());
            }
            bias.copy_from_slice(values);
        }
        let op = ConvOp {
            layer: Arc::new(Dense::new(taps, bias, oc)),
            input: [ic, h, wd],
            kernel: [kh, kw],
            out: [oc, oh as usize, ow as usize],
            strides: self.strides,
            pads: [self.pads[0], self.pads[1]],
        };
        model.wire_node(prefix, op, &[inputs[0]])
    }
}

#[derive(Debug, Clone)]
struct ConvOp {
    /// Weights `[ic · kh · kw, oc]` and bias: a dense layer from a patch to the outputs.
    layer: Arc<Dense>,
    /// Channels, height, width.
    input: [usize; 3],
    kernel: [usize; 2],
    /// Channels, height, width.
    out: [usize; 3],
    strides: [usize; 2],
    /// Top, left.
    pads: [usize; 2],
}

impl PartialEq for ConvOp {
    /// Same layer only when it shares the weights (they are the model's).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
    }
}

impl Eq for ConvOp {}

impl ConvOp {
    /// One image `x` (`[ic, h, w]`) into `out` (`[oc, oh, ow]`); `patch` and `acc` are
    /// scratch of `ic · kh · kw` and `oc` values.
    fn image(&self, x: &[f32], out: &mut [f32], patch: &mut [f32], acc: &mut [f32]) {
        let [ic, h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [_, oh, ow] = self.out;
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, x0) = (oy * self.strides[0], ox * self.strides[1]);
                let inside = y0 >= self.pads[0]
                    && y0 + kh <= h + self.pads[0]
                    && x0 >= self.pads[1]
                    && x0 + kw <= w + self.pads[1];
                if inside {
                    // The whole window is in the image: copy it row by row.
                    let (iy, ix) = (y0 - self.pads[0], x0 - self.pads[1]);
                    for (c, taps) in patch.chunks_exact_mut(kh * kw).enumerate() {
                        for (ky, run) in taps.chunks_exact_mut(kw).enumerate() {
                            let start = (c * h + iy + ky) * w + ix;
                            run.copy_from_slice(&x[start..start + kw]);
                        }
                    }
                } else {
                    let mut t = 0;
                    for c in 0..ic {
                        for ky in 0..kh {
                            let iy = (y0 + ky).checked_sub(self.pads[0]).filter(|&iy| iy < h);
                            for kx in 0..kw {
                                let ix = (x0 + kx).checked_sub(self.pads[1]).filter(|&ix| ix < w);
                                patch[t] = match (iy, ix) {
                                    (Some(iy), Some(ix)) => x[(c * h + iy) * w + ix],
                                    _ => 0.0, // padding
                                };
                                t += 1;
                            }
                        }
                    }
                }
                self.layer.row(patch, acc);
                for (o, a) in acc.iter().enumerate() {
                    out[(o * oh + oy) * ow + ox] = *a;
                }
            }
        }
    }
}

op_named!(ConvOp, "DirectConv");

impl EvalOp for ConvOp {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let [ic, h, w] = self.input;
        let [kh, kw] = self.kernel;
        let [oc, oh, ow] = self.out;
        if x.rank() != 4 || x.shape()[1..] != [ic, h, w] {
            bail!("Conv expects [N, {ic}, {h}, {w}], got {:?}", x.shape());
        }
        let n = x.shape()[0];
        let plain = x.try_as_plain_ram()?;
        let values = plain.as_slice::<f32>()?;
        let mut out = vec![0f32; n * oc * oh * ow];
        let mut acc = vec![0f32; oc];
        let mut patch = vec![0f32; ic * kh * kw];
        for (image, o) in values
            .chunks_exact((ic * h * w).max(1))
            .zip(out.chunks_exact_mut((oc * oh * ow).max(1)))
        {
            self.image(image, o, &mut patch, &mut acc);
        }
        Ok(tvec!(
            Tensor::from_shape(&[n, oc, oh, ow], &out)?.into_tvalue()
        ))
    }
}

impl TypedOp for ConvOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [oc, oh, ow] = self.out;
        Ok(tvec!(f32::fact([
            inputs[0].shape[0].clone(),
            oc.to_dim(),
            oh.to_dim(),
            ow.to_dim()
        ])))
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
                layer: Arc::new(Dense::new(taps, bias.clone(), oc)),
                input: [ic, h, wd],
                kernel: [k, k],
                out: [oc, oh, ow],
                strides: [stride, stride],
                pads: [pad, pad],
            };
            let mut out = vec![0f32; oc * oh * ow];
            op.image(
                &x,
                &mut out,
                &mut vec![0f32; ic * k * k],
                &mut vec![0f32; oc],
            );
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
                                        want += w[((o * ic + c) * k + ky) * k + kx]
                                            * x[(c * h + iy as usize) * wd + ix as usize];
                                    }
                                }
                            }
                        }
                        let got = out[(o * oh + oy) * ow + ox];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "oc {oc}, stride {stride}, pad {pad}"
                        );
                    }
                }
            }
        }
    }
}
