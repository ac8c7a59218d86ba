//! Per-feature preprocessing: `Scaler` (`(x - offset) * scale`, what skl2onnx makes of
//! StandardScaler and MinMaxScaler) and `Imputer` (SimpleImputer: a missing value, NaN or a
//! given number, becomes the feature's imputed value).
//!
//! Both take one value or one value per feature, as onnxruntime does.

use std::sync::Arc;

use super::{matrix, Attrs, Kernel, OutputSpec, Width};
use tract_onnx::tract_hir::internal::*;

/// One value for every feature, or one per feature.
fn per_feature(values: &[f32], name: &str, features: usize) -> Result<(), String> {
    if values.len() == 1 || values.len() == features {
        Ok(())
    } else {
        Err(format!("`{name}` has {} values for {features} features", values.len()))
    }
}

fn same_as_input() -> Vec<OutputSpec> {
    vec![OutputSpec::f32(Width::SameAsInput)]
}

#[derive(Debug)]
struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

pub(super) fn scaler(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    let offset = a.floats("offset").to_vec();
    let scale = a.floats("scale").to_vec();
    if offset.is_empty() || scale.is_empty() {
        return Err("`offset` and `scale` must both be set".into());
    }
    Ok(Arc::new(Scaler { offset, scale }))
}

impl Kernel for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        same_as_input()
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        per_feature(&self.offset, "offset", features)?;
        per_feature(&self.scale, "scale", features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let offset = expand(&self.offset, stride);
        let scale = expand(&self.scale, stride);
        let mut out = x[..rows * stride].to_vec();
        for row in out.chunks_exact_mut(stride.max(1)) {
            for ((v, o), s) in row.iter_mut().zip(&offset).zip(&scale) {
                *v = (*v - o) * s;
            }
        }
        Ok(tvec!(matrix(out, rows, stride)?))
    }

    fn input_affine(&self, features: usize) -> Option<(Vec<f32>, Vec<f32>)> {
        self.check_features(features).ok()?;
        Some((expand(&self.offset, features), expand(&self.scale, features)))
    }
}

/// One value per feature (a single value repeated).
fn expand(values: &[f32], features: usize) -> Vec<f32> {
    if values.len() == 1 {
        vec![values[0]; features]
    } else {
        values.to_vec()
    }
}

#[derive(Debug)]
struct Imputer {
    imputed: Vec<f32>,
    /// The value that means "missing" (NaN for skl2onnx's SimpleImputer).
    replaced: f32,
}

pub(super) fn imputer(a: &Attrs) -> Result<Arc<dyn Kernel>, String> {
    if !a.ints("imputed_value_int64s").is_empty() {
        return Err("integer imputation is not supported (float inputs only)".into());
    }
    let imputed = a.floats("imputed_value_floats").to_vec();
    if imputed.is_empty() {
        return Err("`imputed_value_floats` is not set".into());
    }
    let replaced = a.float("replaced_value_float").unwrap_or(0.0);
    Ok(Arc::new(Imputer { imputed, replaced }))
}

impl Kernel for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        same_as_input()
    }

    fn check_features(&self, features: usize) -> Result<(), String> {
        per_feature(&self.imputed, "imputed_value_floats", features)
    }

    fn run(&self, x: &[f32], rows: usize, stride: usize) -> TractResult<TVec<Tensor>> {
        let imputed = expand(&self.imputed, stride);
        let mut out = x[..rows * stride].to_vec();
        let nan = self.replaced.is_nan();
        for row in out.chunks_exact_mut(stride.max(1)) {
            for (v, i) in row.iter_mut().zip(&imputed) {
                if (nan && v.is_nan()) || *v == self.replaced {
                    *v = *i;
                }
            }
        }
        Ok(tvec!(matrix(out, rows, stride)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::values;
    use super::*;

    fn run(k: &dyn Kernel, x: &[f32], stride: usize) -> Vec<f32> {
        let out = k.run(x, x.len() / stride, stride).unwrap();
        values(&out[0])
    }

    #[test]
    fn scaler_broadcasts_one_value_or_uses_one_per_feature() {
        let k = Scaler { offset: vec![1.0, 2.0], scale: vec![10.0] };
        assert_eq!(run(&k, &[1.0, 2.0, 3.0, 5.0], 2), [0.0, 0.0, 20.0, 30.0]);
        assert!(k.check_features(2).is_ok());
        assert!(k.check_features(3).unwrap_err().contains("`offset` has 2 values for 3"));
    }

    #[test]
    fn imputer_replaces_nan_or_the_given_value() {
        let k = Imputer { imputed: vec![7.0, 8.0], replaced: f32::NAN };
        assert_eq!(run(&k, &[f32::NAN, 1.0, 2.0, f32::NAN], 2), [7.0, 1.0, 2.0, 8.0]);
        let k = Imputer { imputed: vec![9.0], replaced: -1.0 };
        let out = run(&k, &[-1.0, 1.0, f32::NAN, -1.0], 2);
        assert_eq!(out[..2], [9.0, 1.0]);
        assert!(out[2].is_nan(), "NaN is not missing when the missing value is -1");
        assert_eq!(out[3], 9.0);
    }
}
