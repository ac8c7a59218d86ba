//! How the machine is doing right now, sampled with sysinfo.
//!
//! Only CPU usage, RAM and temperature sensors are refreshed (no process table), so a sample
//! costs a few small `/proc` and `/sys` reads. One [`Sampler`] lives for the whole run because
//! CPU usage is the difference between two samples.

use std::sync::{Arc, Mutex, PoisonError};

use shared::wire::NodeMetrics;
use sysinfo::{Components, CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

const GIB: f64 = (1u64 << 30) as f64;

/// One reading of the machine, without the benchmark and job count that complete it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub free_cpu_pct: f64,
    pub free_mem_pct: f64,
    pub free_ram_gib: f64,
    pub temperature_c: Option<f64>,
}

impl Sample {
    /// The heartbeat's metrics: this sample plus the latest benchmark and the job count.
    pub fn into_metrics(self, events_per_sec: f64, running_jobs: u32) -> NodeMetrics {
        NodeMetrics {
            free_cpu_pct: self.free_cpu_pct,
            free_mem_pct: self.free_mem_pct,
            free_ram_gib: self.free_ram_gib,
            events_per_sec,
            temperature_c: self.temperature_c,
            running_jobs,
        }
    }
}

/// Keeps sysinfo's state between samples. Sampling blocks (file reads): use the `*_shared`
/// helpers, which run it on tokio's blocking pool.
pub struct Sampler {
    system: System,
    components: Components,
}

/// A [`Sampler`] that can be moved into `spawn_blocking` and back.
pub type SharedSampler = Arc<Mutex<Sampler>>;

impl Sampler {
    /// Takes the first CPU reading (the baseline of the next sample) and finds the sensors.
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Self { system, components: Components::new_with_refreshed_list() }
    }

    /// [`Sampler::new`] on the blocking pool.
    pub async fn shared() -> anyhow::Result<SharedSampler> {
        Ok(Arc::new(Mutex::new(tokio::task::spawn_blocking(Sampler::new).await?)))
    }

    /// [`Sampler::sample`] on the blocking pool.
    pub async fn sample_shared(sampler: &SharedSampler) -> anyhow::Result<Sample> {
        let sampler = Arc::clone(sampler);
        Ok(tokio::task::spawn_blocking(move || sampler.lock().unwrap_or_else(PoisonError::into_inner).sample()).await?)
    }

    /// [`Sampler::restart_cpu_window`] on the blocking pool.
    pub async fn restart_cpu_window_shared(sampler: &SharedSampler) -> anyhow::Result<()> {
        let sampler = Arc::clone(sampler);
        tokio::task::spawn_blocking(move || {
            sampler.lock().unwrap_or_else(PoisonError::into_inner).restart_cpu_window();
        })
        .await?;
        Ok(())
    }

    /// Reads CPU usage since the previous call, RAM and temperatures.
    pub fn sample(&mut self) -> Sample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        // Refresh the sensors we know instead of re-listing /sys/class/hwmon every time.
        for component in self.components.list_mut() {
            component.refresh();
        }

        let free_cpu_pct = pct(100.0 - f64::from(self.system.global_cpu_usage()));
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        // u64 -> f64 rounding is far below what a percentage or GiB figure shows.
        #[allow(clippy::cast_precision_loss)]
        let (free_mem_pct, free_ram_gib) =
            if total == 0 { (0.0, 0.0) } else { (pct(available as f64 / total as f64 * 100.0), available as f64 / GIB) };
        let temperature_c = pick_temperature(self.components.list().iter().map(|c| (c.label(), c.temperature())));
        Sample { free_cpu_pct, free_mem_pct, free_ram_gib, temperature_c }
    }

    /// Starts a new CPU-usage window now, so the agent's own benchmark does not show up as load
    /// in the next heartbeat.
    pub fn restart_cpu_window(&mut self) {
        self.system.refresh_cpu_usage();
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

fn pct(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 100.0)
    }
}

/// Whether a sensor label names the CPU: coretemp's "Package id 0"/"Core 1", k10temp's
/// "Tctl"/"Tdie", and the "cpu_thermal"/"cpu-thermal" zones of single-board computers.
pub fn is_cpu_sensor(label: &str) -> bool {
    let label = label.to_ascii_lowercase();
    ["coretemp", "k10temp", "zenpower", "package id", "core ", "tctl", "tdie", "cpu"].iter().any(|needle| label.contains(needle))
}

/// The temperature to report: the hottest CPU sensor, else the hottest sensor of any kind,
/// else `None` (unknown). Readings that cannot be real (not finite, or outside -50..=200 °C)
/// are ignored.
pub fn pick_temperature<'a>(readings: impl IntoIterator<Item = (&'a str, Option<f32>)>) -> Option<f64> {
    let mut hottest_cpu: Option<f64> = None;
    let mut hottest_any: Option<f64> = None;
    for (label, temperature) in readings {
        let Some(t) = temperature.map(f64::from).filter(|t| (-50.0..=200.0).contains(t)) else {
            continue;
        };
        hottest_any = Some(hottest_any.map_or(t, |h| h.max(t)));
        if is_cpu_sensor(label) {
            hottest_cpu = Some(hottest_cpu.map_or(t, |h| h.max(t)));
        }
    }
    hottest_cpu.or(hottest_any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_cpu_sensors() {
        for label in ["coretemp Package id 0", "coretemp Core 3", "k10temp Tctl", "k10temp Tdie", "cpu_thermal temp1", "CPU"] {
            assert!(is_cpu_sensor(label), "{label}");
        }
        for label in ["nvme Composite", "acpitz temp1", "amdgpu edge", "iwlwifi_1 temp1"] {
            assert!(!is_cpu_sensor(label), "{label}");
        }
    }

    #[test]
    fn prefers_the_hottest_cpu_sensor() {
        let readings = [
            ("nvme Composite", Some(70.0)),
            ("coretemp Core 0", Some(55.0)),
            ("coretemp Package id 0", Some(61.5)),
            ("coretemp Core 1", Some(58.0)),
        ];
        assert_eq!(pick_temperature(readings), Some(61.5));
    }

    #[test]
    fn falls_back_to_any_sensor_then_unknown() {
        assert_eq!(pick_temperature([("acpitz temp1", Some(41.0)), ("nvme Composite", Some(45.0))]), Some(45.0));
        assert_eq!(pick_temperature([("acpitz temp1", None)]), None);
        assert_eq!(pick_temperature(std::iter::empty()), None);
    }

    #[test]
    fn ignores_impossible_readings() {
        let readings =
            [("k10temp Tctl", Some(f32::NAN)), ("coretemp Core 0", Some(-273.0)), ("cpu_thermal", Some(1000.0)), ("acpitz", Some(40.0))];
        assert_eq!(pick_temperature(readings), Some(40.0));
    }

    #[test]
    fn samples_are_in_range() {
        let mut sampler = Sampler::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = sampler.sample();
        assert!((0.0..=100.0).contains(&s.free_cpu_pct), "{s:?}");
        assert!((0.0..=100.0).contains(&s.free_mem_pct) && s.free_mem_pct > 0.0, "{s:?}");
        assert!(s.free_ram_gib > 0.0, "{s:?}");
    }
}
