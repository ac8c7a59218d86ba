//! Support vector machines: `SVMClassifier` (scikit-learn's SVC, one-vs-one, with Platt
//! probabilities when trained with `probability=True`) and `SVMRegressor` (SVR).
//!
//! Semantics are onnxruntime's (`svmclassifier.cc`, `ml_common.h`): kernels in f32, each
//! pairwise decision summed in f64, labels by vote, probabilities by libsvm's pairwise coupling
//! (`multiclass_probability`).

use std::sync::Arc;

use super::trees::PostTransform;
use super::{matrix, Attrs, ClassLabels, Kernel, OutputSpec, Width};
use tract_onnx::tract_hir::internal::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum KernelType {
    Linear,
    Poly { gamma: f32, coef0: f32, degree: f32 },
    Rbf { gamma: f32 },
    Sigmoid { gamma: f32, coef0: f32 },
}

impl KernelType {
    fn parse(a: &Attrs) -> Result<KernelType, String> {
        let params = a.floats("kernel_params");
        let (gamma, coef0, degree) = match params {
            [] => (0.0, 0.0, 0.0),
            [g, c, d, ..] => (*g, *c, *d),
            _ => return Err("`kernel_params` needs gamma, coef0 and degree".into()),
        };
        Ok(match a.string("kernel_type").as_deref().unwrap_or("LINEAR") {
            "LINEAR" => KernelType::Linear,
            "POLY" => KernelType::Poly { gamma, coef0, degree },
            "RBF" => KernelType::Rbf { gamma },
            "SIGMOID" => KernelType::Sigmoid { gamma, coef0 },
            other => return Err(format!("unknown kernel type `{other}`")),
        })
    }

    /// `k(x, v)`, computed as onnxruntime does (a dot product plus `bias` for LINEAR).
    fn eval(self, x: &[f32], v: &[f32], bias: f32) -> f32 {
        let dot = || x.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        match self {
            KernelType::Linear => dot() + bias,
            KernelType::Poly { gamma, coef0, degree } => {
                let base = gamma * dot() + coef0;
                if degree == 2.0 {
                    base * base
                } else if degree == 3.0 {
                    base * base * base
                } else {
                    base.powf(degree)
                }
            }
            KernelType::Rbf { gamma } => {
                let d: f32 = x.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
                (-gamma * d).exp()
            }
            KernelType::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }
}

#[derive(Debug)]
struct Classifier {
    labels: ClassLabels,
    kernel: KernelType,
    features: usize,
    /// Support vectors, `[vectors, features]`; empty in linear (liblinear) mode.
    support_vectors: Vec<f32>,
    /// First support vector of each class, and how many.
    starts: Vec<usize>,
    counts: Vec<usize>,
    /// SVC: `[classes - 1, vectors]`; linear: `[classes, features]`.
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    post_transform: PostTransform,
    weights_all_positive: bool,
}

pub(super) fn classifier(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    let labels = ClassLabels::of(a, "classlabels_ints", "classlabels_strings")?;
    let classes = labels.len();
    if classes < 2 {
        return Err("a classifier needs at least two classes".into());
    }
    let counts: Vec<usize> = a
        .ints("vectors_per_class")
        .iter()
        .map(|&c| usize::try_from(c).map_err(|_| format!("`vectors_per_class` holds {c}")))
        .collect::<Result<_, _>>()?;
    let vectors: usize = counts.iter().sum();
    let support_vectors = a.floats("support_vectors").to_vec();
    let coefficients = a.floats("coefficients").to_vec();
    let rho = a.floats("rho").to_vec();
    let (prob_a, prob_b) = (a.floats("prob_a").to_vec(), a.floats("prob_b").to_vec());
    if prob_a.len() != prob_b.len() {
        return Err("`prob_a` and `prob_b` differ in length".into());
    }
    if coefficients.is_empty() || rho.is_empty() {
        return Err("`coefficients` and `rho` must be set".into());
    }
    let pairs = classes * (classes - 1) / 2;
    let mut kernel = KernelType::parse(a)?;
    let features;
    if vectors > 0 {
        if counts.len() != classes {
            return Err(format!("`vectors_per_class` has {} values for {classes} classes", counts.len()));
        }
        if support_vectors.is_empty() || !support_vectors.len().is_multiple_of(vectors) {
            return Err("`support_vectors` does not hold whole vectors".into());
        }
        features = support_vectors.len() / vectors;
        if coefficients.len() != (classes - 1) * vectors {
            return Err("`coefficients` does not match the support vectors".into());
        }
        if rho.len() < pairs || (!prob_a.is_empty() && prob_a.len() < pairs) {
            return Err("`rho`/`prob_a`/`prob_b` need one value per pair of classes".into());
        }
    } else {
        // liblinear mode: one coefficient row per class, a linear kernel.
        kernel = KernelType::Linear;
        if !coefficients.len().is_multiple_of(classes) {
            return Err("`coefficients` is not one row per class".into());
        }
        features = coefficients.len() / classes;
    }
    let mut starts = Vec::with_capacity(counts.len());
    let mut at = 0;
    for c in &counts {
        starts.push(at);
        at += c;
    }
    let post_transform = match a.string("post_transform") {
        Some(s) => PostTransform::parse(&s)?,
        None => PostTransform::None,
    };
    let weights_all_positive = coefficients.iter().all(|&c| c >= 0.0);
    Ok(Arc::new(Classifier {
        labels,
        kernel,
        features,
        support_vectors,
        starts,
        counts,
        coefficients,
        rho,
        prob_a,
        prob_b,
        post_transform,
        weights_all_positive,
    }))
}

impl Classifier {
    fn svc(&self) -> bool {
        !self.support_vectors.is_empty()
    }

