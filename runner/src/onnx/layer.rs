//! The arithmetic of every small dense layer (`MatMul`, `Gemm`, convolution patches, linear
//! models): `out = act(step(x) · W + bias)` for a batch of rows, with W constant.
//!
//! Why not tract's matrix product: it packs both operands into tiles on every run, which for
//! the few-dozen-wide layers of tabular models costs more than the arithmetic. Here W is packed
//! once, at load, into panels of `width` outputs (`[k][width]`, zero-padded); a block of rows
//! runs through a panel with one accumulator vector per row, each weight vector loaded once for
//! the whole block. On x86-64 the CPU is asked once which kernel to use: AVX-512, or AVX2 with
//! FMA (hand-written, so the accumulators stay in registers), else the portable one, which LLVM
//! vectorises for the build's target (SSE2, or NEON on ARM boards). The agent stays one binary
//! for every machine.

use std::fmt;

/// What is applied to each output before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Activation {
    Identity,
    /// `max(x, 0)`; NaN stays NaN, as in onnxruntime.
    Relu,
}

impl Activation {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
        }
    }
}

/// The instruction set the kernel was compiled for, picked once per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }
}

/// A dense layer `[k] → [m]` with its weights packed for the kernel.
#[derive(Clone, PartialEq)]
pub(crate) struct Layer {
    k: usize,
    m: usize,
    /// Outputs per panel: 16, 8 or 4, the smallest that holds `m` (so a one-output layer does
    /// not pay for 16 lanes).
    width: usize,
    /// `ceil(m / width)` panels of `[k][width]`, the outputs past `m` zero.
    panels: Vec<f32>,
    /// `ceil(m / width) · width` values, zero past `m`.
    bias: Vec<f32>,
    activation: Activation,
    /// Applied to the input rows, in order, before the product.
    input: Vec<InputStep>,
    isa: Isa,
}

/// An element-wise operation on the input rows, one constant per input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InputStep {
    /// `x - c` (and `x + c` as `x - (-c)`, the same value).
    Sub(Vec<f32>),
    /// `x * c`.
    Mul(Vec<f32>),
}

impl InputStep {
    fn constants(&self) -> &[f32] {
        match self {
            InputStep::Sub(c) | InputStep::Mul(c) => c,
        }
    }

    fn apply(&self, rows: &mut [f32], k: usize) {
        for row in rows.chunks_exact_mut(k.max(1)) {
            match self {
                InputStep::Sub(c) => row.iter_mut().zip(c).for_each(|(v, c)| *v -= c),
                InputStep::Mul(c) => row.iter_mut().zip(c).for_each(|(v, c)| *v *= c),
            }
        }
    }
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Layer({}→{}, {:?}, {} input steps, {:?})", self.k, self.m, self.activation, self.input.len(), self.isa)
    }
}

impl Layer {
    /// `weights` is W `[k, m]` row-major, `bias` has `m` values.
    pub(crate) fn new(weights: &[f32], bias: &[f32], m: usize) -> Layer {
        assert!(m > 0 && bias.len() == m && weights.len().is_multiple_of(m));
        let k = weights.len() / m;
        let width = match m {
            1..=4 => 4,
            5..=8 => 8,
            _ => 16,
        };
        let count = m.div_ceil(width);
        let mut panels = vec![0f32; count * k * width];
        for i in 0..k {
            for j in 0..m {
                let (p, t) = (j / width, j % width);
                panels[(p * k + i) * width + t] = weights[i * m + j];
            }
        }
        let mut padded = vec![0f32; count * width];
        padded[..m].copy_from_slice(bias);
        Layer { k, m, width, panels, bias: padded, activation: Activation::Identity, input: Vec::new(), isa: Isa::detect() }
    }

    pub(crate) fn with_activation(mut self, activation: Activation) -> Layer {
        self.activation = activation;
        self
    }

    /// The same layer with `delta` (`m` values) added to its bias.
    pub(crate) fn with_bias_added(mut self, delta: &[f32]) -> Layer {
        debug_assert_eq!(delta.len(), self.m);
        self.bias.iter_mut().zip(delta).for_each(|(b, d)| *b += d);
        self
    }

    /// The same layer applied to `step(x)` instead of `x`: a `Scaler` (`Sub` then `Mul`), the
    /// `Mul` and `Add` of a MinMaxScaler, PCA's centring (`Sub`), done on the fly as the rows
    /// enter the kernel. The same operations in the same order as the separate operators, so
    /// the results are the same to the bit; folding them into the weights instead would cancel
    /// catastrophically on features with large offsets.
    pub(crate) fn with_input_step_before(mut self, step: InputStep) -> Layer {
        debug_assert_eq!(step.constants().len(), self.k);
        self.input.insert(0, step);
        self
    }

