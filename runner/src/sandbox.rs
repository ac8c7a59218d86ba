//! Runs a script bundle's entry command in a sandbox.
//!
//! The agent is a multi-threaded tokio process, so it cannot safely change limits or identity
//! between `fork` and `exec` (that needs `unsafe` `pre_exec` and async-signal-safe code). Instead
//! it **re-executes itself**: [`run`] spawns a launcher binary (the agent, with a hidden
//! subcommand) in a fresh process group, and that fresh, single-threaded process calls
//! [`child_main`], which tightens everything and then `exec`s the real command. Every step is a
//! safe call.
//!
//! What the script gets:
//! - resource limits ([`ResourceLimits`]: CPU seconds, address space, file size, processes,
//!   no core dumps), and a wall-clock limit enforced by [`run`];
//! - when the agent is root: a uid and gid of its own per job slot ([`ScriptJob::uid`], else
//!   65534) with no supplementary groups, so files only the agent user can read (its state,
//!   credentials) stay closed and jobs cannot signal the agent or each other; when the job ends,
//!   every process left with that uid is killed, even one that left its process group;
//! - no network unless the node's owner allows it ([`OwnerCaps::network`]): its own network
//!   namespace, which has no interface up (a user namespace too when the agent is not root);
//! - the owner's caps on memory, time and disk ([`OwnerCaps`]), which no manifest exceeds; the
//!   work directory's size and file count are watched, and the job killed past the cap;
//! - where the kernel has it: a Landlock ruleset, read+execute on the system directories and
//!   read-write on the work dir only, plus signal and abstract-socket scoping, so even a script
//!   running as the agent's own user cannot read the agent's files or signal it;
//! - `no_new_privs`, so set-uid programs cannot give privileges back;
//! - a cleared environment: `PATH`, `HOME` (the work dir), `LANG` and the job's own variables;
//! - stdin from `/dev/null`; stdout and stderr interleaved into one log, capped.
//!
//! [`isolation`] tells which of these this machine provides; the agent should log it at start.
//!
//! Not covered: CPU share and real memory use (cgroups); when the agent is not root, a script
//! that leaves its process group with `setsid` escapes the group kill (see [`run`]).

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::bundle::Manifest;

/// The only `PATH` a script sees.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Uid and gid scripts run as when the agent is root (`nobody`/`nogroup` on Debian).
pub const SANDBOX_UID: u32 = 65534;
/// Variables the sandbox sets itself; a job may not override them.
const RESERVED_ENV: &[&str] = &["PATH", "HOME", "LANG"];
/// System directories a Landlocked script may read and execute from.
const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt"];
/// Device files scripts commonly open (stdin itself is `/dev/null`).
const RW_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];
const RO_DEVICES: &[&str] = &["/dev/urandom", "/dev/random"];
/// How much of the output's end (and start) is kept in memory to explain a failure.
const TAIL_BYTES: usize = 8192;
const HEAD_BYTES: usize = 512;
/// How often the script's peak memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// After the job ends, how long the log may take to reach end-of-file before we stop reading.
const LOG_DRAIN_GRACE: Duration = Duration::from_secs(1);
/// First words of what [`child_main`] prints when it cannot set up the sandbox.
const SETUP_ERROR_PREFIX: &str = "[sandbox] error: ";

/// Kernel resource limits (setrlimit) applied to the script and each process it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// CPU seconds per process: SIGXCPU at this, SIGKILL one second later.
    pub cpu_secs: u64,
    /// Address space per process (RLIMIT_AS), in bytes.
    pub memory_bytes: u64,
    /// Largest file a process may write, in bytes.
    pub file_size_bytes: u64,
    /// Processes (and threads) of the sandbox uid, counted across all its jobs (RLIMIT_NPROC).
    pub max_processes: u64,
}

impl ResourceLimits {
    /// Largest file a script may write by default: 1 GiB.
    pub const DEFAULT_FILE_SIZE_BYTES: u64 = 1024 * 1024 * 1024;
    /// Processes and threads a script may have by default.
    pub const DEFAULT_MAX_PROCESSES: u64 = 256;
}

/// What a node's owner allows any script on their machine. A manifest asks for its limits;
/// these cut them down, so no manifest gets more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCaps {
    pub memory_bytes: u64,
    pub time_limit: Duration,
    /// What the work directory may hold (and the largest file a script may write).
    pub disk_bytes: u64,
    /// Scripts may reach the network; otherwise each runs in a network namespace of its own.
    pub network: bool,
}

impl Default for OwnerCaps {
    fn default() -> Self {
        OwnerCaps {
            memory_bytes: 4096 * 1024 * 1024,
            time_limit: Duration::from_secs(3600),
            disk_bytes: ResourceLimits::DEFAULT_FILE_SIZE_BYTES,
            network: false,
        }
    }
}

