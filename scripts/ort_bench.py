#!/usr/bin/env python3
"""onnxruntime's side of `scripts/onnx_bench.sh`: for each zoo model marked for the bench (or
the ones named on the command line), rows/s on its 20 000-row bench batch and the single-row
latency, one thread (intra_op_num_threads=1, inter_op_num_threads=1). Writes (or, for named
models, updates) `$AIEDGE_ZOO/bench_ort.tsv`, which `runner/examples/onnx_bench.rs` reads and
prints beside its own numbers.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ZOO = Path(os.environ.get("AIEDGE_ZOO", "/var/tmp/aiedge-zoo"))


def timed(min_seconds: float, min_runs: int, f) -> float:
    """Seconds per call of `f`: the best of five rounds of at least `min_seconds` and
    `min_runs` calls each, after one warm-up call (as runner/examples/onnx_bench.rs does)."""
    f()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        runs = 0
        while runs < min_runs or time.perf_counter() - start < min_seconds:
            f()
            runs += 1
        best = min(best, (time.perf_counter() - start) / runs)
    return best


def main() -> None:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    wanted = set(sys.argv[1:])
    out = ZOO / "bench_ort.tsv"
    results = {}
    if wanted and out.exists():
        for line in out.read_text().splitlines()[1:]:
            results[line.split("\t")[0]] = line
    for line in (ZOO / "manifest.tsv").read_text().splitlines()[1:]:
        name, _, _, bench, *_ = line.split("\t")
        if bench == "-" or (wanted and name not in wanted):
            continue
        sess = ort.InferenceSession(str(ZOO / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.loadtxt(ZOO / bench, delimiter=",", skiprows=1, dtype=np.float32)
        shape = [-1] + [d for d in inp.shape[1:]]
        x = np.ascontiguousarray(x.reshape(shape))
        one = np.ascontiguousarray(x[:1])
        batch = timed(0.12, 3, lambda: sess.run(None, {inp.name: x}))
        latency = timed(0.06, 200, lambda: sess.run(None, {inp.name: one}))
        rate = len(x) / batch
        results[name] = f"{name}\t{rate:.1f}\t{latency * 1e6:.2f}"
        print(f"  onnxruntime {name}: {rate:,.0f} rows/s, {latency * 1e6:.1f} µs per row", file=sys.stderr)
    out.write_text("\n".join(["name\trows_per_s\tlatency_us", *results.values()]) + "\n")


if __name__ == "__main__":
    main()
