//! The sandbox with real processes: python3 scripts run through the `sandbox-launcher` test bin,
//! the same re-exec path the agent uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runner::sandbox::{isolation, run, LandlockLevel, Outcome, ResourceLimits, SandboxError, ScriptJob};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;

fn launcher() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sandbox-launcher"))
}

/// A work dir holding `script.py`, reachable (but not writable) by others like an agent's job
/// directory, and a job that runs it with generous limits.
fn job_for(script: &str) -> (TempDir, ScriptJob) {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let workdir = root.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    std::fs::write(workdir.join("script.py"), script).unwrap();
    let job = ScriptJob {
        workdir,
        argv: vec!["python3".into(), "script.py".into()],
        env: vec![("AIEDGE_INPUT".into(), "input.csv".into())],
        time_limit: Duration::from_secs(30),
        limits: ResourceLimits { cpu_secs: 30, memory_bytes: 512 * MIB, file_size_bytes: 64 * MIB, max_processes: 512 },
        log_path: root.path().join("job.log"),
        log_cap_bytes: MIB,
        uid: None,
        network: false,
        disk_bytes: 64 * MIB,
        notes: Vec::new(),
    };
    (root, job)
}

async fn run_to_end(job: &ScriptJob) -> Outcome {
    run(launcher(), &[], job, std::future::pending()).await.unwrap()
}

fn log_of(job: &ScriptJob) -> String {
    std::fs::read_to_string(&job.log_path).unwrap()
}

/// Whether `pid` is gone (or only a zombie nobody has reaped yet).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().unwrap().trim_start().starts_with('Z'),
    }
}

#[tokio::test]
async fn script_writes_its_output_and_exits_zero() {
    let (_root, job) = job_for(
        "import os\n\
         print('hello from the script')\n\
         with open('predictions.csv', 'w') as f:\n    f.write('id,label\\n1,cat\\n')\n\
         print('uid', os.getuid())\n",
    );
    let outcome = run_to_end(&job).await;
    let log = log_of(&job);
    assert_eq!(outcome, Outcome::Exited(0), "{log}");
    assert!(outcome.success());
    assert_eq!(std::fs::read_to_string(job.workdir.join("predictions.csv")).unwrap(), "id,label\n1,cat\n");
    assert!(log.contains("hello from the script"), "{log}");
    if isolation().privilege_drop {
        assert!(log.contains("uid 65534"), "{log}");
    }
}

#[tokio::test]
async fn non_zero_exit_is_reported_with_stderr_in_the_log() {
    let (_root, job) = job_for("import sys\nprint('it went wrong', file=sys.stderr)\nsys.exit(3)\n");
    let outcome = run_to_end(&job).await;
    assert_eq!(outcome, Outcome::Exited(3));
    assert_eq!(outcome.describe(), "exited with status 3");
    assert!(log_of(&job).contains("it went wrong"));
}

#[tokio::test]
async fn infinite_loop_hits_the_time_limit() {
    let (_root, mut job) = job_for("while True:\n    pass\n");
    job.time_limit = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = run_to_end(&job).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, Outcome::TimedOut { limit: Duration::from_secs(1) });
    assert_eq!(outcome.describe(), "killed: time limit of 1 s exceeded");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn memory_hog_fails_with_a_memory_reason() {
    let (_root, mut job) = job_for("data = bytearray(2 * 1024 ** 3)\nprint('allocated')\n");
    job.limits.memory_bytes = 64 * MIB;
    let outcome = run_to_end(&job).await;
    let log = log_of(&job);
    assert!(!log.contains("allocated"), "{log}");
    assert!(outcome.describe().contains("memory limit of 64 MiB exceeded (MemoryError)"), "{outcome:?}");
    assert!(matches!(outcome, Outcome::Failed { status: 1, .. }), "{outcome:?}");
}

