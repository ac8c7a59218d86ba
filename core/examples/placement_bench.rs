//! Placements per second: the balancer choosing a node for one job at a time among N nodes, as
//! the dispatcher calls it (every node of the pool a candidate, the best few recorded, the
//! winner's in-flight count raised, finishes freeing slots elsewhere), and how large the
//! decision each job records is.
//!
//!   cargo run --release -p aiedge-core --example placement_bench -- [nodes] [placements]
//!
//! Defaults: 10 000 nodes, 20 000 placements. Prints the rate and the p50/p99/max decision time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aiedge_core::balancer::{pick_recorded, Need, NodeState, RECORDED};
use aiedge_core::{AdminState, NodeStatus, Pool, Sharing};
use shared::jobs::AppKind;

/// A small deterministic generator: the same fleet every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn unit(&mut self) -> f64 {
        (self.next() % 10_000) as f64 / 10_000.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().expect("nodes")).unwrap_or(10_000);
    let placements: usize = args.next().map(|a| a.parse().expect("placements")).unwrap_or(20_000);
    let mut rng = Lcg(42);
    let mut nodes: Vec<NodeState> = (0..n)
        .map(|i| NodeState {
            id: format!("{i:08x}-0000-4000-8000-000000000000"),
            name: format!("edge-{i}"),
            owner_id: format!("owner-{}", i % 100),
            sharing: Sharing::Everyone,
            shared_with: Vec::new(),
            status: NodeStatus::Active,
            admin_state: AdminState::Enabled,
            score: Some(0.2 + 0.8 * rng.unit()),
            overheated: false,
            perf: 0.5 + rng.unit(),
            max_jobs: 4,
            ahead: 0,
            accepts_scripts: true,
            runtimes: vec!["python3".into()],
            in_flight: (rng.next() % 4) as u32,
            observed: 1.0,
        })
        .collect();
    let need = Need { owner_id: "owner-7".into(), pool: Pool::Shared, kind: AppKind::Onnx, runtime: None, tried: Vec::new() };

    let mut times: Vec<Duration> = Vec::with_capacity(placements);
    let mut decision_bytes = 0;
    let started = Instant::now();
    for k in 0..placements {
        let began = Instant::now();
        let (winner, candidates, _) = pick_recorded(&need, &nodes, RECORDED);
        times.push(began.elapsed());
        if k == 0 {
            decision_bytes = serde_json::to_vec(&candidates).unwrap().len();
        }
        // The job goes out; some other job somewhere finishes.
        if let Some(w) = winner {
            nodes[w].in_flight += 1;
        }
        let done = (rng.next() as usize) % n;
        nodes[done].in_flight = nodes[done].in_flight.saturating_sub(1);
    }
    let total = started.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{n} nodes, {placements} placements: {:.0} placements/s; decision p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; \
         the candidates recorded with each job: {:.1} KiB of JSON",
        placements as f64 / total.as_secs_f64(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        decision_bytes as f64 / 1024.0
    );
}