impl OwnerCaps {
    /// The manifest's limits within these caps: the wall-clock limit, the kernel limits, and a
    /// line for the job's log for each wish cut down.
    pub fn apply(&self, manifest: &Manifest) -> (Duration, ResourceLimits, Vec<String>) {
        let mut notes = Vec::new();
        let asked_memory = manifest.memory_mb.saturating_mul(1024 * 1024);
        if asked_memory > self.memory_bytes {
            notes.push(format!(
                "the manifest asks for {} of memory; this node allows {}",
                human_bytes(asked_memory),
                human_bytes(self.memory_bytes)
            ));
        }
        let asked_time = Duration::from_secs(manifest.time_limit_secs);
        if asked_time > self.time_limit {
            notes.push(format!("the manifest asks for {} s; this node allows {} s", asked_time.as_secs(), self.time_limit.as_secs_f64()));
        }
        let time_limit = asked_time.min(self.time_limit);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let limits = ResourceLimits {
            // Only catches runaway processes; the wall-clock limit is the real one.
            cpu_secs: time_limit.as_secs().max(1).saturating_mul(cores),
            memory_bytes: asked_memory.min(self.memory_bytes),
            file_size_bytes: ResourceLimits::DEFAULT_FILE_SIZE_BYTES.min(self.disk_bytes),
            max_processes: ResourceLimits::DEFAULT_MAX_PROCESSES,
        };
        (time_limit, limits, notes)
    }
}

/// Everything [`run`] needs for one script run.
#[derive(Debug, Clone)]
pub struct ScriptJob {
    /// Fresh directory with the extracted bundle; the command runs here. When the agent is root
    /// it is handed to uid 65534, and its parent directories must be searchable by others.
    pub workdir: PathBuf,
    /// From [`Manifest::argv`]. The first word is looked up in [`SANDBOX_PATH`] unless it has a `/`.
    pub argv: Vec<String>,
    /// The ONLY variables besides `PATH`, `HOME` (= workdir) and `LANG=C.UTF-8`. They pass through
    /// the launcher's command line, so they are briefly visible in the process table: no secrets.
    pub env: Vec<(String, String)>,
    /// Wall-clock limit.
    pub time_limit: Duration,
    pub limits: ResourceLimits,
    /// stdout and stderr go here, interleaved, capped.
    pub log_path: PathBuf,
    /// Beyond it the rest is dropped and a line "[log truncated at N bytes]" is appended.
    pub log_cap_bytes: u64,
    /// When the agent is root: the uid (and gid) this job runs as, which no other running job
    /// may have; every process left with it is killed when the job ends. `None`: [`SANDBOX_UID`],
    /// shared, and no such sweep.
    pub uid: Option<u32>,
    /// Reach the network (the owner allowed it); otherwise a network namespace of its own.
    pub network: bool,
    /// What the work directory may hold: past it (or past [`MAX_WORK_FILES`] entries) the job is
    /// killed.
    pub disk_bytes: u64,
    /// Lines written at the top of the log, e.g. limits the owner's caps cut down.
    pub notes: Vec<String>,
}

/// Files and directories a work directory may hold.
pub const MAX_WORK_FILES: u64 = 100_000;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exited on its own with this status (0 is success).
    Exited(i32),
    /// Exited with a non-zero status after hitting a sandbox limit, going by its output (e.g. a
    /// Python `MemoryError` under the memory limit).
    Failed { status: i32, reason: String },
    /// Killed by [`run`] at the wall-clock limit.
    TimedOut { limit: Duration },
    /// Killed by a signal; `reason` is a guess: SIGXCPU is the CPU limit, SIGXFSZ the file size
    /// limit, SIGKILL/SIGSEGV/SIGABRT/SIGBUS with signs of memory exhaustion the memory limit.
    Killed { signal: i32, reason: String },
    /// Killed because the caller cancelled the run.
    Cancelled,
}

impl Outcome {
    /// Whether the script did its job (exited with status 0).
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Exited(0))
    }

    /// One line for people: "exited with status 1", "killed: time limit of 5 s exceeded",
    /// "killed: memory limit of 64 MiB exceeded (MemoryError)".
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited(status) => format!("exited with status {status}"),
            Outcome::Failed { status, reason } => {
                format!("failed: {reason} (exited with status {status})")
            }
            Outcome::TimedOut { limit } => {
                format!("killed: time limit of {} s exceeded", limit.as_secs_f64())
            }
            Outcome::Killed { reason, .. } => format!("killed: {reason}"),
            Outcome::Cancelled => "cancelled".to_owned(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why [`run`] could not produce an [`Outcome`]: the platform's fault, not the script's.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("cannot open the log: {0}")]
    Log(#[source] io::Error),
    #[error("cannot start the sandbox launcher: {0}")]
    Spawn(#[source] io::Error),
    #[error("cannot wait for the script: {0}")]
    Wait(#[source] io::Error),
    /// The launcher started but could not set up the sandbox (message from [`child_main`]).
    #[error("sandbox setup failed: {0}")]
    Setup(String),
}

/// How much of the Landlock ruleset [`child_main`] asks for this kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockLevel {
    /// Not in the kernel, or not enabled: the file system is not restricted.
    Unavailable,
    /// File system restrictions, but not all (e.g. no signal scoping before Linux 6.12).
    Partial,
    /// Everything: file system, signal and abstract socket scoping.
    Full,
}

/// What isolation scripts get on this machine, for the agent to log at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// The agent is root, so scripts run as a uid/gid of their own ([`ScriptJob::uid`]).
    pub privilege_drop: bool,
    pub landlock: LandlockLevel,
}

impl Isolation {
    /// Whether something keeps a script away from files only the agent can read.
    pub fn protects_agent_files(&self) -> bool {
        self.privilege_drop || self.landlock != LandlockLevel::Unavailable
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uid = if self.privilege_drop {
            "scripts run as a uid of their own per job slot".to_owned()
        } else {
            "scripts run as the agent's user (not root, no privilege drop)".to_owned()
        };
        let landlock = match self.landlock {
            LandlockLevel::Full => "landlock enforced",
            LandlockLevel::Partial => "landlock partly enforced (old kernel)",
            LandlockLevel::Unavailable => "landlock unavailable: file system not restricted",
        };
        write!(f, "{uid}; {landlock}; resource limits and process-group kill on")?;
        if !self.protects_agent_files() {
            write!(f, "; WARNING: scripts can read every file the agent can")?;
        }
        Ok(())
    }
}

