//! `node-agent probe` on this very machine: real sysinfo, real benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

#[test]
fn probe_prints_facts_metrics_and_score() {
    let out = common::agent().arg("probe").output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();

    let facts: shared::wire::NodeFacts = serde_json::from_value(json["facts"].clone()).unwrap();
    assert!(!facts.hostname.is_empty());
    assert!(!facts.os.is_empty());
    assert_eq!(facts.arch, std::env::consts::ARCH);
    assert!(facts.cpu_cores >= 1);
    assert!(facts.total_memory_bytes > 0);
    assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));

    let m: shared::wire::NodeMetrics = serde_json::from_value(json["metrics"].clone()).unwrap();
    assert!((0.0..=100.0).contains(&m.free_cpu_pct), "{m:?}");
    assert!((0.0..=100.0).contains(&m.free_mem_pct) && m.free_mem_pct > 0.0, "{m:?}");
    assert!(m.free_ram_gib > 0.0, "{m:?}");
    assert!(m.events_per_sec > 0.0 && m.events_per_sec.is_finite(), "{m:?}");
    if let Some(t) = m.temperature_c {
        assert!((-50.0..=200.0).contains(&t), "{m:?}");
    }
    assert_eq!(m.running_jobs, 0);

    let s: shared::score::Score = serde_json::from_value(json["score"].clone()).unwrap();
    assert!(s.total >= 0.0 && s.total.is_finite(), "{s:?}");
    assert!((0.0..=25.0).contains(&s.load));
    assert!((0.0..=1.0).contains(&s.thermal));
    // The score printed is the shared formula applied to the metrics printed (up to the last
    // digit JSON may round away).
    let expected = shared::score::score(&m, &shared::score::ThermalPolicy::default());
    for (got, want) in [(s.load, expected.load), (s.perf, expected.perf), (s.thermal, expected.thermal), (s.total, expected.total)] {
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{s:?} vs {expected:?}");
    }
}

#[test]
fn probe_honours_the_thermal_policy_options() {
    // A critical temperature below any real reading: with a sensor the factor is 0, without one
    // (unknown temperature) it stays 1. Either way the options are accepted.
    let out = common::agent().args(["probe", "--warn-temp", "-100", "--critical-temp", "-90"]).output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = if json["metrics"]["temperature_c"].is_null() { 1.0 } else { 0.0 };
    assert_eq!(json["score"]["thermal"].as_f64(), Some(expected));
}
