//! The CPU benchmark behind `events_per_sec`: the workload of `sysbench cpu`.
//!
//! One event counts the primes up to [`MAX_PRIME`] by trial division (each candidate `c` is
//! divided by 2..=√c), exactly as `sysbench cpu --cpu-max-prime=10000` does, on one thread.
//! Events are repeated for about a second and reported per second, so numbers are comparable
//! with `sysbench cpu run --threads=1` on the same machine.
//!
//! It is run at start-up and then now and then while the node is idle, never on every heartbeat
//! and never while a job runs: it costs a full core for its second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Upper bound of the primes counted in one event (`sysbench cpu`'s default).
pub const MAX_PRIME: u32 = 10_000;
/// How long one benchmark runs.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(1);

/// Counts the primes in `3..=max` by trial division: one benchmark event.
pub fn count_primes(max: u32) -> u32 {
    let mut count = 0;
    for c in 3..=max {
        let mut divisor = 2;
        let mut prime = true;
        while divisor * divisor <= c {
            if c % divisor == 0 {
                prime = false;
                break;
            }
            divisor += 1;
        }
        count += u32::from(prime);
    }
    count
}

/// Runs events for about `duration` on the calling thread and returns events per second, or
/// `None` if `cancel` fired first. Blocking: call it from `spawn_blocking`.
pub fn events_per_sec(duration: Duration, cancel: &CancellationToken) -> Option<f64> {
    let start = Instant::now();
    let mut events: u64 = 0;
    loop {
        // black_box: otherwise the optimiser may hoist or drop a loop with a constant result.
        black_box(count_primes(black_box(MAX_PRIME)));
        events += 1;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            // u64 -> f64 is exact far beyond any count a second can reach.
            #[allow(clippy::cast_precision_loss)]
            return Some(events as f64 / elapsed.as_secs_f64());
        }
        if cancel.is_cancelled() {
            return None;
        }
    }
}

/// [`events_per_sec`] on tokio's blocking pool.
pub async fn run_blocking(duration: Duration, cancel: CancellationToken) -> anyhow::Result<Option<f64>> {
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || events_per_sec(duration, &cancel)).await?;
    if let Some(eps) = result {
        crate::telemetry::benchmark(started.elapsed(), eps);
        tracing::info!(events_per_sec = eps.round(), took_ms = started.elapsed().as_millis() as u64, "cpu benchmark");
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_primes_like_sysbench() {
        // π(10 000) = 1229; the count starts at 3, so 2 is not among them.
        assert_eq!(count_primes(MAX_PRIME), 1228);
        assert_eq!(count_primes(10), 3); // 3, 5, 7
        assert_eq!(count_primes(2), 0);
        assert_eq!(count_primes(9), 3, "9 = 3×3 is caught by divisor² <= c");
        assert_eq!(count_primes(25), 8, "25 = 5×5 likewise");
    }

    #[test]
    fn measures_a_positive_rate() {
        let eps = events_per_sec(Duration::from_millis(50), &CancellationToken::new()).unwrap();
        assert!(eps.is_finite() && eps > 0.0);
    }

    #[test]
    fn stops_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        assert_eq!(events_per_sec(Duration::from_secs(30), &cancel), None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