/// Whether scripts whose job directories live under `dir` can reach them: when the caller is
/// root they run as uid [`SANDBOX_UID`], which must be able to pass through every directory
/// above `dir` (`dir` itself is the caller's to open up). `Err` names the first one that blocks.
pub fn check_reachable_below(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor).map_err(|e| format!("{}: {e}", ancestor.display()))?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "`{}` is not searchable by others, so uid {SANDBOX_UID} cannot reach the job directories (chmod o+x it, or use another --work-dir)",
                ancestor.display()
            ));
        }
    }
    Ok(())
}

/// Probes what [`child_main`] will be able to enforce here. It does not restrict the caller.
pub fn isolation() -> Isolation {
    Isolation { privilege_drop: nix::unistd::geteuid().is_root(), landlock: landlock_level() }
}

/// Runs `job` sandboxed and waits for it.
///
/// `launcher` is a binary whose `launcher_args` lead to [`child_main`] with the rest of the
/// arguments (the agent passes `std::env::current_exe()` and `["__sandbox"]`). The launcher runs
/// in a new process group with an empty environment; at the wall-clock limit, when `cancel`
/// completes (pass `std::future::pending()` for never, or e.g. a `CancellationToken::cancelled()`
/// future), and also when the script exits on its own, the whole group gets SIGKILL, so nothing
/// the script started outlives the run. Dropping the returned future also kills the group.
///
/// The log is written as output arrives; a process that escaped the group (`setsid`) and keeps
/// the output open is noted in the log and the tracing output, and no longer read.
#[tracing::instrument(skip_all, fields(workdir = %job.workdir.display()))]
pub async fn run(
    launcher: &Path,
    launcher_args: &[&str],
    job: &ScriptJob,
    cancel: impl Future<Output = ()>,
) -> Result<Outcome, SandboxError> {
    let workdir = check_job(job)?;
    let mut log = tokio::fs::File::create(&job.log_path).await.map_err(SandboxError::Log)?;
    for note in &job.notes {
        log.write_all(format!("[sandbox] {note}\n").as_bytes()).await.map_err(SandboxError::Log)?;
    }
    // IMPORTANT: close-on-exec, so children other tasks of the agent spawn meanwhile do not
    // inherit the write end and keep the log open.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Spawn(e.into()))?;
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end).map_err(SandboxError::Spawn)?;

    let child = {
        let stderr_end: OwnedFd = write_end.try_clone().map_err(SandboxError::Spawn)?;
        let mut command = Command::new(launcher);
        command
            .args(launcher_args)
            .args(launcher_arguments(job, &workdir))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(stderr_end))
            .process_group(0);
        command.spawn().map_err(SandboxError::Spawn)?
        // `command` is dropped here, closing our copies of the write end: the log sees
        // end-of-file once the script's processes are gone.
    };
    let pgid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| SandboxError::Spawn(io::Error::other("bad pid")))?);
    let mut group = GroupGuard { pgid, armed: true };
    tracing::debug!(pid = pgid.as_raw(), "script started");

    let (exited_tx, mut exited) = oneshot::channel();
    let (reap_tx, reap_rx) = std::sync::mpsc::channel();
    let waiter = tokio::task::spawn_blocking(move || watch_child(child, pgid, exited_tx, reap_rx));
    let (stop_log, stop_log_rx) = oneshot::channel();
    let mut logger = tokio::spawn(copy_log(reader, log, job.log_cap_bytes, stop_log_rx));

    let deadline = tokio::time::sleep(job.time_limit);
    tokio::pin!(deadline, cancel);
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
    disk_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut peak_memory = 0u64;
    let mut disk_full = None;
    let ending = loop {
        tokio::select! {
            biased;
            _ = &mut exited => break Ending::Exited,
            () = &mut deadline => break Ending::TimedOut,
            () = &mut cancel => break Ending::Cancelled,
            _ = sample.tick() => peak_memory = peak_memory.max(vm_peak(pgid).unwrap_or(0)),
            _ = disk_check.tick() => {
                let (dir, cap) = (workdir.clone(), job.disk_bytes);
                if let Ok(Some(why)) = tokio::task::spawn_blocking(move || over_disk_cap(&dir, cap)).await {
                    disk_full = Some(why);
                    break Ending::DiskFull;
                }
            }
        }
    };
    group.kill();
    if ending != Ending::Exited {
        // The leader got SIGKILL just now; wait until it is a zombie.
        let _ = (&mut exited).await;
    }
    // Again, in case a fork raced the first kill; the unreaped leader keeps the group id ours.
    group.kill();
    // A process that left the group (`setsid`) still has the job's own uid.
    if let Some(uid) = job.uid.filter(|_| nix::unistd::geteuid().is_root()) {
        let swept = tokio::task::spawn_blocking(move || kill_processes_of(uid)).await.unwrap_or(0);
        if swept > 0 {
            tracing::info!(uid, swept, "killed the job's processes that had left its group");
        }
    }
    let _ = reap_tx.send(());
    let status = waiter.await.map_err(|e| SandboxError::Wait(io::Error::other(e)))?.map_err(SandboxError::Wait)?;
    group.armed = false;

    let summary = match tokio::time::timeout(LOG_DRAIN_GRACE, &mut logger).await {
        Ok(joined) => joined,
        Err(_) => {
            tracing::warn!("output still open after the script ended: a process left its group");
            let _ = stop_log.send(());
            logger.await
        }
    };
    let summary = summary.map_err(|e| SandboxError::Log(io::Error::other(e)))?.map_err(SandboxError::Log)?;

    let outcome = match disk_full {
        Some(reason) => Outcome::Killed { signal: Signal::SIGKILL as i32, reason },
        None => classify(ending, status, &summary, peak_memory, job),
    };
    if let Outcome::Exited(127) = outcome {
        let head = String::from_utf8_lossy(&summary.head);
        if let Some(message) = head.lines().find_map(|l| l.strip_prefix(SETUP_ERROR_PREFIX)) {
            return Err(SandboxError::Setup(message.to_owned()));
        }
    }
    tracing::debug!(outcome = %outcome, "script ended");
    Ok(outcome)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
    DiskFull,
}

