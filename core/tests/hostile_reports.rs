//! What a node says of itself is outside input: a heartbeat's bytes go through the parser, and
//! whatever parses goes through the clamps of `aiedge_core::reported`. Whatever the bytes, the
//! parser answers with a value or an error, and the clamped numbers (and the score made of them)
//! are finite and within what a machine can be, so a lying node cannot buy itself all the work.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use aiedge_core::reported::{self, CORES_MAX, EVENTS_PER_SEC_MAX, LIST_MAX, SLOTS_PER_CORE, TEXT_MAX_CHARS};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use shared::score::{score, ThermalPolicy};
use shared::wire::{Heartbeat, NodeMetrics};

const THERMAL: ThermalPolicy = ThermalPolicy { warn_c: 80.0, critical_c: 90.0 };

/// Any JSON number a sender can write, with the edges a liar tries first. Mostly small whole
/// numbers, which every numeric field takes, so that most heartbeats parse and reach the clamps.
fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        20 => (0u32..200).prop_map(Value::from),
        2 => any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => Just(json!(1e300)),
        1 => Just(json!(-1e300)),
        1 => Just(Value::Null),
        1 => Just(json!("NaN")),
    ]
    .boxed()
}

/// A string, often far longer than any name should be.
fn string() -> BoxedStrategy<Value> {
    prop_oneof![4 => "\\PC{0,300}".prop_map(Value::from), 1 => Just(json!("x".repeat(10_000)))].boxed()
}

/// A string, or sometimes what is not one.
fn text() -> BoxedStrategy<Value> {
    prop_oneof![8 => string(), 1 => number()].boxed()
}

fn facts() -> BoxedStrategy<Value> {
    (
        (text(), text(), text(), number(), number(), text()),
        (proptest::collection::vec(string(), 0..40), proptest::collection::vec((string(), string()), 0..40), number(), number()),
    )
        .prop_map(|((hostname, os, arch, cores, memory, version), (accelerators, runtimes, max_jobs, queue_ahead))| {
            json!({
                "hostname": hostname, "os": os, "arch": arch, "cpu_cores": cores,
                "total_memory_bytes": memory, "agent_version": version, "accelerators": accelerators,
                "runtimes": runtimes.into_iter().map(|(name, version)| json!({"name": name, "version": version})).collect::<Vec<_>>(),
                "max_jobs": max_jobs, "queue_ahead": queue_ahead,
            })
        })
        .boxed()
}

fn heartbeat() -> impl Strategy<Value = Value> {
    (
        (number(), number(), number(), number(), number(), number()),
        (number(), number(), proptest::option::of(facts()), proptest::option::of(text()), any::<bool>()),
    )
        .prop_map(|((cpu, mem, ram, events, temperature, running), (seq, sent_at, facts, instance, draining))| {
            let mut hb = json!({
                "node_id": "n", "seq": seq, "sent_at_ms": sent_at,
                "metrics": {"free_cpu_pct": cpu, "free_mem_pct": mem, "free_ram_gib": ram,
                            "events_per_sec": events, "temperature_c": temperature, "running_jobs": running},
                "draining": draining,
            });
            if let Some(facts) = facts {
                hb["facts"] = facts;
            }
            if let Some(instance) = instance {
                hb["instance"] = instance;
            }
            hb
        })
}

/// Clamps what parsed and checks every bound.
fn check_clamped(mut hb: Heartbeat) {
    if let Some(facts) = hb.facts.as_mut() {
        reported::clamp_facts(facts);
        for text in [&facts.hostname, &facts.os, &facts.arch, &facts.agent_version] {
            assert!(text.chars().count() <= TEXT_MAX_CHARS);
        }
        assert!(facts.accelerators.len() <= LIST_MAX && facts.runtimes.len() <= LIST_MAX);
        assert!((1..=CORES_MAX).contains(&facts.cpu_cores));
        assert!(facts.max_jobs >= 1 && facts.max_jobs <= facts.cpu_cores * SLOTS_PER_CORE);
        assert!(facts.queue_ahead <= facts.max_jobs);
    }
    reported::clamp_metrics(&mut hb.metrics, hb.facts.as_ref());
    let m = &hb.metrics;
    assert!((0.0..=100.0).contains(&m.free_cpu_pct) && (0.0..=100.0).contains(&m.free_mem_pct));
    assert!(m.free_ram_gib.is_finite() && m.free_ram_gib >= 0.0);
    assert!((0.0..=EVENTS_PER_SEC_MAX).contains(&m.events_per_sec));
    assert!(m.temperature_c.is_none_or(f64::is_finite));
    if let Some(facts) = &hb.facts {
        assert!(m.running_jobs <= facts.max_jobs + facts.queue_ahead);
    }
    let s = score(m, &THERMAL);
    assert!(s.total.is_finite() && s.total >= 0.0, "{s:?}");
    // No claim buys more than an idle, cool machine at the benchmark's cap.
    let best = NodeMetrics {
        free_cpu_pct: 100.0,
        free_mem_pct: 100.0,
        free_ram_gib: 1e9,
        events_per_sec: EVENTS_PER_SEC_MAX,
        temperature_c: None,
        running_jobs: 0,
    };
    let best = score(&best, &THERMAL);
    assert!(s.total <= best.total, "{s:?} beats {best:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_a_heartbeat_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&bytes) {
            check_clamped(hb);
        }
    }

    #[test]
    fn any_heartbeat_a_node_can_send_is_held_to_a_machine(value in heartbeat()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&bytes) {
            check_clamped(hb);
        }
    }
}

#[test]
fn the_generator_makes_heartbeats_that_parse() {
    // Without this the property above could pass by never parsing anything.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = heartbeat();
    let parsed =
        (0..300).filter(|_| serde_json::from_value::<Heartbeat>(strategy.new_tree(&mut runner).unwrap().current()).is_ok()).count();
    assert!(parsed >= 5, "only {parsed} of 300 generated heartbeats parsed");
}