    /// How many steps run on the input before the product.
    pub(crate) fn input_steps(&self) -> usize {
        self.input.len()
    }

    pub(crate) fn inputs(&self) -> usize {
        self.k
    }

    pub(crate) fn outputs(&self) -> usize {
        self.m
    }

    pub(crate) fn activation(&self) -> Activation {
        self.activation
    }

    /// `rows` rows of `k` values in `x` into `rows` rows of `m` values in `out`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        assert!(x.len() >= rows * self.k && out.len() >= rows * self.m);
        if self.input.is_empty() {
            return self.kernel(x, rows, out);
        }
        // A few hundred rows at a time through the input transform, so they are still in
        // cache when the kernel reads them.
        const CHUNK: usize = 256;
        let mut scratch = vec![0f32; CHUNK.min(rows) * self.k];
        for r0 in (0..rows).step_by(CHUNK) {
            let n = CHUNK.min(rows - r0);
            let chunk = &mut scratch[..n * self.k];
            chunk.copy_from_slice(&x[r0 * self.k..(r0 + n) * self.k]);
            for step in &self.input {
                step.apply(chunk, self.k);
            }
            self.kernel(&scratch[..n * self.k], n, &mut out[r0 * self.m..(r0 + n) * self.m]);
        }
    }

    fn kernel(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::detect` found AVX-512F, AVX2 and FMA on this CPU.
            #[allow(unsafe_code)]
            Isa::Avx512 => unsafe { x86::avx512(self, x, rows, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::detect` found AVX2 and FMA on this CPU.
            #[allow(unsafe_code)]
            Isa::Avx2Fma => unsafe { x86::avx2(self, x, rows, out) },
            Isa::Portable => match self.width {
                4 => portable::<4>(self, x, rows, out),
                8 => portable::<8>(self, x, rows, out),
                _ => portable::<16>(self, x, rows, out),
            },
        }
    }
}