/// How often the work directory's size is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the work directory is over its cap (bytes on disk, or entries), if it is. Links are not
/// followed; the walk stops once the entry cap is passed, so a hostile tree cannot stall it.
fn over_disk_cap(dir: &Path, cap_bytes: u64) -> Option<String> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&next) else { continue };
        for entry in listing.flatten() {
            entries += 1;
            if entries > MAX_WORK_FILES {
                return Some(format!("file count limit of {MAX_WORK_FILES} exceeded in the work directory"));
            }
            let Ok(meta) = entry.metadata() else { continue };
            // Blocks, not the length: a sparse file takes no room.
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
        if bytes > cap_bytes {
            return Some(format!("disk limit of {} exceeded (the work directory holds {})", human_bytes(cap_bytes), human_bytes(bytes)));
        }
    }
    None
}

/// Sends SIGKILL to every process whose real, effective or saved uid is `uid`; returns how many.
fn kill_processes_of(uid: u32) -> usize {
    let Ok(proc) = std::fs::read_dir("/proc") else { return 0 };
    let mut killed = 0;
    for entry in proc.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let owned = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().take(3).any(|id| id.parse() == Ok(uid)));
        if owned && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Kills the script's process group when dropped, so an abandoned [`run`] leaves nothing behind.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        // ESRCH only means nobody is left.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// Blocking: waits until the leader has exited WITHOUT reaping it (so its pid, which is the group
/// id, cannot be reused while we still kill the group), reports that, then reaps it once `run`
/// says so (or `run` was dropped).
fn watch_child(
    mut child: std::process::Child,
    pgid: Pid,
    exited: oneshot::Sender<()>,
    reap: std::sync::mpsc::Receiver<()>,
) -> io::Result<ExitStatus> {
    // Any error but EINTR: go on; `wait` below reports it.
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pgid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {}
    let _ = exited.send(());
    let _ = reap.recv();
    let _ = killpg(pgid, Signal::SIGKILL);
    child.wait()
}

