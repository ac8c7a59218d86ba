//! Linear models: `LinearClassifier` (LogisticRegression, LinearSVC), `LinearRegressor`
//! (LinearRegression, Ridge) and the `Normalizer` skl2onnx puts after a multinomial logistic
//! regression.
//!
//! tract implements these by expansion into generic tensor ops (a matrix product sized for big
//! matrices, then per-row softmax, argmax and label lookup), which was 7 to 10 times slower than
//! onnxruntime on tabular rows of 4 to 64 features. Here the scores are one pass of a dense
//! layer's kernel ([`Layer`]) over the rows. Semantics are onnxruntime's (`linearclassifier.cc`,
//! `linearregressor.cc`, `normalizer.cc`), including string labels.

use std::sync::Arc;

use super::trees::PostTransform;
use super::{matrix, Attrs, ClassLabels, Kernel, OutputSpec, Width};
use crate::onnx::layer::Layer;
use tract_onnx::tract_hir::internal::*;

/// Coefficients `[targets, features]` and intercepts `[targets]`, as a dense layer.
#[derive(Debug)]
struct Linear {
    layer: Layer,
}

impl Linear {
    fn new(coefficients: &[f32], intercepts: &[f32], targets: usize) -> Result<Linear, String> {
        if targets == 0 || coefficients.is_empty() || !coefficients.len().is_multiple_of(targets) {
            return Err(format!("{} coefficients do not make {targets} rows", coefficients.len()));
        }
        let intercepts = if intercepts.is_empty() {
            vec![0.0; targets]
        } else if intercepts.len() == targets {
            intercepts.to_vec()
        } else {
            return Err(format!("{} intercepts for {targets} targets", intercepts.len()));
        };
        let features = coefficients.len() / targets;
        let mut weights = vec![0f32; coefficients.len()];
        for t in 0..targets {
            for f in 0..features {
                weights[f * targets + t] = coefficients[t * features + f];
            }
        }
        Ok(Linear { layer: Layer::new(&weights, &intercepts, targets) })
    }

    fn targets(&self) -> usize {
        self.layer.outputs()
    }

    /// Scores `[rows, targets]` of `rows` rows of `features` values (the op has checked the
    /// rows' width against [`Linear::check_features`]).
    fn scores(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * self.targets()];
        self.layer.forward(x, rows, &mut out);
        out
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        if features == self.layer.inputs() {
            Ok(())
        } else {
            Err(format!("it has {} coefficients per target but rows have {features} values", self.layer.inputs()))
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
        return Err(format!("{} class labels for {targets} score columns", labels.len()));
    }
    let post_transform = match a.string("post_transform") {
        Some(s) => PostTransform::parse(&s)?,
        None => PostTransform::None,
    };
    Ok(Arc::new(Classifier { linear, labels, post_transform }))
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

    fn run(&self, x: &[f32], rows: usize, _stride: usize) -> TractResult<TVec<Tensor>> {
        let t = self.linear.targets();
        let mut scores = self.linear.scores(x, rows);
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
    Ok(Arc::new(Regressor { linear, post_transform }))
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

    fn run(&self, x: &[f32], rows: usize, _stride: usize) -> TractResult<TVec<Tensor>> {
        let t = self.linear.targets();
        // Written in place: tract would copy a `Vec` into a new tensor.
        let mut out = Tensor::zero::<f32>(&[rows, t])?;
        let mut view = out.try_as_plain_ram_mut()?;
        let scores = view.as_slice_mut::<f32>()?;
        self.linear.layer.forward(x, rows, scores);
        // As onnxruntime: a single target gets no post transform (only PROBIT, refused here).
        if t > 1 {
            self.post_transform.apply_rows(scores, t);
        }
        Ok(tvec!(out))
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
    Ok(Arc::new(Normalizer(match a.string("norm").as_deref().unwrap_or("MAX") {
        "MAX" => Norm::Max,
        "L1" => Norm::L1,
        "L2" => Norm::L2,
        other => return Err(format!("unknown norm `{other}`")),
    })))
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
