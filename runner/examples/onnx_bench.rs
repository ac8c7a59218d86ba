//! The ONNX runner against onnxruntime, model by model: rows/s on a 20 000-row batch and
//! single-row latency, for the zoo models marked for the bench (`scripts/make_zoo.py`).
//!
//! Run it through `scripts/onnx_bench.sh`, which builds the zoo, measures onnxruntime (one
//! thread) into `$AIEDGE_ZOO/bench_ort.tsv` and then runs this:
//!
//! ```sh
//! cargo run --release -p runner --example onnx_bench [-- <zoo dir>]
//! ```
//!
//! Columns: `runner rows/s` is inference on rows already in memory (what onnxruntime's number
//! is too); `csv rows/s` is the whole `predict_csv` (parse, infer, format) for reference.
//! Latencies are the mean of many single-row runs; onnxruntime's include its Python binding's
//! call overhead (a few µs). Every number is the best of five rounds (the machine may be busy).
//! `--batch-only` runs only the batches, longer: for a profiler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use runner::onnx::Model;

const HEADER: &str = "| model | rows | runner rows/s | onnxruntime rows/s | ratio | runner 1-row µs | onnxruntime 1-row µs | csv rows/s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

/// Time per run of `f`: the best of five rounds, each running `f` until `min` has passed (at
/// least `min_runs` times). The best round, because the machine may be shared: what other
/// processes take only ever slows a round down.
fn time(min: Duration, min_runs: u32, mut f: impl FnMut()) -> Duration {
    f(); // warm up: first-run allocations, caches
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut runs = 0u32;
            while runs < min_runs || start.elapsed() < min {
                f();
                runs += 1;
            }
            start.elapsed() / runs
        })
        .min()
        .unwrap_or_default()
}

fn read_rows(path: &PathBuf) -> (String, Vec<f32>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut values = Vec::new();
    let mut rows = 0;
    for line in text.lines().skip(1) {
        values.extend(line.split(',').map(|v| v.parse::<f32>().unwrap()));
        rows += 1;
    }
    (text, values, rows)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--batch-only`: just the batch runs, many times (for a profiler).
    let batch_only = args.iter().any(|a| a == "--batch-only");
    // `--only NAME`: that model's line alone, without the header (scripts/onnx_bench.sh runs
    // each model right after onnxruntime ran it, so both see the same machine load).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let dir = args
        .iter()
        .enumerate()
        .find(|&(i, a)| !a.starts_with("--") && (i == 0 || args[i - 1] != "--only"))
        .map(|(_, a)| PathBuf::from(a))
        .or_else(|| std::env::var_os("AIEDGE_ZOO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/aiedge-zoo"));
    let manifest =
        std::fs::read_to_string(dir.join("manifest.tsv")).unwrap_or_else(|e| panic!("{}: {e}; run scripts/zoo.sh", dir.display()));
    // name -> (rows/s, latency µs), from scripts/ort_bench.py.
    let ort: HashMap<String, (f64, f64)> = std::fs::read_to_string(dir.join("bench_ort.tsv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.first()?.to_string(), (f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?)))
        })
        .collect();

    if only.is_none() {
        println!("{HEADER}");
    }
    let mut ratios = Vec::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, bench) = (f[0], f[3]);
        if bench == "-" || only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let model = Model::load(&dir.join(format!("{name}.onnx"))).unwrap();
        let (text, values, rows) = read_rows(&dir.join(bench));
        let features = model.info().features;

        let batch = time(Duration::from_millis(if batch_only { 1000 } else { 120 }), 3, || {
            model.run_in_memory(&values, rows).unwrap();
        });
        if batch_only {
            println!("{name}: {:.0} rows/s", rows as f64 / batch.as_secs_f64());
            continue;
        }
        let rate = rows as f64 / batch.as_secs_f64();
        let one = time(Duration::from_millis(60), 200, || {
            model.run_in_memory(&values[..features], 1).unwrap();
        });
        let csv = time(Duration::from_millis(60), 1, || {
            let mut sink = Vec::with_capacity(text.len() * 2);
            model.predict_csv(text.as_bytes(), &mut sink, 16_384, &mut |_| {}).unwrap();
        });
        let csv_rate = rows as f64 / csv.as_secs_f64();
        let (ort_rate, ort_us) = match ort.get(name) {
            Some(&(r, us)) => (format!("{r:.0}"), format!("{us:.1}")),
            None => ("-".into(), "-".into()),
        };
        let ratio = ort.get(name).map(|&(r, _)| rate / r);
        if let Some(r) = ratio {
            ratios.push(r);
        }
        println!(
            "| {name} | {rows} | {rate:.0} | {ort_rate} | {} | {:.1} | {ort_us} | {csv_rate:.0} |",
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            one.as_secs_f64() * 1e6,
        );
    }
    if only.is_none() && !ratios.is_empty() {
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!("\nrows/s ratio runner/onnxruntime: min {min:.2}x, geometric mean {geo:.2}x");
    }
}