    /// Scores per row: class probabilities (with prob_a/prob_b), pairwise decisions (SVC
    /// without), or per-class scores (linear mode).
    fn width(&self) -> usize {
        let classes = self.labels.len();
        if self.svc() && self.prob_a.is_empty() {
            if classes > 2 {
                classes * (classes - 1) / 2
            } else {
                2
            }
        } else {
            classes
        }
    }

    /// One row: writes its scores to `out`, returns the winning class's index.
    fn row(&self, x: &[f32], kernels: &mut Vec<f32>, out: &mut [f32]) -> usize {
        let classes = self.labels.len();
        if !self.svc() {
            for (c, o) in out.iter_mut().enumerate() {
                let w = &self.coefficients[c * self.features..(c + 1) * self.features];
                *o = KernelType::Linear.eval(x, w, self.rho[0]);
            }
            let (best, max) = argmax(out);
            let label = if classes == 2 {
                if (self.weights_all_positive && max >= 0.5) || (max > 0.0 && !self.weights_all_positive) {
                    1
                } else {
                    best
                }
            } else {
                best
            };
            self.post_transform.apply(out);
            return label;
        }

        kernels.clear();
        kernels.extend(self.support_vectors.chunks_exact(self.features).map(|v| self.kernel.eval(x, v, 0.0)));
        let vectors = kernels.len();
        let mut votes = vec![0u32; classes];
        let mut decisions = Vec::with_capacity(classes * (classes - 1) / 2);
        for i in 0..classes - 1 {
            for j in i + 1..classes {
                let mut sum = 0f64;
                let ci = &self.coefficients[(j - 1) * vectors + self.starts[i]..][..self.counts[i]];
                for (c, k) in ci.iter().zip(&kernels[self.starts[i]..]) {
                    sum += f64::from(c * k);
                }
                let cj = &self.coefficients[i * vectors + self.starts[j]..][..self.counts[j]];
                for (c, k) in cj.iter().zip(&kernels[self.starts[j]..]) {
                    sum += f64::from(c * k);
                }
                sum += f64::from(self.rho[decisions.len()]);
                decisions.push(sum as f32);
                votes[if sum > 0.0 { i } else { j }] += 1;
            }
        }
        // The first class with the most votes.
        let mut label = 0;
        for (k, &v) in votes.iter().enumerate() {
            if v > votes[label] {
                label = k;
            }
        }
        if !self.prob_a.is_empty() {
            let mut pairwise = vec![0f32; classes * classes];
            let mut index = 0;
            for i in 0..classes - 1 {
                for j in i + 1..classes {
                    let p = 1.0 - super::trees::logistic(decisions[index] * self.prob_a[index] + self.prob_b[index]);
                    let p = p.clamp(1.0e-7, 1.0 - 1.0e-7);
                    pairwise[i * classes + j] = p;
                    pairwise[j * classes + i] = 1.0 - p;
                    index += 1;
                }
            }
            multiclass_probability(classes, &pairwise, out);
        } else if classes == 2 {
            let s = decisions[0];
            out.copy_from_slice(&if self.post_transform == PostTransform::None { [-s, s] } else { [1.0 - s, s] });
        } else {
            out.copy_from_slice(&decisions);
            self.post_transform.apply(out);
        }
        label
    }
}

/// Index and value of the first maximum.
fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = 0;
    for (k, &s) in v.iter().enumerate() {
        if s > v[best] {
            best = k;
        }
    }
    (best, v.get(best).copied().unwrap_or(0.0))
}