/// Peak virtual memory of the script's main process, from /proc (None once it is gone).
fn vm_peak(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the log copier saw.
struct LogSummary {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Copies the script's output into the log until end-of-file (or `stop`), keeping the first
/// `cap` bytes, then notes the truncation.
async fn copy_log(
    mut reader: tokio::net::unix::pipe::Receiver,
    mut log: tokio::fs::File,
    cap: u64,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<LogSummary> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut written: u64 = 0;
    let mut truncated = false;
    let mut last_written = b'\n';
    let mut head = Vec::with_capacity(HEAD_BYTES);
    let mut tail = Vec::with_capacity(2 * TAIL_BYTES);
    let mut escaped = false;
    loop {
        let n = tokio::select! {
            biased;
            _ = &mut stop => { escaped = true; break }
            read = reader.read(&mut buf) => match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            },
        };
        let chunk = &buf[..n];
        let keep = usize::try_from(cap.saturating_sub(written)).unwrap_or(usize::MAX).min(n);
        if keep > 0 {
            log.write_all(&chunk[..keep]).await?;
            written += keep as u64;
            last_written = chunk[keep - 1];
        }
        truncated |= keep < n;
        let head_room = HEAD_BYTES.saturating_sub(head.len()).min(n);
        head.extend_from_slice(&chunk[..head_room]);
        tail.extend_from_slice(chunk);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    let newline = if last_written == b'\n' { "" } else { "\n" };
    if truncated {
        log.write_all(format!("{newline}[log truncated at {cap} bytes]\n").as_bytes()).await?;
    }
    if escaped {
        log.write_all(b"[sandbox] output still open after the script ended (a process left its group); stopped reading\n").await?;
    }
    log.flush().await?;
    if tail.len() > TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
    }
    Ok(LogSummary { head, tail })
}

/// Turns how the run ended into an [`Outcome`], guessing which limit was hit from the signal,
/// the end of the output and the sampled peak memory.
fn classify(ending: Ending, status: ExitStatus, log: &LogSummary, peak_memory: u64, job: &ScriptJob) -> Outcome {
    match ending {
        Ending::TimedOut => return Outcome::TimedOut { limit: job.time_limit },
        Ending::Cancelled => return Outcome::Cancelled,
        Ending::Exited | Ending::DiskFull => {}
    }
    let tail = String::from_utf8_lossy(&log.tail);
    let limits = &job.limits;
    let memory_reason = |detail: &str| format!("memory limit of {} exceeded ({detail})", human_bytes(limits.memory_bytes));
    let memory_marker = MEMORY_MARKERS.iter().find(|m| tail.contains(*m));
    if let Some(code) = status.code() {
        if code == 0 {
            return Outcome::Exited(0);
        }
        let reason = if let Some(marker) = memory_marker {
            Some(memory_reason(marker))
        } else if tail.contains("File too large") {
            Some(format!("file size limit of {} exceeded (File too large)", human_bytes(limits.file_size_bytes)))
        } else {
            PROCESS_MARKERS
                .iter()
                .find(|m| tail.contains(*m))
                .map(|marker| format!("process limit of {} reached ({marker})", limits.max_processes))
        };
        return match reason {
            Some(reason) => Outcome::Failed { status: code, reason },
            None => Outcome::Exited(code),
        };
    }
    let signal = status.signal().unwrap_or(0);
    let name = Signal::try_from(signal).map_or("unknown signal", Signal::as_str);
    let near_memory_limit = peak_memory >= limits.memory_bytes / 10 * 9;
    let reason = match Signal::try_from(signal) {
        Ok(Signal::SIGXCPU) => {
            format!("cpu time limit of {} s exceeded (SIGXCPU)", limits.cpu_secs)
        }
        Ok(Signal::SIGXFSZ) => format!("file size limit of {} exceeded (SIGXFSZ)", human_bytes(limits.file_size_bytes)),
        Ok(Signal::SIGKILL | Signal::SIGSEGV | Signal::SIGABRT | Signal::SIGBUS) if memory_marker.is_some() || near_memory_limit => {
            let detail = match memory_marker {
                Some(marker) => format!("{name}, {marker}"),
                None => format!("{name}, peak {}", human_bytes(peak_memory)),
            };
            memory_reason(&detail)
        }
        _ => format!("signal {signal} ({name})"),
    };
    Outcome::Killed { signal, reason }
}

/// What runtimes print when an allocation fails under RLIMIT_AS.
const MEMORY_MARKERS: &[&str] =
    &["MemoryError", "Cannot allocate memory", "std::bad_alloc", "memory allocation of", "out of memory", "Out of memory"];
/// What runtimes print when `fork` fails under RLIMIT_NPROC.
const PROCESS_MARKERS: &[&str] = &["Resource temporarily unavailable", "Cannot fork", "can't fork"];

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        if n.is_multiple_of(MIB) {
            format!("{} MiB", n / MIB)
        } else {
            format!("{:.1} MiB", n as f64 / MIB as f64)
        }
    } else {
        format!("{n} bytes")
    }
}

/// Checks the job and returns the absolute work dir.
fn check_job(job: &ScriptJob) -> Result<PathBuf, SandboxError> {
    let invalid = |msg: String| Err(SandboxError::InvalidJob(msg));
    if job.argv.is_empty() || job.argv[0].is_empty() {
        return invalid("empty command".to_owned());
    }
    for (key, value) in &job.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return invalid(format!("bad environment variable `{key}`"));
        }
        if RESERVED_ENV.contains(&key.as_str()) {
            return invalid(format!("environment variable `{key}` is set by the sandbox"));
        }
    }
    if job.argv.iter().any(|a| a.contains('\0')) {
        return invalid("argument with a NUL byte".to_owned());
    }
    let workdir = std::fs::canonicalize(&job.workdir).map_err(|e| SandboxError::InvalidJob(format!("work dir: {e}")))?;
    if !workdir.is_dir() {
        return invalid(format!("work dir `{}` is not a directory", workdir.display()));
    }
    Ok(workdir)
}

// The launcher's command line; `ChildSpec::parse` reads it back.
const ARG_WORKDIR: &str = "--workdir";
const ARG_CPU: &str = "--cpu-secs";
const ARG_MEMORY: &str = "--memory-bytes";
const ARG_FILE_SIZE: &str = "--file-size-bytes";
const ARG_PROCESSES: &str = "--max-processes";
const ARG_ENV: &str = "--env";
const ARG_UID: &str = "--uid";
const ARG_NETWORK: &str = "--network";
const ARG_COMMAND: &str = "--";

fn launcher_arguments(job: &ScriptJob, workdir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![ARG_WORKDIR.into(), workdir.into()];
    for (flag, value) in [
        (ARG_CPU, job.limits.cpu_secs),
        (ARG_MEMORY, job.limits.memory_bytes),
        (ARG_FILE_SIZE, job.limits.file_size_bytes),
        (ARG_PROCESSES, job.limits.max_processes),
    ] {
        args.push(flag.into());
        args.push(value.to_string().into());
    }
    for (key, value) in &job.env {
        args.push(ARG_ENV.into());
        args.push(format!("{key}={value}").into());
    }
    args.push(ARG_UID.into());
    args.push(job.uid.unwrap_or(SANDBOX_UID).to_string().into());
    args.push(ARG_NETWORK.into());
    args.push(if job.network { "on" } else { "off" }.into());
    args.push(ARG_COMMAND.into());
    args.extend(job.argv.iter().map(OsString::from));
    args
}

/// What [`child_main`] was asked to do.
#[derive(Debug, PartialEq)]
struct ChildSpec {
    workdir: PathBuf,
    limits: ResourceLimits,
    env: Vec<(OsString, OsString)>,
    argv: Vec<OsString>,
    uid: u32,
    network: bool,
}