#[tokio::test]
async fn cpu_limit_sends_sigxcpu() {
    let (_root, mut job) = job_for("while True:\n    pass\n");
    job.limits.cpu_secs = 1;
    job.time_limit = Duration::from_secs(20);
    let started = Instant::now();
    let outcome = run_to_end(&job).await;
    assert!(matches!(&outcome, Outcome::Killed { signal: 24, reason } if reason.contains("cpu time limit of 1 s")), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn environment_is_cleared() {
    let (_root, job) = job_for("import json, os\nwith open('env.json', 'w') as f:\n    json.dump(dict(os.environ), f)\n");
    // Something the test process has that must not leak.
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0), "{}", log_of(&job));
    let env: std::collections::BTreeMap<String, String> = serde_json_lite(&std::fs::read_to_string(job.workdir.join("env.json")).unwrap());
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(keys, ["AIEDGE_INPUT", "HOME", "LANG", "PATH"]);
    assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["AIEDGE_INPUT"], "input.csv");
    assert_eq!(Path::new(&env["HOME"]), std::fs::canonicalize(&job.workdir).unwrap());
}

/// Parses the flat `{"k": "v", ...}` object Python's json.dump writes for os.environ (string
/// values, no nesting), to keep serde_json out of this crate's dev-dependencies.
fn serde_json_lite(text: &str) -> std::collections::BTreeMap<String, String> {
    let fields = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut map = std::collections::BTreeMap::new();
    for pair in fields.split("\", \"") {
        let (k, v) = pair.split_once("\": \"").unwrap();
        map.insert(k.trim_matches('"').to_owned(), v.trim_matches('"').replace("\\\\", "\\"));
    }
    map
}

/// A directory outside the work dir, searchable by everyone, holding `name` with `mode`.
fn outside_file(name: &str, mode: u32) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, "TOP-SECRET-TOKEN").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

fn read_attempt_script(path: &Path) -> String {
    format!("try:\n    print('READ', open({path:?}).read())\nexcept OSError as e:\n    print('DENIED', type(e).__name__)\n")
}

#[tokio::test]
async fn script_cannot_read_the_agents_private_files() {
    let isolation = isolation();
    println!("isolation: {isolation}");
    // The agent's state file: mode 0600, owned by the agent's user (root here).
    let (_secret_dir, secret) = outside_file("state.json", 0o600);
    let (_root, job) = job_for(&read_attempt_script(&secret));
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0));
    let log = log_of(&job);
    if !isolation.protects_agent_files() {
        eprintln!("SKIPPED: neither a privilege drop nor landlock on this machine");
        return;
    }
    assert!(log.contains("DENIED PermissionError"), "{log}");
    assert!(!log.contains("TOP-SECRET"), "{log}");
}

#[tokio::test]
async fn landlock_confines_the_script_to_its_work_dir() {
    if isolation().landlock == LandlockLevel::Unavailable {
        eprintln!("SKIPPED: no landlock on this kernel");
        return;
    }
    // World-readable, so only landlock stands in the way.
    let (_dir, public) = outside_file("public.txt", 0o644);
    let script = format!(
        "{}\ntry:\n    open('/tmp/escaped.txt', 'w')\n    print('WROTE /tmp')\nexcept OSError as e:\n    print('NO WRITE', type(e).__name__)\nopen('inside.txt', 'w').write('ok')\n",
        read_attempt_script(&public)
    );
    let (_root, job) = job_for(&script);
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0), "{}", log_of(&job));
    let log = log_of(&job);
    assert!(log.contains("DENIED PermissionError"), "{log}");
    assert!(log.contains("NO WRITE PermissionError"), "{log}");
    assert_eq!(std::fs::read_to_string(job.workdir.join("inside.txt")).unwrap(), "ok");
}

