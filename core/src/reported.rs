//! What a node reports of itself, held to what a machine can be. A node is its owner's
//! machine, not the platform's: its facts and metrics are claims. Strings are cut to a length a
//! page can show, and numbers to what the machine it describes could do, so a node that claims
//! 10^15 benchmark events per second or a thousand slots on two cores scores and takes work as
//! the most its hardware could honestly give, and its text cannot fill the database.

use shared::wire::{NodeFacts, NodeMetrics};

/// Longest node-reported text (hostname, OS, versions, accelerator names), in characters.
pub const TEXT_MAX_CHARS: usize = 128;
/// At most this many accelerators and runtimes are kept.
pub const LIST_MAX: usize = 16;
/// The most logical CPUs a node may claim.
pub const CORES_MAX: u32 = 1024;
/// Job slots per core a node may claim (`--max-jobs`), and jobs held ahead per slot.
pub const SLOTS_PER_CORE: u32 = 4;
/// The most single-threaded benchmark events per second any CPU of today reaches (a fast
/// desktop core does about 3 000 to 5 000 primes-to-10 000 passes a second); claims above are cut.
pub const EVENTS_PER_SEC_MAX: f64 = 20_000.0;
/// The hottest and coldest temperatures a sensor may report, in °C.
pub const TEMPERATURE_RANGE: (f64, f64) = (-60.0, 150.0);

fn cut(text: &mut String) {
    if text.chars().count() > TEXT_MAX_CHARS {
        *text = text.chars().take(TEXT_MAX_CHARS).collect();
    }
    text.retain(|c| !c.is_control());
}

/// Holds a node's facts to what a machine can be.
pub fn clamp_facts(facts: &mut NodeFacts) {
    for text in [&mut facts.hostname, &mut facts.os, &mut facts.arch, &mut facts.agent_version] {
        cut(text);
    }
    facts.accelerators.truncate(LIST_MAX);
    facts.accelerators.iter_mut().for_each(cut);
    facts.runtimes.truncate(LIST_MAX);
    for runtime in &mut facts.runtimes {
        cut(&mut runtime.name);
        cut(&mut runtime.version);
    }
    facts.cpu_cores = facts.cpu_cores.clamp(1, CORES_MAX);
    facts.max_jobs = facts.max_jobs.clamp(1, facts.cpu_cores.saturating_mul(SLOTS_PER_CORE));
    facts.queue_ahead = facts.queue_ahead.min(facts.max_jobs);
}

/// Holds a heartbeat's metrics to what a machine with `facts` (when known) can be. Numbers that
/// are not numbers count as the worst case.
pub fn clamp_metrics(metrics: &mut NodeMetrics, facts: Option<&NodeFacts>) {
    let finite_or = |v: f64, worst: f64| if v.is_finite() { v } else { worst };
    metrics.free_cpu_pct = finite_or(metrics.free_cpu_pct, 0.0).clamp(0.0, 100.0);
    metrics.free_mem_pct = finite_or(metrics.free_mem_pct, 0.0).clamp(0.0, 100.0);
    let ram_max = facts.map_or(f64::MAX, |f| f.total_memory_bytes as f64 / f64::from(1u32 << 30));
    metrics.free_ram_gib = finite_or(metrics.free_ram_gib, 0.0).clamp(0.0, ram_max);
    metrics.events_per_sec = finite_or(metrics.events_per_sec, 0.0).clamp(0.0, EVENTS_PER_SEC_MAX);
    // An unreadable temperature is "unknown"; one out of any sensor's range is taken at its
    // bound (a node cannot cool itself into a better score than 20 °C does).
    metrics.temperature_c = metrics.temperature_c.filter(|t| t.is_finite()).map(|t| t.clamp(TEMPERATURE_RANGE.0, TEMPERATURE_RANGE.1));
    if let Some(f) = facts {
        metrics.running_jobs = metrics.running_jobs.min(f.max_jobs.saturating_add(f.queue_ahead));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wire::Runtime;

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "box".into(),
            os: "Linux".into(),
            arch: "x86_64".into(),
            cpu_cores: 2,
            total_memory_bytes: 4 << 30,
            agent_version: "0.1.0".into(),
            accelerators: vec![],
            runtimes: vec![Runtime { name: "python3".into(), version: "3.11".into() }],
            max_jobs: 2,
            queue_ahead: 0,
            accepts_scripts: true,
        }
    }

    #[test]
    fn honest_facts_are_kept() {
        let mut f = facts();
        clamp_facts(&mut f);
        assert_eq!(f, facts());
    }

    #[test]
    fn boastful_facts_are_held_to_the_machine() {
        let mut f = facts();
        f.hostname = "h".repeat(100_000);
        f.os = "a\nb\u{1b}[31m".into();
        f.accelerators = vec!["gpu".repeat(100); 1000];
        f.max_jobs = 100_000;
        f.queue_ahead = 100_000;
        f.cpu_cores = 0;
        clamp_facts(&mut f);
        assert_eq!(f.hostname.chars().count(), TEXT_MAX_CHARS);
        assert_eq!(f.os, "ab[31m");
        assert_eq!(f.accelerators.len(), LIST_MAX);
        assert!(f.accelerators.iter().all(|a| a.chars().count() <= TEXT_MAX_CHARS));
        assert_eq!((f.cpu_cores, f.max_jobs, f.queue_ahead), (1, SLOTS_PER_CORE, SLOTS_PER_CORE));
    }

    #[test]
    fn boastful_metrics_are_held_to_the_machine() {
        let f = facts();
        let mut m = NodeMetrics {
            free_cpu_pct: 1e9,
            free_mem_pct: f64::NAN,
            free_ram_gib: 1e6,
            events_per_sec: 1e15,
            temperature_c: Some(-1e9),
            running_jobs: 1000,
        };
        clamp_metrics(&mut m, Some(&f));
        assert_eq!((m.free_cpu_pct, m.free_mem_pct, m.free_ram_gib), (100.0, 0.0, 4.0));
        assert_eq!(m.events_per_sec, EVENTS_PER_SEC_MAX);
        assert_eq!(m.temperature_c, Some(TEMPERATURE_RANGE.0));
        assert_eq!(m.running_jobs, 2);
        let mut honest = NodeMetrics {
            free_cpu_pct: 50.0,
            free_mem_pct: 40.0,
            free_ram_gib: 1.5,
            events_per_sec: 1200.0,
            temperature_c: None,
            running_jobs: 1,
        };
        let before = honest.clone();
        clamp_metrics(&mut honest, Some(&f));
        assert_eq!(honest, before);
    }
}
