//! Loads an untrusted ONNX model in a child process with memory and time limits.
//!
//! tract evaluates constant sub-graphs while it loads a model, so a file of a few hundred bytes
//! can ask for gigabytes (a `ConstantOfShape` of [60000, 60000]) or for minutes of work. A process
//! that serves other people must not do that itself: [`check`] runs a small child (a binary
//! whose first arguments lead to [`child_main`]), which limits its own address space and CPU
//! time, loads the model and prints its description as one JSON line. The parent waits at most
//! the time limit and turns what happened into a [`CheckError`] a user can act on.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::onnx::{Model, ModelInfo};

/// How much a model may take to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    /// Address space of the child (RLIMIT_AS), which holds the binary, the file and the model.
    pub memory_bytes: u64,
    /// Wall-clock limit; the CPU limit is one second more, as a backstop.
    pub time_limit: Duration,
}

/// Why a model was refused, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Not a model this runner can run; the message says why (from [`crate::onnx::OnnxError`]).
    #[error("{0}")]
    Invalid(String),
    #[error("the model needs more than {} MiB to load", .0 >> 20)]
    TooMuchMemory(u64),
    #[error("the model takes longer than {} s to load", .0.as_secs_f64())]
    TooSlow(Duration),
    /// The platform's fault (the checker could not start, or answered nonsense).
    #[error("the model check failed: {0}")]
    Failed(String),
}

impl CheckError {
    /// Whether the upload is at fault (as opposed to the platform).
    pub fn is_users(&self) -> bool {
        !matches!(self, CheckError::Failed(_))
    }
}

/// The one line the child prints on stdout.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Loaded(ModelInfo),
    Invalid(String),
    /// An allocation beyond the limit that tract turned into a panic (caught as an error).
    OutOfMemory,
}

/// What tract or the standard library say when an allocation fails.
const ALLOCATION_FAILED: &[&str] = &["failed to allocate", "memory allocation of", "Cannot allocate memory", "capacity overflow"];

/// Loads `model` in a child: `program`, then `args`, then the model path and the limits. The
/// child is killed when the time limit passes or when the returned future is dropped.
pub async fn check(program: &Path, args: &[&str], model: &Path, limits: CheckLimits) -> Result<ModelInfo, CheckError> {
    let cpu_secs = limits.time_limit.as_secs().saturating_add(1);
    let child = tokio::process::Command::new(program)
        .args(args)
        .arg(model)
        .arg(limits.memory_bytes.to_string())
        .arg(cpu_secs.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CheckError::Failed(format!("cannot start `{}`: {e}", program.display())))?;
    let output = match tokio::time::timeout(limits.time_limit, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| CheckError::Failed(format!("cannot wait for the checker: {e}")))?,
        // Dropping the child's future killed it.
        Err(_) => return Err(CheckError::TooSlow(limits.time_limit)),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        return match serde_json::from_str::<Answer>(stdout.trim()) {
            Ok(Answer::Loaded(info)) => Ok(info),
            Ok(Answer::Invalid(message)) => Err(CheckError::Invalid(message)),
            Ok(Answer::OutOfMemory) => Err(CheckError::TooMuchMemory(limits.memory_bytes)),
            Err(e) => Err(CheckError::Failed(format!("unreadable answer ({e})"))),
        };
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    match output.status.signal() {
        // Rust aborts when an allocation fails; the kernel kills at the CPU limit.
        Some(signal) if signal == nix::libc::SIGXCPU || signal == nix::libc::SIGKILL && stderr.is_empty() => {
            Err(CheckError::TooSlow(limits.time_limit))
        }
        Some(_) if ALLOCATION_FAILED.iter().any(|m| stderr.contains(m)) => Err(CheckError::TooMuchMemory(limits.memory_bytes)),
        _ => Err(CheckError::Failed(format!("the checker ended with {} ({})", output.status, last_line(&stderr)))),
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output")
}

/// Entry point of the checker child; call it first thing in `main`, before any runtime or thread
/// starts, with the arguments after the ones that led here: the model path, the address space
/// limit in bytes and the CPU limit in seconds. Prints one JSON line and exits 0 when the model
/// loaded or was refused; exits 2 on bad arguments. An allocation beyond the limit aborts it.
pub fn child_main(args: Vec<OsString>) -> ! {
    let parsed = match args.as_slice() {
        [path, memory, cpu] => memory
            .to_str()
            .and_then(|m| m.parse::<u64>().ok())
            .zip(cpu.to_str().and_then(|c| c.parse::<u64>().ok()))
            .map(|(memory, cpu)| (PathBuf::from(path), memory, cpu)),
        _ => None,
    };
    let Some((path, memory_bytes, cpu_secs)) = parsed else {
        eprintln!("usage: <model path> <memory bytes> <cpu seconds>");
        std::process::exit(2)
    };
    if let Err(e) = limit_self(memory_bytes, cpu_secs) {
        eprintln!("cannot set the limits: {e}");
        std::process::exit(2)
    }
    let answer = match Model::load(&path) {
        Ok(model) => Answer::Loaded(model.info().clone()),
        Err(e) => {
            let message = e.to_string();
            if ALLOCATION_FAILED.iter().any(|m| message.contains(m)) {
                Answer::OutOfMemory
            } else {
                Answer::Invalid(message)
            }
        }
    };
    match serde_json::to_string(&answer) {
        Ok(line) => {
            println!("{line}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("cannot write the answer: {e}");
            std::process::exit(2)
        }
    }
}

fn limit_self(memory_bytes: u64, cpu_secs: u64) -> nix::Result<()> {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
    let rlim = crate::sandbox::rlim;
    setrlimit(Resource::RLIMIT_AS, rlim(memory_bytes), rlim(memory_bytes))?;
    setrlimit(Resource::RLIMIT_CPU, rlim(cpu_secs), rlim(cpu_secs.saturating_add(1)))
}