#[tokio::test]
async fn process_limit_stops_a_fork_bomb_and_leftovers_are_killed() {
    let (_root, mut job) = job_for(
        "import subprocess\n\
         children = []\n\
         try:\n\
         \x20   for i in range(64):\n\
         \x20       children.append(subprocess.Popen(['sleep', '30']))\n\
         \x20   print('SPAWNED ALL')\n\
         except OSError as e:\n\
         \x20   print('FORK FAILED after', len(children), type(e).__name__)\n\
         open('pids.txt', 'w').write(' '.join(str(c.pid) for c in children))\n",
    );
    job.limits.max_processes = 8;
    let outcome = run_to_end(&job).await;
    let log = log_of(&job);
    assert_eq!(outcome, Outcome::Exited(0), "{log}");
    assert!(log.contains("FORK FAILED after"), "{log}");
    assert!(!log.contains("SPAWNED ALL"), "{log}");
    // The script exited leaving its `sleep`s behind: the group kill got them.
    let pids = std::fs::read_to_string(job.workdir.join("pids.txt")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for pid in pids.split_whitespace() {
        assert!(is_dead(pid.parse().unwrap()), "sleep {pid} survived");
    }
}

#[tokio::test]
async fn log_is_capped() {
    let (_root, mut job) = job_for("for i in range(2000):\n    print('x' * 99)\n");
    // Ten lines of 100 bytes, then ten bytes of the eleventh.
    job.log_cap_bytes = 1010;
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0));
    let log = log_of(&job);
    let note = "\n[log truncated at 1010 bytes]\n";
    assert_eq!(log.len(), 1010 + note.len(), "{log}");
    assert!(log.starts_with(&"x".repeat(99)));
    assert!(log.ends_with(&format!("x\n{}{note}", "x".repeat(10))), "{log}");
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let (_root, job) = job_for(
        "import subprocess, time\n\
         child = subprocess.Popen(['sleep', '100'])\n\
         open('pids.tmp', 'w').write(f'{child.pid}')\n\
         import os; os.rename('pids.tmp', 'pids.txt')\n\
         time.sleep(100)\n",
    );
    let pid_file = job.workdir.join("pids.txt");
    let cancel = {
        let pid_file = pid_file.clone();
        async move {
            while !pid_file.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let started = Instant::now();
    let outcome = run(launcher(), &[], &job, cancel).await.unwrap();
    assert_eq!(outcome, Outcome::Cancelled, "{}", log_of(&job));
    assert!(started.elapsed() < Duration::from_secs(10));
    let sleep_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(is_dead(sleep_pid), "the script's child `sleep 100` survived the cancel");
}

#[tokio::test]
async fn dropping_the_run_kills_the_script() {
    let (_root, job) =
        job_for("import os, time\nopen('pid.tmp', 'w').write(str(os.getpid()))\nos.rename('pid.tmp', 'pid.txt')\ntime.sleep(100)\n");
    let pid_file = job.workdir.join("pid.txt");
    let running = run(launcher(), &[], &job, std::future::pending());
    let wait_for_pid = async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = running => panic!("the script ended on its own"),
        () = wait_for_pid => {}
    }
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_dead(pid), "the script outlived its dropped run");
}

#[tokio::test]
async fn sandbox_setup_failure_is_an_error() {
    let (_root, mut job) = job_for("");
    job.argv = vec!["no-such-runtime".into()];
    match run(launcher(), &[], &job, std::future::pending()).await {
        Err(SandboxError::Setup(message)) => {
            assert!(message.contains("`no-such-runtime` not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn isolation_is_reported() {
    let isolation = isolation();
    let text = isolation.to_string();
    println!("{text}");
    if isolation.privilege_drop {
        assert!(text.contains("a uid of their own"), "{text}");
    }
    if !isolation.protects_agent_files() {
        assert!(text.contains("WARNING"), "{text}");
    }
}

/// Known limit, pinned down: a process that leaves the group (`setsid`) survives the group kill.
/// `run` must still return promptly, and say so in the log.
#[tokio::test]
async fn escaped_process_does_not_hang_the_run() {
    let (_root, job) = job_for(
        "import subprocess\n\
         child = subprocess.Popen(['sleep', '30'], start_new_session=True)\n\
         open('pid.txt', 'w').write(str(child.pid))\n",
    );
    let started = Instant::now();
    let outcome = run_to_end(&job).await;
    let elapsed = started.elapsed();
    let pid = std::fs::read_to_string(job.workdir.join("pid.txt")).unwrap();
    // Clean up the escaped `sleep` before asserting anything.
    let _ = std::process::Command::new("kill").args(["-9", pid.trim()]).status();
    assert_eq!(outcome, Outcome::Exited(0));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(log_of(&job).contains("a process left its group"), "{}", log_of(&job));
}

#[test]
fn a_work_dir_the_sandbox_user_cannot_reach_is_found_before_any_job() {
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let work = closed.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let verdict = runner::sandbox::check_reachable_below(&work);
    if nix::unistd::geteuid().is_root() {
        let why = verdict.unwrap_err();
        assert!(why.contains(&closed.path().display().to_string()) && why.contains("chmod o+x"), "{why}");
    } else {
        // Not root: scripts run as this user, who can reach it.
        assert_eq!(verdict, Ok(()));
    }
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(runner::sandbox::check_reachable_below(&work), Ok(()));
}

/// A TCP connection to the broker on this machine (RabbitMQ, which the tests need anyway).
const CONNECT_TO_THE_BROKER: &str = "import socket\n\
     try:\n\
     \x20   socket.create_connection(('127.0.0.1', 5672), timeout=3).close()\n\
     \x20   print('CONNECTED')\n\
     except OSError as e:\n\
     \x20   print('NO NETWORK', e)\n";

#[tokio::test]
async fn a_script_has_no_network_unless_the_owner_allows_it() {
    let (_root, job) = job_for(CONNECT_TO_THE_BROKER);
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0));
    let log = log_of(&job);
    assert!(log.contains("NO NETWORK") && !log.contains("CONNECTED"), "{log}");

    let (_root, mut job) = job_for(CONNECT_TO_THE_BROKER);
    job.network = true;
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0));
    assert!(log_of(&job).contains("CONNECTED"), "the broker is reachable with the network on: {}", log_of(&job));
}