impl ChildSpec {
    fn parse(args: Vec<OsString>) -> Result<ChildSpec, String> {
        let mut args = args.into_iter();
        let mut workdir = None;
        let mut limits = [None; 4];
        let mut env = Vec::new();
        let (mut uid, mut network) = (None, None);
        loop {
            let flag = args.next().ok_or("missing `--` before the command")?;
            if flag == ARG_COMMAND {
                break;
            }
            let value = args.next().ok_or_else(|| format!("missing value for {flag:?}"))?;
            let number = || value.to_str().and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format!("bad value {value:?} for {flag:?}"));
            match flag.to_str() {
                Some(ARG_WORKDIR) => workdir = Some(PathBuf::from(&value)),
                Some(ARG_CPU) => limits[0] = Some(number()?),
                Some(ARG_MEMORY) => limits[1] = Some(number()?),
                Some(ARG_FILE_SIZE) => limits[2] = Some(number()?),
                Some(ARG_PROCESSES) => limits[3] = Some(number()?),
                Some(ARG_UID) => uid = Some(u32::try_from(number()?).map_err(|_| format!("bad uid {value:?}"))?),
                Some(ARG_NETWORK) => {
                    network = Some(match value.to_str() {
                        Some("on") => true,
                        Some("off") => false,
                        _ => return Err(format!("bad value {value:?} for {flag:?}")),
                    })
                }
                Some(ARG_ENV) => {
                    let bytes = value.as_bytes();
                    let eq = bytes.iter().position(|b| *b == b'=').ok_or_else(|| format!("bad environment variable {value:?}"))?;
                    env.push((OsStr::from_bytes(&bytes[..eq]).to_owned(), OsStr::from_bytes(&bytes[eq + 1..]).to_owned()));
                }
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }
        let argv: Vec<OsString> = args.collect();
        let [Some(cpu_secs), Some(memory_bytes), Some(file_size_bytes), Some(max_processes)] = limits else {
            return Err("missing a resource limit".to_owned());
        };
        if argv.is_empty() {
            return Err("missing command".to_owned());
        }
        Ok(ChildSpec {
            workdir: workdir.ok_or("missing --workdir")?,
            limits: ResourceLimits { cpu_secs, memory_bytes, file_size_bytes, max_processes },
            env,
            argv,
            uid: uid.ok_or("missing --uid")?,
            network: network.ok_or("missing --network")?,
        })
    }
}

/// Entry point of the re-executed launcher; call it first thing in `main`, before any runtime or
/// thread starts. It parses the arguments [`run`] passed (after the launcher's own), then:
///
/// 1. sets the resource limits (CPU, address space, file size, processes; no core dumps);
/// 2. changes to the work dir (while still root, so private parent directories are no obstacle);
/// 3. unless the network is allowed: enters a network namespace of its own (inside a user
///    namespace of its own when not root, which maps only the caller's uid and gid);
/// 4. if root: hands the work dir to the job's uid/gid and becomes that user, with no groups;
/// 5. asks to be killed when the agent dies (a killed agent leaves no script running that nobody
///    watches: its attempt is moved to another node), sets `no_new_privs` and applies the
///    Landlock ruleset, best effort (a line on stderr, hence in the log, says when the kernel
///    cannot enforce it all);
/// 6. `exec`s the command with stdin from `/dev/null` and only the allowed variables.
///
/// It never returns: on failure it prints `[sandbox] error: …` to stderr and exits with 127.
pub fn child_main(args: Vec<OsString>) -> ! {
    match sandbox_and_exec(args) {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("{SETUP_ERROR_PREFIX}{message}");
            std::process::exit(127)
        }
    }
}