/// libsvm's pairwise coupling (Wu, Lin and Weng 2004), in f32 as onnxruntime computes it:
/// class probabilities `p` from pairwise probabilities `r[i * k + j]` = P(i | i or j).
fn multiclass_probability(k: usize, r: &[f32], p: &mut [f32]) {
    let mut q = vec![0f32; k * k];
    let mut qp = vec![0f32; k];
    let eps = 0.005 / k as f32;
    for i in 0..k {
        p[i] = 1.0 / k as f32;
        for j in 0..i {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = q[j * k + i];
        }
        for j in i + 1..k {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = -r[j * k + i] * r[i * k + j];
        }
    }
    for _ in 0..100 {
        let mut pqp = 0f32;
        for i in 0..k {
            qp[i] = 0.0;
            for j in 0..k {
                qp[i] += q[i * k + j] * p[j];
            }
            pqp += p[i] * qp[i];
        }
        let max_error = (0..k).map(|i| (qp[i] - pqp).abs()).fold(0f32, f32::max);
        if max_error < eps {
            break;
        }
        for i in 0..k {
            let diff = (-qp[i] + pqp) / q[i * k + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * k + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[i * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "SVMClassifier"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        self.labels.outputs(self.width())
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        check(self.features, features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let w = self.width();
        let mut scores = vec![0f32; rows * w];
        let mut labels = Vec::with_capacity(rows);
        let mut kernels = Vec::new();
        for (row, out) in x.chunks_exact(stride).take(rows).zip(scores.chunks_exact_mut(w)) {
            labels.push(self.row(&row[..self.features], &mut kernels, out));
        }
        Ok(tvec!(self.labels.tensor(&labels)?, matrix(scores, rows, w)?))
    }
}

fn check(expected: usize, features: usize) -> Result<(), String> {
    if features == expected {
        Ok(())
    } else {
        Err(format!("it was trained on {expected} features but rows have {features} values"))
    }
}

#[derive(Debug)]
struct Regressor {
    kernel: KernelType,
    features: usize,
    support_vectors: Vec<f32>,
    coefficients: Vec<f32>,
    rho: f32,
    one_class: bool,
}

pub(super) fn regressor(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    let support_vectors = a.floats("support_vectors").to_vec();
    let coefficients = a.floats("coefficients").to_vec();
    let rho = a.floats("rho").first().copied().unwrap_or(0.0);
    let vectors = usize::try_from(a.int("n_supports").unwrap_or(0)).map_err(|_| "`n_supports` is negative")?;
    let mut kernel = KernelType::parse(a)?;
    let features = if vectors > 0 {
        if !support_vectors.len().is_multiple_of(vectors) || coefficients.len() != vectors {
            return Err("`support_vectors`/`coefficients` do not match `n_supports`".into());
        }
        support_vectors.len() / vectors
    } else {
        kernel = KernelType::Linear;
        coefficients.len()
    };
    if features == 0 {
        return Err("the model has no coefficients".into());
    }
    Ok(Arc::new(Regressor { kernel, features, support_vectors, coefficients, rho, one_class: a.int("one_class").unwrap_or(0) != 0 }))
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "SVMRegressor"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::f32(Width::Fixed(1))]
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        check(self.features, features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let mut out = Vec::with_capacity(rows);
        for row in x.chunks_exact(stride).take(rows) {
            let row = &row[..self.features];
            let sum = if self.support_vectors.is_empty() {
                KernelType::Linear.eval(row, &self.coefficients, self.rho)
            } else {
                let s: f64 = self
                    .support_vectors
                    .chunks_exact(self.features)
                    .zip(&self.coefficients)
                    .map(|(v, c)| f64::from(c * self.kernel.eval(row, v, 0.0)))
                    .sum();
                (s + f64::from(self.rho)) as f32
            };
            out.push(if self.one_class {
                if sum > 0.0 {
                    1.0
                } else {
                    -1.0
                }
            } else {
                sum
            });
        }
        Ok(tvec!(matrix(out, rows, 1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupling_of_two_classes_gives_the_pairwise_probability() {
        let r = [0.0, 0.8, 0.2, 0.0];
        let mut p = [0.0; 2];
        multiclass_probability(2, &r, &mut p);
        assert!((p[0] - 0.8).abs() < 1e-3 && (p[1] - 0.2).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn coupling_of_three_classes_sums_to_one() {
        // Class 0 beats 1 and 2 most of the time.
        let r = [0.0, 0.9, 0.8, 0.1, 0.0, 0.6, 0.2, 0.4, 0.0];
        let mut p = [0.0; 3];
        multiclass_probability(3, &r, &mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{p:?}");
        assert!(p[0] > 0.7 && p[1] < 0.2 && p[2] < 0.2, "{p:?}");
    }

    #[test]
    fn kernels() {
        let (x, v) = ([1.0, 2.0], [3.0, -1.0]);
        assert_eq!(KernelType::Linear.eval(&x, &v, 0.5), 1.5);
        assert_eq!(KernelType::Poly { gamma: 2.0, coef0: 1.0, degree: 2.0 }.eval(&x, &v, 0.0), 9.0);
        assert_eq!(KernelType::Rbf { gamma: 0.5 }.eval(&x, &v, 0.0), (-6.5f32).exp());
        assert_eq!(KernelType::Sigmoid { gamma: 1.0, coef0: 0.0 }.eval(&x, &v, 0.0), 1f32.tanh());
    }
}
