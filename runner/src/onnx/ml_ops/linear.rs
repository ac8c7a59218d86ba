//! Linear models: `LinearClassifier` (LogisticRegression, LinearSVC), `LinearRegressor`
//! (LinearRegression, Ridge) and the `Normalizer` skl2onnx puts after a multinomial logistic
//! regression.
//!
//! tract implements these by expansion into generic tensor ops (a matrix product sized for big
//! matrices, then per-row softmax, argmax and label lookup), which was 7 to 10 times slower than
//! onnxruntime on tabular rows of 4 to 64 features. Here each is one pass over the rows with
//! dot products the compiler vectorises. Semantics are onnxruntime's (`linearclassifier.cc`,
//! `linearregressor.cc`, `normalizer.cc`), including string labels.

use std::sync::Arc;

use super::trees::PostTransform;
use super::{matrix, Attrs, ClassLabels, Kernel, OutputSpec, Width};
use tract_onnx::tract_hir::internal::*;

/// `x · w`, with four partial sums (one SSE register) so the loop vectorises; the order of the
/// additions differs from a sequential sum in the last bits, as any BLAS's does.
#[inline]
pub(crate) fn dot(x: &[f32], w: &[f32]) -> f32 {
    let n = x.len().min(w.len());
    let (x, w) = (&x[..n], &w[..n]);
    let split = n - n % 4;
    let mut acc = [0f32; 4];
    for (a, b) in x[..split].chunks_exact(4).zip(w[..split].chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += a[k] * b[k];
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (a, b) in x[split..].iter().zip(&w[split..]) {
        sum += a * b;
    }
    sum
}

/// Coefficients `[targets, features]` and intercepts `[targets]`.
#[derive(Debug)]
struct Linear {
    coefficients: Vec<f32>,
    /// The coefficients transposed, `[features, targets]`: with several targets, a row's scores
    /// are built feature by feature, a vectorised update of all targets at once.
    transposed: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
}

impl Linear {
    fn new(coefficients: &[f32], intercepts: &[f32], targets: usize) -> Result<Linear, String> {
        if targets == 0 || coefficients.is_empty() || coefficients.len() % targets != 0 {
            return Err(format!(
                "{} coefficients do not make {targets} rows",
                coefficients.len()
            ));
        }
        let intercepts = if intercepts.is_empty() {
            vec![0.0; targets]
        } else if intercepts.len() == targets {
            intercepts.to_vec()
        } else {
            return Err(format!(
                "{} intercepts for {targets} targets",
                intercepts.len()
            ));
        };
        let features = coefficients.len() / targets;
        let mut transposed = vec![0f32; coefficients.len()];
        for t in 0..targets {
            for f in 0..features {
                transposed[f * targets + t] = coefficients[t * features + f];
            }
        }
        Ok(Linear {
            coefficients: coefficients.to_vec(),
            transposed,
            intercepts,
            features,
        })
    }

    fn targets(&self) -> usize {
        self.intercepts.len()
    }

    /// Scores `[rows, targets]`.
    fn scores(&self, x: &[f32], rows: usize, stride: usize) -> Vec<f32> {
        let t = self.targets();
        if t < 4 {
            let mut out = Vec::with_capacity(rows * t);
            for row in x.chunks_exact(stride).take(rows) {
                let row = &row[..self.features];
                for (w, b) in self
                    .coefficients
                    .chunks_exact(self.features)
                    .zip(&self.intercepts)
                {
                    out.push(dot(row, w) + b);
                }
            }
            return out;
        }
        let mut out = vec![0f32; rows * t];
        for (row, scores) in x.chunks_exact(stride).zip(out.chunks_exact_mut(t)) {
            scores.copy_from_slice(&self.intercepts);
            for (&v, w) in row[..self.features]
                .iter()
                .zip(self.transposed.chunks_exact(t))
            {
                scores.iter_mut().zip(w).for_each(|(s, w)| *s += v * w);
            }
        }
        out
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        if features == self.features {
            Ok(())
        } else {
            Err(format!(
                "it has {} coefficients per target but rows have {features} values",
                self.features
            ))
        }
    }
}

#[derive(Debug)]
struct Classifier {
    linear: Linear,
    labels: ClassLabels,
    post_transform: PostTransform,
}

pub(super) fn classifier(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    let labels = ClassLabels::of(a, "classlabels_ints", "classlabels_strings")?;
    let intercepts = a.floats("intercepts");
    let targets = intercepts.len();
    let linear = Linear::new(a.floats("coefficients"), intercepts, targets)?;
    if targets > 1 && labels.len() != targets {
        return Err(format!(
            "{} class labels for {targets} score columns",
            labels.len()
        ));
    }
    let post_transform = match a.string("post_transform") {
        Some(s) => PostTransform::parse(&s)?,
        None => PostTransform::None,
    };
    Ok(Arc::new(Classifier {
        linear,
        labels,
        post_transform,
    }))
}

impl Classifier {
    /// One score column and two classes: onnxruntime writes `[1 - s, s]`.
    fn second_class(&self) -> bool {
        self.linear.targets() == 1 && self.labels.len() == 2
    }

    fn width(&self) -> usize {
        if self.second_class() {
            2
        } else {
            self.linear.targets()
        }
    }
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "LinearClassifier"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.labels.outputs(self.width())
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        self.linear.check_features(features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let t = self.linear.targets();
        let mut scores = self.linear.scores(x, rows, stride);
        let labels: Vec<usize> = if t == 1 {
            // Index 1 ("positive") above zero; with other than two labels, onnxruntime writes
            // 1 or 0 whatever the labels, which index 1 and 0 give too.
            scores.iter().map(|&s| usize::from(s > 0.0)).collect()
        } else {
            scores
                .chunks_exact(t)
                .map(|row| {
                    let mut best = 0;
                    for (k, &s) in row.iter().enumerate() {
                        if s > row[best] {
                            best = k;
                        }
                    }
                    best
                })
                .collect()
        };
        if self.second_class() {
            scores = scores.iter().flat_map(|&s| [1.0 - s, s]).collect();
        } else if t > 1 {
            self.post_transform.apply_rows(&mut scores, t);
        }
        let labels = if t == 1 && self.labels.len() != 2 {
            match self.labels {
                ClassLabels::Ints(_) => ClassLabels::Ints(vec![0, 1]),
                ClassLabels::Strings(_) => ClassLabels::Strings(vec!["0".into(), "1".into()]),
            }
            .tensor(&labels)?
        } else {
            self.labels.tensor(&labels)?
        };
        Ok(tvec!(labels, matrix(scores, rows, self.width())?))
    }
}

#[derive(Debug)]
struct Regressor {
    linear: Linear,
    post_transform: PostTransform,
}

pub(super) fn regressor(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    let targets = a.int("targets").unwrap_or(1);
    let targets = usize::try_from(targets).map_err(|_| format!("`targets` is {targets}"))?;
    let linear = Linear::new(a.floats("coefficients"), a.floats("intercepts"), targets)?;
    let post_transform = match a.string("post_transform") {
        Some(s) => PostTransform::parse(&s)?,
        None => PostTransform::None,
    };
    Ok(Arc::new(Regressor {
        linear,
        post_transform,
    }))
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "LinearRegressor"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::f32(Width::Fixed(self.linear.targets()))]
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        self.linear.check_features(features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let t = self.linear.targets();
        let mut scores = self.linear.scores(x, rows, stride);
        // As onnxruntime: a single target gets no post transform (only PROBIT, refused here).
        if t > 1 {
            self.post_transform.apply_rows(&mut scores, t);
        }
        Ok(tvec!(matrix(scores, rows, t)?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug)]
struct Normalizer(Norm);

pub(super) fn normalizer(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    Ok(Arc::new(Normalizer(
        match a.string("norm").as_deref().unwrap_or("MAX") {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => return Err(format!("unknown norm `{other}`")),
        },
    )))
}

impl Kernel for Normalizer {
    fn name(&self) -> &'static str {
        "Normalizer"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::f32(Width::SameAsInput)]
    }

    fn check_features(&self, _: usize) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let mut out = x[..rows * stride].to_vec();
        for row in out.chunks_exact_mut(stride.max(1)) {
            let d = match self.0 {
                Norm::Max => row.iter().copied().fold(f32::MIN, f32::max),
                Norm::L1 => row.iter().map(|v| v.abs()).sum(),
                Norm::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
            };
            // onnxruntime leaves an all-zero row as it is.
            if d != 0.0 {
                row.iter_mut().for_each(|v| *v /= d);
            }
        }
        Ok(tvec!(matrix(out, rows, stride)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::values;
    use super::*;

    #[test]
    fn dot_handles_every_length() {
        for n in 0..20 {
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let w: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
            let expected: f32 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
            assert_eq!(dot(&x, &w), expected, "{n}");
        }
    }

    #[test]
    fn binary_with_one_score_column_gives_two_columns() {
        let k = Classifier {
            linear: Linear::new(&[1.0, -1.0], &[0.0], 1).unwrap(),
            labels: ClassLabels::Strings(vec!["no".into(), "yes".into()]),
            post_transform: PostTransform::None,
        };
        let out = k.run(&[2.0, 1.0, 0.0, 3.0], 2, 2).unwrap();
        assert_eq!(values::<String>(&out[0]), ["yes", "no"]);
        assert_eq!(values::<f32>(&out[1]), [0.0, 1.0, 4.0, -3.0]);
    }

    #[test]
    fn normalizer_l1_l2_max() {
        let run = |n| {
            let out = Normalizer(n).run(&[1.0, 3.0, 0.0, 0.0], 2, 2).unwrap();
            values::<f32>(&out[0])
        };
        assert_eq!(run(Norm::L1), [0.25, 0.75, 0.0, 0.0]);
        assert_eq!(run(Norm::Max), [1.0 / 3.0, 1.0, 0.0, 0.0]);
        let l2 = run(Norm::L2);
        assert!((l2[0] - 1.0 / 10f32.sqrt()).abs() < 1e-6, "{l2:?}");
    }
}