fn sandbox_and_exec(args: Vec<OsString>) -> Result<Infallible, String> {
    let parent = nix::unistd::getppid();
    let spec = ChildSpec::parse(args)?;
    set_resource_limits(&spec.limits)?;
    std::env::set_current_dir(&spec.workdir).map_err(|e| format!("cannot enter the work dir `{}`: {e}", spec.workdir.display()))?;
    let root = nix::unistd::geteuid().is_root();
    if !spec.network {
        leave_the_network(root)?;
    }
    if root {
        drop_privileges(&spec.workdir, spec.uid)?;
    }
    // After the uid change, which clears it; it survives the exec.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| format!("cannot tie the job to the agent: {e}"))?;
    if nix::unistd::getppid() != parent {
        return Err("the agent exited before the job started".into());
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    match restrict_file_system() {
        Ok(landlock::RulesetStatus::FullyEnforced) => {}
        Ok(landlock::RulesetStatus::PartiallyEnforced) => {
            eprintln!("[sandbox] warning: this kernel enforces only part of the landlock rules")
        }
        Ok(landlock::RulesetStatus::NotEnforced) => {
            eprintln!("[sandbox] warning: landlock unavailable; the file system is not restricted")
        }
        Err(e) => return Err(format!("cannot apply the landlock rules: {e}")),
    }

    let program = find_program(&spec.argv[0])?;
    let home = spec.workdir.as_os_str();
    let error = Command::new(&program)
        .arg0(&spec.argv[0])
        .args(&spec.argv[1..])
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .exec();
    Err(format!("cannot run `{}`: {error}", program.display()))
}

/// `value` as a resource limit: saturated where `rlim_t` is 32 bits (armv7 glibc), where
/// `u32::MAX` is `RLIM_INFINITY` and a 32-bit process cannot use more anyway.
pub(crate) fn rlim(value: u64) -> nix::sys::resource::rlim_t {
    nix::sys::resource::rlim_t::try_from(value).unwrap_or(nix::sys::resource::rlim_t::MAX)
}

fn set_resource_limits(limits: &ResourceLimits) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // (resource, soft, hard). The CPU hard limit is one second later, so the script first gets
    // SIGXCPU, which names the reason, and SIGKILL only if it ignores that.
    let wanted = [
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs.saturating_add(1)),
        (Resource::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (Resource::RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (Resource::RLIMIT_NPROC, limits.max_processes, limits.max_processes),
    ];
    for (resource, soft, hard) in wanted {
        let (soft, hard) = (rlim(soft), rlim(hard));
        // Without privileges a hard limit can only go down: keep the lower of the two.
        let (_, current_hard) = getrlimit(resource).map_err(|e| format!("cannot read {resource:?}: {e}"))?;
        let hard = hard.min(current_hard);
        setrlimit(resource, soft.min(hard), hard).map_err(|e| format!("cannot set {resource:?}: {e}"))?;
    }
    Ok(())
}

/// A network namespace of its own, where no interface is up: no loopback, no LAN, no internet.
/// Root may create one directly; anyone else needs a user namespace first, in which the caller
/// keeps its own uid and gid (so files it writes are its own, and `exec` drops the namespace's
/// capabilities).
fn leave_the_network(root: bool) -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    let why = |e: nix::Error| {
        format!(
            "cannot give the script a network namespace of its own ({e}); the node's owner may \
             allow scripts the network instead (node-agent --script-network)"
        )
    };
    if root {
        return unshare(CloneFlags::CLONE_NEWNET).map_err(why);
    }
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(why)?;
    let map =
        |file: &str, text: String| std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("cannot write {file}: {e}"));
    map("setgroups", "deny".into())?;
    map("uid_map", format!("{uid} {uid} 1"))?;
    map("gid_map", format!("{gid} {gid} 1"))
}

/// Gives the work dir to the job's user, then becomes it for good.
fn drop_privileges(workdir: &Path, id: u32) -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(id), Gid::from_raw(id));
    give_away(Path::new("."), id).map_err(|e| format!("cannot hand the work dir to uid {id}: {e}"))?;
    setgroups(&[]).map_err(|e| format!("cannot drop supplementary groups: {e}"))?;
    setresgid(gid, gid, gid).map_err(|e| format!("cannot set gid {id}: {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("cannot set uid {id}: {e}"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("could regain root after dropping privileges".to_owned());
    }
    // HOME and absolute paths must work too (e.g. Python puts the script's absolute directory on
    // sys.path): refuse clearly rather than fail later in odd ways.
    std::fs::metadata(workdir).map_err(|e| {
        format!(
            "the work dir `{}` is not reachable by uid {id} ({e}); make its parent \
             directories searchable by others",
            workdir.display()
        )
    })?;
    Ok(())
}

/// `chown -R` without following links; files with other hard links stay as they are, so the
/// script cannot be handed a file that lives elsewhere too.
fn give_away(path: &Path, id: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_away(&entry?.path(), id)?;
        }
    } else if meta.nlink() > 1 || meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(id), Some(id))?;
    if meta.is_dir() {
        // The owner must be able to work in it whatever mode the agent created it with.
        let mode = meta.permissions().mode() | 0o700;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Landlock ABI whose rights the ruleset uses; newer kernels enforce exactly these.
const LANDLOCK_ABI: landlock::ABI = landlock::ABI::V6;

/// Read+execute on the system, read-write on the current (work) dir, nothing else; no signals
/// or abstract sockets outside the sandbox. Best effort: degrades on kernels without Landlock.
fn restrict_file_system() -> Result<landlock::RulesetStatus, String> {
    use landlock::{path_beneath_rules, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope};
    let abi = LANDLOCK_ABI;
    let device_rw = AccessFs::from_file(abi) & !AccessFs::Execute;
    // Opened by descriptor: the work dir's own path may not be reachable (see drop_privileges).
    let workdir = PathFd::new(".").map_err(|e| e.to_string())?;
    let ruleset = || -> Result<_, landlock::RulesetError> {
        Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(SYSTEM_DIRS, AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(RW_DEVICES, device_rw))?
            .add_rules(path_beneath_rules(RO_DEVICES, AccessFs::ReadFile))?
            .add_rule(PathBeneath::new(workdir, AccessFs::from_all(abi)))?
            .restrict_self()
    };
    Ok(ruleset().map_err(|e| e.to_string())?.ruleset)
}

/// Whether the kernel can enforce the ruleset of [`restrict_file_system`], wholly or in part.
fn landlock_level() -> LandlockLevel {
    use landlock::{Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope, ABI};
    let full = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.create());
    if full.is_ok() {
        return LandlockLevel::Full;
    }
    let basic = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create());
    if basic.is_ok() {
        LandlockLevel::Partial
    } else {
        LandlockLevel::Unavailable
    }
}

/// Resolves the command in [`SANDBOX_PATH`] (a name with a `/` is taken as it is).
fn find_program(name: &OsStr) -> Result<PathBuf, String> {
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    SANDBOX_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| format!("`{}` not found in {SANDBOX_PATH}", name.to_string_lossy()))
}