#[tokio::test]
async fn a_job_runs_as_its_own_uid_and_nothing_of_it_survives() {
    // A uid no other test uses.
    const UID: u32 = 3_000_017;
    let (_root, mut job) = job_for(
        "import os, subprocess\n\
         print('uid', os.getuid())\n\
         child = subprocess.Popen(['sleep', '30'], start_new_session=True)\n\
         open('pid.txt', 'w').write(str(child.pid))\n",
    );
    job.uid = Some(UID);
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0), "{}", log_of(&job));
    let pid: u32 = std::fs::read_to_string(job.workdir.join("pid.txt")).unwrap().trim().parse().unwrap();
    if nix::unistd::geteuid().is_root() {
        assert!(log_of(&job).contains(&format!("uid {UID}")), "{}", log_of(&job));
        // It left the process group, but not its uid: swept when the job ended.
        std::thread::sleep(Duration::from_millis(200));
        assert!(is_dead(pid), "the escaped `sleep` survived its job");
    } else {
        // Not root: no uid of its own; the group kill cannot reach an escapee (a known limit).
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        assert!(log_of(&job).contains(&format!("uid {}", nix::unistd::getuid())), "{}", log_of(&job));
    }
}

#[tokio::test]
async fn a_script_cannot_signal_the_agent() {
    let (_root, mut job) = job_for(
        "import os\n\
         try:\n\
         \x20   os.kill(int(os.environ['AGENT_PID']), 0)\n\
         \x20   print('SIGNAL SENT')\n\
         except PermissionError:\n\
         \x20   print('SIGNAL REFUSED')\n",
    );
    job.env.push(("AGENT_PID".into(), std::process::id().to_string()));
    job.uid = Some(3_000_018);
    assert_eq!(run_to_end(&job).await, Outcome::Exited(0));
    let isolation = isolation();
    if isolation.privilege_drop || isolation.landlock == LandlockLevel::Full {
        assert!(log_of(&job).contains("SIGNAL REFUSED"), "{}", log_of(&job));
    }
}

#[tokio::test]
async fn the_disk_cap_stops_a_script_that_fills_its_work_dir() {
    let (_root, mut job) = job_for(
        "import time\n\
         with open('big.bin', 'wb') as f:\n\
         \x20   for i in range(100):\n\
         \x20       f.write(b'x' * (1 << 20)); f.flush(); time.sleep(0.05)\n\
         print('WROTE IT ALL')\n",
    );
    job.disk_bytes = 4 * MIB;
    job.notes = vec!["the manifest asks for 8 MiB of disk; this node allows 4 MiB".into()];
    let outcome = run_to_end(&job).await;
    let log = log_of(&job);
    match &outcome {
        Outcome::Killed { reason, .. } => assert!(reason.starts_with("disk limit of 4 MiB exceeded"), "{reason}"),
        other => panic!("{other:?}: {log}"),
    }
    assert!(!log.contains("WROTE IT ALL"), "{log}");
    assert!(log.starts_with("[sandbox] the manifest asks for 8 MiB of disk"), "{log}");
}
