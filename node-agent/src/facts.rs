//! What the machine is: sent at registration and on the first heartbeat of each connection.
//!
//! External tools (`nvidia-smi`, `python3`) are asked with a short timeout and their absence is
//! normal: a missing tool just means an empty list.

use std::process::Stdio;
use std::time::Duration;

use shared::wire::{NodeFacts, Runtime};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tokio::process::Command;

/// Longest wait for one external tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(3);

/// Collects the facts; never fails (unknown values become "unknown" or empty lists).
pub async fn gather(max_jobs: u32, queue_ahead: u32, accepts_scripts: bool) -> NodeFacts {
    let machine = tokio::task::spawn_blocking(|| {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let cores = match system.cpus().len() {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        (
            System::host_name().unwrap_or_else(|| "unknown".into()),
            System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
            u32::try_from(cores).unwrap_or(u32::MAX),
            system.total_memory(),
        )
    });
    let (machine, accelerators, python) = tokio::join!(machine, accelerators(), python3());
    let (hostname, os, cpu_cores, total_memory_bytes) = machine.unwrap_or_else(|err| {
        tracing::warn!(error = %err, "reading machine facts failed");
        ("unknown".into(), std::env::consts::OS.into(), 1, 0)
    });
    NodeFacts {
        hostname,
        os,
        arch: std::env::consts::ARCH.into(),
        cpu_cores,
        total_memory_bytes,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        accelerators,
        runtimes: python.into_iter().chain(posix_shell()).collect(),
        max_jobs,
        queue_ahead,
        accepts_scripts,
    }
}

/// GPU names from `nvidia-smi`, if it is installed and answers.
async fn accelerators() -> Vec<String> {
    match tool_output("nvidia-smi", &["--query-gpu=name", "--format=csv,noheader"]).await {
        Some(out) => parse_gpu_names(&out),
        None => Vec::new(),
    }
}

/// `sh`, which bundles may name as their runtime: every Unix has one, and it has no version to
/// ask (dash, busybox); it is listed when `/bin/sh` is there.
fn posix_shell() -> Option<Runtime> {
    std::path::Path::new("/bin/sh").exists().then(|| Runtime { name: "sh".into(), version: "posix".into() })
}

/// `python3 --version`, if installed.
async fn python3() -> Option<Runtime> {
    let out = tool_output("python3", &["--version"]).await?;
    let version = parse_python_version(&out)?;
    Some(Runtime { name: "python3".into(), version })
}

/// stdout + stderr of a successful run of `program`, or `None` if it is missing, fails or hangs.
async fn tool_output(program: &str, args: &[&str]) -> Option<String> {
    let child = Command::new(program).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    match tokio::time::timeout(TOOL_TIMEOUT, child).await {
        Ok(Ok(out)) if out.status.success() => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Some(text)
        }
        Ok(Ok(out)) => {
            tracing::debug!(program, status = %out.status, "tool failed");
            None
        }
        Ok(Err(err)) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(program, error = %err, "tool did not start");
            }
            None
        }
        Err(_) => {
            tracing::warn!(program, "tool timed out");
            None
        }
    }
}

/// One GPU per non-empty line of `nvidia-smi --query-gpu=name --format=csv,noheader`.
pub fn parse_gpu_names(out: &str) -> Vec<String> {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// "Python 3.11.7" -> "3.11.7" (Python 2 printed it on stderr, hence the search).
pub fn parse_python_version(out: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Python ")?.trim();
        version.starts_with(|c: char| c.is_ascii_digit()).then(|| version.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_versions() {
        assert_eq!(parse_python_version("Python 3.11.7\n").as_deref(), Some("3.11.7"));
        assert_eq!(parse_python_version("Python 3.13.0rc1").as_deref(), Some("3.13.0rc1"));
        assert_eq!(parse_python_version("pyenv: python3: command not found"), None);
        assert_eq!(parse_python_version(""), None);
    }

    #[test]
    fn parses_gpu_names() {
        assert_eq!(
            parse_gpu_names("NVIDIA GeForce RTX 4090\nNVIDIA A100-SXM4-40GB\n\n"),
            vec!["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-40GB"]
        );
        assert!(parse_gpu_names("").is_empty());
    }

    #[tokio::test]
    async fn gathers_plausible_facts() {
        let facts = gather(1, 0, true).await;
        assert!(facts.cpu_cores >= 1);
        assert!(facts.total_memory_bytes > 0);
        assert_eq!(facts.arch, std::env::consts::ARCH);
        assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test]
    async fn missing_tool_is_none() {
        assert_eq!(tool_output("definitely-not-a-real-tool-aiedge", &[]).await, None);
    }
}