/// Opens what a script wrote at `relative` (its manifest's `output`) inside `workdir` without
/// following a link anywhere on the way: every directory on the path must be a real directory
/// and the file a regular file, opened with `O_NOFOLLOW` (and `O_NONBLOCK`, so a FIFO cannot
/// hang the agent). A script that makes its output a link to a file of the machine (the agent's
/// state, a server secret) gets an error, never that file. `relative` is a checked manifest
/// path (no `..`, not absolute).
pub fn open_output(workdir: &Path, relative: &str) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("the output `{relative}` {why}"));
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    let Some((file, dirs)) = parts.split_last() else { return Err(refuse("is empty")) };
    let mut path = workdir.to_path_buf();
    for dir in dirs {
        if *dir == ".." {
            return Err(refuse("leaves the work directory"));
        }
        path.push(dir);
        if !std::fs::symlink_metadata(&path)?.file_type().is_dir() {
            return Err(refuse("passes through a link or a file"));
        }
    }
    path.push(file);
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(&path).map_err(|e| {
        // ELOOP: the last component is a link.
        if e.raw_os_error() == Some(nix::libc::ELOOP) {
            refuse("is a link")
        } else {
            e
        }
    })?;
    if !opened.metadata()?.file_type().is_file() {
        return Err(refuse("is not a regular file"));
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {

    #[test]
    fn outputs_are_read_without_following_links() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("out")).unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "the agent's key").unwrap();
        std::fs::write(work.join("out/p.csv"), "a\n1\n").unwrap();
        let mut text = String::new();
        open_output(&work, "out/p.csv").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "a\n1\n");

        // The output itself a link, relative or absolute; a directory on the way a link; a
        // directory; a FIFO: each refused, and the secret never read.
        std::os::unix::fs::symlink("../secret.txt", work.join("rel.csv")).unwrap();
        std::os::unix::fs::symlink(&secret, work.join("abs.csv")).unwrap();
        std::os::unix::fs::symlink(dir.path(), work.join("up")).unwrap();
        nix::unistd::mkfifo(&work.join("fifo.csv"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        for name in ["rel.csv", "abs.csv", "up/secret.txt", "out", "fifo.csv", "../secret.txt"] {
            let err = open_output(&work, name).unwrap_err();
            assert!(!err.to_string().contains("agent's key"), "{name}: {err}");
        }
        assert!(open_output(&work, "missing.csv").is_err());
    }

    use super::*;

    fn job() -> ScriptJob {
        ScriptJob {
            workdir: PathBuf::from("/tmp"),
            argv: vec!["python3".into(), "a b.py".into()],
            env: vec![("INPUT".into(), "x=y".into())],
            time_limit: Duration::from_secs(5),
            limits: ResourceLimits { cpu_secs: 5, memory_bytes: 64 << 20, file_size_bytes: 1 << 20, max_processes: 32 },
            log_path: PathBuf::from("/tmp/log"),
            log_cap_bytes: 100,
            uid: Some(70_000),
            network: false,
            disk_bytes: 1 << 30,
            notes: Vec::new(),
        }
    }

    #[test]
    fn launcher_arguments_round_trip() {
        let job = job();
        let spec = ChildSpec::parse(launcher_arguments(&job, &job.workdir)).unwrap();
        assert_eq!(spec.workdir, job.workdir);
        assert_eq!(spec.limits, job.limits);
        assert_eq!(spec.env, vec![(OsString::from("INPUT"), OsString::from("x=y"))]);
        assert_eq!(spec.argv, vec![OsString::from("python3"), OsString::from("a b.py")]);
        assert_eq!((spec.uid, spec.network), (70_000, false));
    }

    #[test]
    fn owner_caps_cut_down_what_a_manifest_asks() {
        let manifest = |memory_mb, time_limit_secs| Manifest {
            memory_mb,
            time_limit_secs,
            ..Manifest::parse("entry = \"python3 a.py\"\nruntime = \"python3\"\noutput = \"o.csv\"\n").unwrap()
        };
        let caps = OwnerCaps { memory_bytes: 256 << 20, time_limit: Duration::from_secs(60), disk_bytes: 8 << 20, network: false };
        let (time, limits, notes) = caps.apply(&manifest(1 << 20, 86_400));
        assert_eq!((time, limits.memory_bytes, limits.file_size_bytes), (Duration::from_secs(60), 256 << 20, 8 << 20));
        assert_eq!(
            notes,
            [
                "the manifest asks for 1048576 MiB of memory; this node allows 256 MiB",
                "the manifest asks for 86400 s; this node allows 60 s"
            ]
        );
        let (time, limits, notes) = caps.apply(&manifest(64, 5));
        assert_eq!((time, limits.memory_bytes), (Duration::from_secs(5), 64 << 20));
        assert!(notes.is_empty());
    }

    #[test]
    fn reserved_env_refused() {
        let mut job = job();
        job.env.push(("PATH".into(), "/evil".into()));
        assert!(matches!(check_job(&job), Err(SandboxError::InvalidJob(_))));
    }

    #[test]
    fn descriptions() {
        assert_eq!(Outcome::Exited(1).describe(), "exited with status 1");
        assert_eq!(Outcome::TimedOut { limit: Duration::from_secs(5) }.describe(), "killed: time limit of 5 s exceeded");
        let log = LogSummary { head: vec![], tail: b"MemoryError\n".to_vec() };
        let killed = classify(Ending::Exited, ExitStatus::from_raw(6), &log, 0, &job());
        assert_eq!(killed.describe(), "killed: memory limit of 64 MiB exceeded (SIGABRT, MemoryError)");
    }
}
