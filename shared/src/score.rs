//! The node score: how good a pick a node is right now. Higher is better.
//!
//! With `cpu` the free CPU % and `mem` the free memory %, both clamped to 0..=100:
//!
//! - **load** `= 1 / (3/cpu + 1/mem)`, 0 when either is 0. CPU weighs three times memory; the
//!   range is 0..=25 (25 for an idle machine).
//! - **perf** `= events_per_sec / 10000 + min(2, free_ram_gib) / 10`. The events are the agent's
//!   own single-threaded `sysbench cpu`-style benchmark; RAM beyond 2 GiB adds nothing.
//! - **thermal** factor `f(t)` from a [`ThermalPolicy`]: 1 when the temperature is unknown or at
//!   most `warn_c`; falling linearly from 1 at `warn_c` to 0 at `critical_c`; 0 at or above
//!   `critical_c`. With `warn_c >= critical_c` it is a plain step at `critical_c`, which is the
//!   product's minimum rule ("1 below critical, 0 at or above").
//! - **total** `= load × perf × thermal`.
//!
//! The temperature is a factor between 0 and 1, never a multiplier in °C, and the balancer picks
//! the *highest* total: the original design got both of these wrong.
//!
//! Inputs from the wire are not trusted: NaN, infinite or negative values count as 0 (a NaN
//! temperature counts as unknown), so the result is always finite and non-negative.

use serde::{Deserialize, Serialize};

use crate::wire::NodeMetrics;

/// Temperatures (°C) between which the score is derated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThermalPolicy {
    /// At or below this the node scores fully.
    pub warn_c: f64,
    /// At or above this the node scores 0.
    pub critical_c: f64,
}

impl Default for ThermalPolicy {
    fn default() -> Self {
        Self { warn_c: 80.0, critical_c: 90.0 }
    }
}

impl ThermalPolicy {
    /// The thermal factor `f(t)` in 0..=1; `None` (unknown) and NaN count as 1.
    pub fn factor(&self, temperature_c: Option<f64>) -> f64 {
        let Some(t) = temperature_c.filter(|t| !t.is_nan()) else {
            return 1.0;
        };
        if t >= self.critical_c {
            return 0.0;
        }
        // `partial_cmp` rather than `warn < critical` so NaN thresholds fall back to the step
        // instead of dividing by NaN.
        let has_ramp = self.warn_c.partial_cmp(&self.critical_c) == Some(std::cmp::Ordering::Less);
        if t <= self.warn_c || !has_ramp {
            return 1.0;
        }
        ((self.critical_c - t) / (self.critical_c - self.warn_c)).clamp(0.0, 1.0)
    }
}

/// A node's score and the parts it is made of, so a page can say why a node was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// 0..=25.
    pub load: f64,
    /// 0 and up; about 0.1–0.5 for common machines.
    pub perf: f64,
    /// 0..=1.
    pub thermal: f64,
    /// `load × perf × thermal`.
    pub total: f64,
}