/// Hand-written kernels: LLVM's auto-vectorisation of the portable kernel keeps the
/// accumulators on the stack; these keep them in registers.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::{run, Layer};

    /// 16 outputs are one 512-bit register; 8 rows of accumulators leave registers for the
    /// weights. Narrower panels take the AVX2 kernels.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn avx512(l: &Layer, x: &[f32], rows: usize, out: &mut [f32]) {
        match l.width {
            4 => avx2(l, x, rows, out),
            8 => avx2(l, x, rows, out),
            // SAFETY (each call): this function runs only where AVX-512F is present.
            _ => run::<16, 8>(
                l,
                x,
                rows,
                out,
                |x, k, p, b, o| unsafe { block_16_avx512(x, k, p, b, o) },
                |x, k, p, b, o| unsafe { block_16_avx512(x, k, p, b, o) },
            ),
        }
    }

    /// 16 outputs are two 256-bit registers: 4 rows take 8 of the 16.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2(l: &Layer, x: &[f32], rows: usize, out: &mut [f32]) {
        // SAFETY (each call): this function runs only where AVX2 and FMA are present.
        match l.width {
            4 => run::<4, 8>(
                l,
                x,
                rows,
                out,
                |x, k, p, b, o| unsafe { block_4_fma(x, k, p, b, o) },
                |x, k, p, b, o| unsafe { block_4_fma(x, k, p, b, o) },
            ),
            8 => run::<8, 8>(
                l,
                x,
                rows,
                out,
                |x, k, p, b, o| unsafe { block_8_avx2(x, k, p, b, o) },
                |x, k, p, b, o| unsafe { block_8_avx2(x, k, p, b, o) },
            ),
            _ => run::<16, 4>(
                l,
                x,
                rows,
                out,
                |x, k, p, b, o| unsafe { block_16_avx2(x, k, p, b, o) },
                |x, k, p, b, o| unsafe { block_16_avx2(x, k, p, b, o) },
            ),
        }
    }

    /// Checks what the kernels below read and write, once per block.
    #[inline(always)]
    fn check<const W: usize, const R: usize>(x: &[f32], k: usize, panel: &[f32]) {
        assert!(x.len() >= R * k && panel.len() >= k * W);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn block_16_avx512<const R: usize>(x: &[f32], k: usize, panel: &[f32], bias: &[f32; 16], out: &mut [[f32; 16]; R]) {
        check::<16, R>(x, k, panel);
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: `check` bounds every read: row r's value i at r·k + i < R·k, weights at
        // 16·i + 15 < 16·k.
        unsafe {
            let mut acc = [_mm512_loadu_ps(bias.as_ptr()); R];
            for i in 0..k {
                let w = _mm512_loadu_ps(wp.add(i * 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_set1_ps(*xp.add(r * k + i)), w, *acc);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm512_storeu_ps(o.as_mut_ptr(), acc);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_16_avx2<const R: usize>(x: &[f32], k: usize, panel: &[f32], bias: &[f32; 16], out: &mut [[f32; 16]; R]) {
        check::<16, R>(x, k, panel);
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: as in `block_16_avx512`.
        unsafe {
            let b = [_mm256_loadu_ps(bias.as_ptr()), _mm256_loadu_ps(bias.as_ptr().add(8))];
            let mut acc = [b; R];
            for i in 0..k {
                let w0 = _mm256_loadu_ps(wp.add(i * 16));
                let w1 = _mm256_loadu_ps(wp.add(i * 16 + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v = _mm256_set1_ps(*xp.add(r * k + i));
                    acc[0] = _mm256_fmadd_ps(v, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(v, w1, acc[1]);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), acc[1]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_8_avx2<const R: usize>(x: &[f32], k: usize, panel: &[f32], bias: &[f32; 8], out: &mut [[f32; 8]; R]) {
        check::<8, R>(x, k, panel);
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: as in `block_16_avx512`, with panels 8 wide.
        unsafe {
            let mut acc = [_mm256_loadu_ps(bias.as_ptr()); R];
            for i in 0..k {
                let w = _mm256_loadu_ps(wp.add(i * 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(*xp.add(r * k + i)), w, *acc);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), acc);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_4_fma<const R: usize>(x: &[f32], k: usize, panel: &[f32], bias: &[f32; 4], out: &mut [[f32; 4]; R]) {
        check::<4, R>(x, k, panel);
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        // SAFETY: as in `block_16_avx512`, with panels 4 wide.
        unsafe {
            let mut acc = [_mm_loadu_ps(bias.as_ptr()); R];
            for i in 0..k {
                let w = _mm_loadu_ps(wp.add(i * 4));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm_fmadd_ps(_mm_set1_ps(*xp.add(r * k + i)), w, *acc);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                _mm_storeu_ps(o.as_mut_ptr(), acc);
            }
        }
    }
}

/// The portable kernel: LLVM vectorises [`panel_block`] for whatever the build targets.
fn portable<const W: usize>(l: &Layer, x: &[f32], rows: usize, out: &mut [f32]) {
    run::<W, 4>(l, x, rows, out, |x, k, p, b, o| *o = panel_block::<W, 4>(x, k, p, b), |x, k, p, b, o| *o = panel_block::<W, 1>(x, k, p, b))
}

/// Blocks of `R` rows (then single rows), each through every panel of width `W` while its rows
/// are in L1. Inlined into each kernel's entry point, so it is compiled for its instructions.
#[inline(always)]
fn run<const W: usize, const R: usize>(
    l: &Layer,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    block: impl Fn(&[f32], usize, &[f32], &[f32; W], &mut [[f32; W]; R]),
    single: impl Fn(&[f32], usize, &[f32], &[f32; W], &mut [[f32; W]; 1]),
) {
    let (k, m) = (l.k, l.m);
    let panel_len = k * W;
    let mut acc = [[0f32; W]; R];
    let mut one = [[0f32; W]; 1];
    let mut r0 = 0;
    while r0 < rows {
        let height = if rows - r0 >= R { R } else { 1 };
        let xs = &x[r0 * k..(r0 + height) * k];
        for p in 0..l.bias.len() / W {
            let panel = &l.panels[p * panel_len..(p + 1) * panel_len];
            let Ok(bias) = <&[f32; W]>::try_from(&l.bias[p * W..(p + 1) * W]) else { unreachable!("the bias is padded to whole panels") };
            let j0 = p * W;
            let n = W.min(m - j0);
            if height == R {
                block(xs, k, panel, bias, &mut acc);
                store(&acc, out, r0, m, j0, n, l.activation);
            } else {
                single(xs, k, panel, bias, &mut one);
                store(&one, out, r0, m, j0, n, l.activation);
            }
        }
        r0 += height;
    }
}

/// `R` rows of `x` (each `k` values) through one panel: `R × W` accumulators, each weight
/// vector loaded once and broadcast-multiplied with every row's value.
#[inline(always)]
fn panel_block<const W: usize, const R: usize>(x: &[f32], k: usize, panel: &[f32], bias: &[f32; W]) -> [[f32; W]; R] {
    let mut acc = [*bias; R];
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    for (i, w) in panel.chunks_exact(W).enumerate() {
        let Ok(w) = <&[f32; W]>::try_from(w) else { unreachable!("chunks_exact gives whole panels rows") };
        for r in 0..R {
            let v = xs[r][i];
            for t in 0..W {
                acc[r][t] += v * w[t];
            }
        }
    }
    acc
}

#[inline(always)]
fn store<const W: usize, const R: usize>(
    acc: &[[f32; W]; R],
    out: &mut [f32],
    r0: usize,
    m: usize,
    j0: usize,
    n: usize,
    activation: Activation,
) {
    for (r, acc) in acc.iter().enumerate() {
        let row = &mut out[(r0 + r) * m + j0..(r0 + r) * m + j0 + n];
        if let Ok(row) = <&mut [f32; W]>::try_from(&mut *row) {
            for (o, &a) in row.iter_mut().zip(acc) {
                *o = activation.apply(a);
            }
        } else {
            // A partial panel: `W` predicated stores, unrolled. (A loop to `n` would become a
            // call to `memcpy` for each row, which cost a third of a linear regression's time.)
            for t in 0..W {
                if t < row.len() {
                    row[t] = activation.apply(acc[t]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(w: &[f32], bias: &[f32], x: &[f32], k: usize, m: usize) -> Vec<f32> {
        let rows = x.len() / k.max(1);
        let mut out = vec![0f32; rows * m];
        for r in 0..rows {
            for j in 0..m {
                out[r * m + j] = bias[j] + (0..k).map(|i| x[r * k + i] as f64 * w[i * m + j] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    fn check(layer: &Layer, want: &[f32], x: &[f32], rows: usize, what: &str) {
        let mut out = vec![f32::NAN; rows * layer.m];
        layer.forward(x, rows, &mut out);
        for (i, (o, w)) in out.iter().zip(want).enumerate() {
            assert!((o - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}: output {i}: {o} vs {w}");
        }
    }

    /// Every width, panel count and block remainder, on every kernel this CPU has.
    #[test]
    fn matches_a_plain_matrix_product_for_every_shape_and_instruction_set() {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2Fma);
            }
            if Isa::detect() == Isa::Avx512 {
                isas.push(Isa::Avx512);
            }
        }
        for k in [0, 1, 3, 9, 30] {
            for m in [1, 3, 4, 5, 8, 10, 16, 17, 35] {
                let w: Vec<f32> = (0..k * m).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
                let bias: Vec<f32> = (0..m).map(|j| j as f32 * 0.5 - 1.0).collect();
                for rows in [1, 4, 7, 8, 19] {
                    let x: Vec<f32> = (0..rows * k).map(|i| ((i * 3) % 13) as f32 * 0.25 - 1.5).collect();
                    let want = reference(&w, &bias, &x, k, m);
                    for &isa in &isas {
                        let layer = Layer { isa, ..Layer::new(&w, &bias, m) };
                        check(&layer, &want, &x, rows, &format!("{isa:?} k {k} m {m} rows {rows}"));
                        let relu = layer.clone().with_activation(Activation::Relu);
                        let want_relu: Vec<f32> = want.iter().map(|v| v.max(0.0)).collect();
                        check(&relu, &want_relu, &x, rows, &format!("relu {isa:?} k {k} m {m}"));
                    }
                }
            }
        }
    }

    #[test]
    fn the_input_transform_is_the_scalers_arithmetic() {
        let (k, m) = (3, 2);
        let w = [1f32, 2., 3., 4., 5., 6.];
        let bias = [0.5f32, -0.5];
        let (offset, scale) = (vec![1000f32, 2., -3.], vec![0.25f32, 1., 3.]);
        // 300 rows: more than one chunk of the transform.
        let x: Vec<f32> = (0..300 * k).map(|i| (i % 17) as f32 * 60.0).collect();
        let scaled: Vec<f32> = x.iter().enumerate().map(|(i, v)| (v - offset[i % k]) * scale[i % k]).collect();
        let want = reference(&w, &bias, &scaled, k, m);
        let layer = Layer::new(&w, &bias, m).with_input_step_before(InputStep::Mul(scale)).with_input_step_before(InputStep::Sub(offset));
        check(&layer, &want, &x, 300, "scaled");
    }

    #[test]
    fn relu_keeps_nan() {
        let layer = Layer::new(&[1.0], &[0.0], 1).with_activation(Activation::Relu);
        let mut out = [0f32; 2];
        layer.forward(&[f32::NAN, -1.0], 2, &mut out);
        assert!(out[0].is_nan());
        assert_eq!(out[1], 0.0);
    }
}