/// Scores one node from its latest metrics.
pub fn score(metrics: &NodeMetrics, policy: &ThermalPolicy) -> Score {
    let cpu = pct(metrics.free_cpu_pct);
    let mem = pct(metrics.free_mem_pct);
    let load = if cpu <= 0.0 || mem <= 0.0 { 0.0 } else { 1.0 / (3.0 / cpu + 1.0 / mem) };
    let perf = non_negative(metrics.events_per_sec) / 10_000.0 + non_negative(metrics.free_ram_gib).min(2.0) / 10.0;
    let thermal = policy.factor(metrics.temperature_c);
    Score { load, perf, thermal, total: load * perf * thermal }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

fn pct(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(cpu: f64, mem: f64) -> NodeMetrics {
        NodeMetrics {
            free_cpu_pct: cpu,
            free_mem_pct: mem,
            free_ram_gib: 1.0,
            events_per_sec: 1000.0,
            temperature_c: None,
            running_jobs: 0,
        }
    }

    fn at(cpu: f64, mem: f64) -> Score {
        score(&metrics(cpu, mem), &ThermalPolicy::default())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn no_free_cpu_scores_zero() {
        let s = at(0.0, 100.0);
        assert_eq!(s.load, 0.0);
        assert_eq!(s.total, 0.0);
    }

    #[test]
    fn no_free_memory_scores_zero() {
        let s = at(100.0, 0.0);
        assert_eq!(s.load, 0.0);
        assert_eq!(s.total, 0.0);
    }

    #[test]
    fn idle_machine_has_load_25() {
        assert!(close(at(100.0, 100.0).load, 25.0));
    }

    #[test]
    fn cpu_weighs_three_times_memory() {
        // 1 / (3/50 + 1/100) = 1 / 0.07
        assert!(close(at(50.0, 100.0).load, 1.0 / 0.07));
        // Losing the same points of CPU hurts more than losing them of memory.
        assert!(at(50.0, 100.0).load < at(100.0, 50.0).load);
    }

    #[test]
    fn out_of_range_percentages_are_clamped() {
        assert!(close(at(250.0, 1e9).load, 25.0));
        assert_eq!(at(-5.0, 50.0).load, 0.0);
    }

    #[test]
    fn perf_formula() {
        let m = NodeMetrics { events_per_sec: 2500.0, free_ram_gib: 1.5, ..metrics(100.0, 100.0) };
        let s = score(&m, &ThermalPolicy::default());
        assert!(close(s.perf, 0.25 + 0.15));
        assert!(close(s.total, 25.0 * 0.4));
    }

    #[test]
    fn ram_beyond_two_gib_adds_nothing() {
        let two = NodeMetrics { free_ram_gib: 2.0, ..metrics(100.0, 100.0) };
        let huge = NodeMetrics { free_ram_gib: 512.0, ..metrics(100.0, 100.0) };
        let policy = ThermalPolicy::default();
        assert_eq!(score(&two, &policy), score(&huge, &policy));
        assert!(close(score(&huge, &policy).perf, 1000.0 / 10_000.0 + 0.2));
    }

    #[test]
    fn unknown_temperature_counts_as_one() {
        assert_eq!(ThermalPolicy::default().factor(None), 1.0);
        assert_eq!(ThermalPolicy::default().factor(Some(f64::NAN)), 1.0);
        assert_eq!(at(100.0, 100.0).thermal, 1.0);
    }

    #[test]
    fn thermal_derating() {
        let p = ThermalPolicy::default();
        assert_eq!(p.factor(Some(-20.0)), 1.0);
        assert_eq!(p.factor(Some(79.9)), 1.0, "just below warn");
        assert_eq!(p.factor(Some(80.0)), 1.0, "at warn");
        assert!(close(p.factor(Some(85.0)), 0.5), "midway");
        assert!(close(p.factor(Some(82.5)), 0.75));
        assert!(p.factor(Some(89.99)) > 0.0);
        assert_eq!(p.factor(Some(90.0)), 0.0, "at critical");
        assert_eq!(p.factor(Some(120.0)), 0.0, "above critical");
        assert_eq!(p.factor(Some(f64::INFINITY)), 0.0);
    }

    #[test]
    fn thermal_factor_is_monotonic() {
        let p = ThermalPolicy::default();
        let mut last = 1.0;
        for tenth in 0..=1200 {
            let f = p.factor(Some(f64::from(tenth) / 10.0));
            assert!(f <= last && (0.0..=1.0).contains(&f));
            last = f;
        }
    }

    #[test]
    fn warn_at_or_above_critical_is_a_step() {
        for warn in [90.0, 95.0] {
            let p = ThermalPolicy { warn_c: warn, critical_c: 90.0 };
            assert_eq!(p.factor(Some(89.9)), 1.0);
            assert_eq!(p.factor(Some(90.0)), 0.0);
        }
        let nan = ThermalPolicy { warn_c: f64::NAN, critical_c: 90.0 };
        assert_eq!(nan.factor(Some(85.0)), 1.0);
        assert_eq!(nan.factor(Some(90.0)), 0.0);
    }

    #[test]
    fn hot_node_scores_zero() {
        let m = NodeMetrics { temperature_c: Some(95.0), ..metrics(100.0, 100.0) };
        let s = score(&m, &ThermalPolicy::default());
        assert_eq!(s.thermal, 0.0);
        assert_eq!(s.total, 0.0);
        assert!(s.load > 0.0 && s.perf > 0.0, "the parts still explain the node");
    }

    #[test]
    fn total_is_the_product() {
        let m = NodeMetrics { temperature_c: Some(85.0), ..metrics(60.0, 30.0) };
        let s = score(&m, &ThermalPolicy::default());
        assert!(close(s.total, s.load * s.perf * s.thermal));
        assert!(close(s.thermal, 0.5));
    }

    #[test]
    fn garbage_inputs_give_finite_non_negative_scores() {
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, -1e300, 0.0];
        let policy = ThermalPolicy::default();
        for &a in &bad {
            for &b in &bad {
                let m = NodeMetrics {
                    free_cpu_pct: a,
                    free_mem_pct: b,
                    free_ram_gib: a,
                    events_per_sec: b,
                    temperature_c: Some(a),
                    running_jobs: 0,
                };
                let s = score(&m, &policy);
                for part in [s.load, s.perf, s.thermal, s.total] {
                    assert!(part.is_finite() && part >= 0.0, "{m:?} -> {s:?}");
                }
            }
        }
    }

    #[test]
    fn monotonic_in_free_cpu() {
        for mem in [1.0, 30.0, 100.0] {
            let mut last = 0.0;
            for cpu in 0..=100 {
                let s = at(f64::from(cpu), mem);
                assert!(s.total >= last, "cpu {cpu} mem {mem}");
                last = s.total;
            }
        }
    }

    #[test]
    fn monotonic_in_free_memory() {
        let mut last = 0.0;
        for mem in 0..=100 {
            let s = at(70.0, f64::from(mem));
            assert!(s.total >= last);
            last = s.total;
        }
    }

    #[test]
    fn score_serializes_with_its_parts() {
        let json = serde_json::to_value(at(100.0, 100.0)).unwrap();
        for key in ["load", "perf", "thermal", "total"] {
            assert!(json[key].is_f64(), "{key}");
        }
    }
}
