//! Runs the jobs the server sends to this node.
//!
//! The worker consumes the node's durable queue with a prefetch of `--max-jobs` plus
//! `--queue-ahead` and, for each message:
//! 1. checks the server's signature and that the job is for this node (a bad message is
//!    rejected without requeue and logged, never run), then waits for one of the `--max-jobs`
//!    slots: a job held ahead starts the moment one frees, and one that finds none within
//!    `RETURN_AFTER_MS` goes back to the server's queue (`return`) and is acked;
//! 2. asks the server to `start` the attempt and acks the message once the server knows it is
//!    running (not when it ends: the broker times out consumers that sit on a message for 30
//!    minutes, and jobs may run longer); a job the server says no to is acked and dropped.
//!    Except a quick job: an ONNX job whose input came in the message and whose model is
//!    loaded runs at once and is acked after its only report, `finish` (see `shared::jobs`);
//! 3. fetches the application (cached by SHA-256, checked after download) and the input unless
//!    it came in the message (an ONNX job's input of up to 1 MiB into memory, anything else
//!    into the job's directory);
//! 4. runs it: an ONNX model in process with tract, in batches; a script bundle sandboxed
//!    (see `runner::sandbox`), its output captured to a capped log;
//! 5. reports progress about once a second (the answer may say "stop": cancelled, or the
//!    attempt was given away), uploads the result (and a script's log; a result of up to
//!    `INLINE_MAX` bytes goes with the report instead), and reports the outcome, retrying
//!    every call until the server answers (a server restart loses nothing).
//!
//! A message delivered again while its attempt runs here (a redelivery after a broker
//! reconnect) is dropped. Stopping gracefully ([`Worker::drain`]) takes no new messages (the
//! unstarted ones go back to the queue), lets running jobs finish for a grace period, then
//! hands the rest back: each is reported failed for a reason that is not the job's, so the
//! server sends it to another node at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use shared::jobs::{AppKind, AttemptReport, FinishReport, JobMessage, Outcome, Proceed, INLINE_MAX, JOBS_PATH, RETURN_AFTER_MS};
use shared::wire::{HDR_NODE_ID, HDR_SIGNATURE};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api::{CallError, NodeApi};
use crate::telemetry::JobRun;

/// Rows per model call.
pub(crate) const BATCH_ROWS: usize = 4096;
/// How often a running job reports progress (and learns whether it was cancelled).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Models kept loaded, by SHA-256.
const MODEL_CACHE: usize = 4;
/// Log kept per job.
const LOG_CAP_BYTES: u64 = 1 << 20;
/// An ONNX job's input up to this size is fetched into memory and its result uploaded from
/// memory, without files.
const IN_MEMORY_MAX: u64 = 1 << 20;
/// How long the report of a handed-back job may take once the agent is stopping.
const HAND_BACK_REPORT: Duration = Duration::from_secs(5);

/// What the worker needs to know.
pub struct WorkerConfig {
    pub server: String,
    pub node_id: String,
    pub node_key: String,
    pub amqp_url: String,
    pub queue: String,
    pub max_jobs: u32,
    /// Messages taken beyond `max_jobs`, each waiting for a slot.
    pub queue_ahead: u32,
    pub work_dir: PathBuf,
    /// The binary whose `__sandbox` subcommand starts script jobs (this one).
    pub launcher: PathBuf,
    pub accepts_scripts: bool,
    /// What the owner allows any script (see `runner::sandbox::OwnerCaps`).
    pub script_caps: runner::sandbox::OwnerCaps,
    /// This process's random id (see `shared::wire::Heartbeat::instance`).
    pub instance: String,
}

/// Shared state of the running worker.
pub struct Worker {
    config: WorkerConfig,
    api: NodeApi,
    slots: Arc<Semaphore>,
    /// Jobs running now, for the heartbeats.
    pub running: Arc<AtomicU32>,
    models: Mutex<HashMap<String, Arc<runner::onnx::Model>>>,
    cache_dir: PathBuf,
    jobs_dir: PathBuf,
    /// Fires when the agent stops taking jobs (draining).
    taking: CancellationToken,
    /// Fires when running jobs must stop and be handed back.
    abort: CancellationToken,
    /// Attempts being handled now, so a redelivered message does not run twice.
    active: Mutex<HashSet<(String, u32)>>,
    /// When root: the uids script jobs run as, one per running job.
    script_uids: Option<SlotUids>,
}

/// A uid for each job slot, so running scripts cannot signal or trace each other and every
/// process a finished job left behind can be found by its uid. The range is derived from the
/// node id: agents of different nodes on one machine get different uids, and a restarted agent
/// the same ones.
struct SlotUids {
    free: Mutex<Vec<u32>>,
}

impl SlotUids {
    /// Uids start here, far above people's and system accounts (and the usual subuid ranges).
    const FIRST: u32 = 0x1000_0000;
    const PER_NODE: u32 = 1024;

    fn for_node(node_id: &str, slots: u32) -> Self {
        // FNV-1a: stable across builds, unlike the standard library's hasher.
        let hash = node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let first = Self::FIRST + (hash % 0x4_0000) as u32 * Self::PER_NODE;
        Self { free: Mutex::new((first..first + slots.min(Self::PER_NODE)).rev().collect()) }
    }

    fn take(&self) -> Option<u32> {
        self.free.lock().ok()?.pop()
    }

    fn give_back(&self, uid: u32) {
        if let Ok(mut free) = self.free.lock() {
            free.push(uid);
        }
    }
}

impl Worker {
    pub fn new(config: WorkerConfig, running: Arc<AtomicU32>) -> anyhow::Result<Arc<Self>> {
        let api = NodeApi::new(&config.server, &config.node_id, &config.node_key)?;
        // Script jobs run as another user when the agent is root: it must be able to pass
        // through the work dir (not list it) to reach its job directory. The state file (0600)
        // and the cache (0700) stay closed.
        set_mode(&config.work_dir, 0o711)?;
        let cache_dir = config.work_dir.join("cache");
        crate::state::create_private_dir(&cache_dir)?;
        // Job directories are handed to the sandbox user, so this one (not the work dir) is
        // searchable by others; its entries have random names and their own modes.
        let jobs_dir = config.work_dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir)?;
        set_mode(&jobs_dir, 0o711)?;
        let script_uids = runner::sandbox::isolation().privilege_drop.then(|| SlotUids::for_node(&config.node_id, config.max_jobs));
        Ok(Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.max_jobs as usize)),
            api,
            running,
            models: Mutex::new(HashMap::new()),
            cache_dir,
            jobs_dir,
            config,
            taking: CancellationToken::new(),
            abort: CancellationToken::new(),
            active: Mutex::new(HashSet::new()),
            script_uids,
        }))
    }

    /// Stops taking jobs, waits up to `grace` for the running ones, then hands the rest back
    /// and waits (briefly) for their reports.
    pub async fn drain(&self, grace: Duration) {
        self.taking.cancel();
        let all = self.config.max_jobs;
        if tokio::time::timeout(grace, self.slots.acquire_many(all)).await.is_ok() {
            return;
        }
        let held = self.running.load(Ordering::Relaxed);
        tracing::warn!(jobs = held, grace_secs = grace.as_secs(), "jobs still running after the grace period; handing them back");
        self.abort.cancel();
        let _ = tokio::time::timeout(HAND_BACK_REPORT * 2, self.slots.acquire_many(all)).await;
    }

    /// Consumes the node's queue until `cancel` fires or [`Worker::drain`] starts,
    /// reconnecting after broker losses.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut attempt = 0u32;
        let taking = self.taking.clone();
        loop {
            let outcome = tokio::select! {
                () = cancel.cancelled() => break,
                () = taking.cancelled() => break,
                outcome = self.clone().consume(&cancel) => outcome,
            };
            if let Err(e) = outcome {
                let delay = crate::run::backoff(attempt);
                attempt += 1;
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "job queue unavailable; reconnecting");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = taking.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            } else {
                break;
            }
        }
        if cancel.is_cancelled() {
            // A hard stop (not a drain): running jobs stop now and are handed back.
            self.abort.cancel();
        }
    }

    async fn consume(self: Arc<Self>, cancel: &CancellationToken) -> anyhow::Result<()> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(concat!("node-agent-jobs/", env!("CARGO_PKG_VERSION")).into());
        let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(&self.config.amqp_url, props)).await??;
        let channel = conn.create_channel().await?;
        let prefetch = self.config.max_jobs.saturating_add(self.config.queue_ahead);
        channel.basic_qos(u16::try_from(prefetch).unwrap_or(u16::MAX), BasicQosOptions::default()).await?;
        let mut consumer =
            channel.basic_consume(&self.config.queue, "node-agent", BasicConsumeOptions::default(), FieldTable::default()).await?;
        tracing::info!(queue = %self.config.queue, max_jobs = self.config.max_jobs, queue_ahead = self.config.queue_ahead, "waiting for jobs");
        loop {
            let next = tokio::select! {
                () = async { tokio::select! { () = cancel.cancelled() => {}, () = self.taking.cancelled() => {} } } => {
                    // Unacked messages go back to the queue when the channel closes.
                    let _ = channel.close(200, "agent stopping").await;
                    let _ = conn.close(200, "agent stopping").await;
                    return Ok(());
                }
                next = consumer.next() => next,
            };
            let Some(delivery) = next else { anyhow::bail!("the broker closed the job consumer") };
            // A free slot goes to the message now, so jobs start in the order they came; the
            // others wait for theirs in `handle` (the prefetch bounds how many wait).
            let slot = self.slots.clone().try_acquire_owned().ok();
            tokio::spawn(self.clone().handle(delivery?, slot));
        }
    }

    fn verify(&self, delivery: &Delivery) -> Result<JobMessage, String> {
        let header = |name: &str| -> Option<String> {
            match delivery.properties.headers().as_ref()?.inner().get(name)? {
                AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            }
        };
        let signature = header(HDR_SIGNATURE).ok_or("no signature")?;
        if header(HDR_NODE_ID).as_deref() != Some(self.config.node_id.as_str()) {
            return Err("addressed to another node".into());
        }
        if !shared::wire::verify(&self.config.node_key, &delivery.data, &signature) {
            return Err("bad signature".into());
        }
        let message: JobMessage = serde_json::from_slice(&delivery.data).map_err(|e| format!("malformed: {e}"))?;
        if message.node_id != self.config.node_id {
            return Err("addressed to another node".into());
        }
        Ok(message)
    }

    async fn handle(self: Arc<Self>, delivery: Delivery, slot: Option<OwnedSemaphorePermit>) {
        let message = match self.verify(&delivery) {
            Ok(m) => m,
            Err(why) => {
                // To the dead-letter queue (the node queue names it), never redelivered.
                tracing::warn!(why, bytes = delivery.data.len(), "job message refused; dead-lettered");
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
                return;
            }
        };
        let job = message.job_id.clone();
        let Some(_active) = ActiveAttempt::enter(&self.active, &job, message.attempt) else {
            tracing::info!(job_id = %job, attempt = message.attempt, "duplicate delivery of a job running here; dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        };
        let slot = match slot {
            Some(slot) => Some(slot),
            None => self.wait_for_slot(&delivery, &message).await,
        };
        let Some(_slot) = slot else { return };
        if let Some(model) = self.quick_model(&message) {
            return self.run_unstarted(delivery, message, model).await;
        }
        if !self.start(&delivery, &message).await {
            return;
        }
        tracing::info!(job_id = %job, attempt = message.attempt, kind = message.kind.as_str(), "job started");
        let run = JobRun::start(&self.running);
        let ended = self.execute(&message).await;
        run.end(ended.as_ref().map(|e| &e.outcome));
        if let Some(ended) = ended {
            self.report(&message, ended, None).await;
        }
    }

    /// A job slot for a message that came while all were taken, as soon as one frees within
    /// `RETURN_AFTER_MS`. `None` when the agent stops taking jobs meanwhile (the message goes
    /// back to the queue with the channel), or when no slot came free and the job went back to
    /// the server.
    async fn wait_for_slot(&self, delivery: &Delivery, m: &JobMessage) -> Option<OwnedSemaphorePermit> {
        let wait = tokio::time::timeout(Duration::from_millis(RETURN_AFTER_MS), self.slots.clone().acquire_owned());
        let got = tokio::select! {
            got = wait => got,
            () = self.taking.cancelled() => return None,
            () = self.abort.cancelled() => return None,
        };
        match got {
            Ok(Ok(slot)) if !self.taking.is_cancelled() => Some(slot),
            Ok(_) => None,
            Err(_waited) => {
                self.give_back(delivery, m).await;
                None
            }
        }
    }

    /// Hands a job that found no slot back to the server's queue (not counted as an attempt:
    /// it never started) and acks its message, whatever the answer.
    async fn give_back(&self, delivery: &Delivery, m: &JobMessage) {
        let path = format!("{JOBS_PATH}/{}/return", m.job_id);
        let report = AttemptReport { attempt: m.attempt, rows_done: 0, instance: None };
        match retry(self.abort.cancelled(), || self.api.post::<_, Proceed>(&path, &report)).await {
            // Stopping: the message goes back to the queue with the channel.
            None => return,
            Some(Ok(v)) if v.proceed => {
                tracing::info!(job_id = %m.job_id, attempt = m.attempt, "no slot came free in time; job returned to the server")
            }
            Some(Ok(v)) => {
                tracing::info!(job_id = %m.job_id, reason = v.reason.as_deref().unwrap_or(""), "job no longer waiting here; dropped")
            }
            Some(Err(e)) => tracing::warn!(job_id = %m.job_id, error = %e, "return refused; dropping the message"),
        }
        let _ = delivery.ack(BasicAckOptions::default()).await;
    }

    /// Asks the server to start the attempt, and acks the message once it knows (not when the
    /// job ends: the broker times out consumers that sit on a message for 30 minutes, and jobs
    /// may run longer). False: do not run it (refused, or the agent is stopping, in which case
    /// the message goes back to the queue with the channel).
    async fn start(&self, delivery: &Delivery, m: &JobMessage) -> bool {
        let path = format!("{JOBS_PATH}/{}/start", m.job_id);
        let report = AttemptReport { attempt: m.attempt, rows_done: 0, instance: Some(self.config.instance.clone()) };
        let verdict: Proceed = match retry(self.abort.cancelled(), || self.api.post(&path, &report)).await {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::warn!(job_id = %m.job_id, error = %e, "start refused; dropping the message");
                let _ = delivery.ack(BasicAckOptions::default()).await;
                return false;
            }
            None => return false,
        };
        // From here the attempt's lease is this node's heartbeats, not the unacked message.
        let _ = delivery.ack(BasicAckOptions::default()).await;
        if !verdict.proceed {
            tracing::info!(job_id = %m.job_id, attempt = m.attempt, reason = verdict.reason.as_deref().unwrap_or(""), "server says not to run this job");
        }
        verdict.proceed
    }

    /// The model of an ONNX job that can run at once, without `start`: its input came in the
    /// message and the model is loaded. Such a job takes milliseconds, so it is reported once,
    /// when done (see `shared::jobs`).
    fn quick_model(&self, m: &JobMessage) -> Option<Arc<runner::onnx::Model>> {
        if m.kind != AppKind::Onnx || m.input_csv.is_none() {
            return None;
        }
        self.models.lock().ok()?.get(&m.app_sha256).cloned()
    }

    /// Runs a quick job, reports it, and only then acks its message: an agent that dies
    /// meanwhile gets the message again.
    async fn run_unstarted(self: &Arc<Self>, delivery: Delivery, m: JobMessage, model: Arc<runner::onnx::Model>) {
        let input = m.input_csv.clone().unwrap_or_default().into_bytes();
        let started = Instant::now();
        // Counted until its outcome is known: a result too large to ride along is uploaded first.
        let run = JobRun::start(&self.running);
        let ran = predict_in_memory(model, input, Arc::new(AtomicU64::new(0))).await;
        let mut unstarted = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        let ended = match ran {
            Ok((rows, output)) if output.len() <= INLINE_MAX => Ended::with_result(rows, output),
            Ok((rows, output)) => {
                // Too large to ride along: the long way, started (and acked), then uploaded.
                if !self.start(&delivery, &m).await {
                    return;
                }
                unstarted = None;
                match self.upload_result(&m, output).await {
                    Ok(true) => Ended { outcome: Outcome::Succeeded { rows }, result_csv: None },
                    Ok(false) => return,
                    Err(e) => Ended::failed(format!("{e:#}"), false),
                }
            }
            Err((error, user_error)) => Ended::failed(error, user_error),
        };
        run.end(Some(&ended.outcome));
        // Acked once the server has answered; an agent stopping before that leaves the message
        // to be delivered again.
        if self.report(&m, ended, unstarted).await && unstarted.is_some() {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    }

    /// Reports how the attempt ended (`ran_ms`: it was never started); retried until the
    /// server answers. True once it has answered, whatever it said.
    async fn report(&self, m: &JobMessage, ended: Ended, ran_ms: Option<u64>) -> bool {
        let job = &m.job_id;
        let finish = FinishReport {
            attempt: m.attempt,
            outcome: ended.outcome,
            result_csv: ended.result_csv,
            instance: ran_ms.map(|_| self.config.instance.clone()),
            ran_ms,
        };
        let path = format!("{JOBS_PATH}/{job}/finish");
        // Retried until the server answers; once the agent is handing jobs back, only briefly.
        let give_up = async {
            self.abort.cancelled().await;
            tokio::time::sleep(HAND_BACK_REPORT).await;
        };
        let outcome = &finish.outcome;
        match retry(give_up, || self.api.post::<_, Proceed>(&path, &finish)).await {
            Some(Ok(v)) if v.proceed => tracing::info!(job_id = %job, outcome = ?outcome, "job finished"),
            Some(Ok(v)) => tracing::warn!(job_id = %job, reason = v.reason.as_deref().unwrap_or(""), "outcome refused"),
            Some(Err(e)) => tracing::warn!(job_id = %job, error = %e, "finish refused"),
            None => {
                tracing::warn!(job_id = %job, "stopped before the outcome was reported");
                return false;
            }
        }
        true
    }

    /// Uploads a result held in memory; false when refused (see [`result_accepted`]).
    async fn upload_result(&self, m: &JobMessage, output: Vec<u8>) -> Result<bool, CallError> {
        let result_path = format!("{JOBS_PATH}/{}/result?attempt={}", m.job_id, m.attempt);
        let uploaded = retry(self.abort.cancelled(), || self.api.upload_bytes::<Proceed>(&result_path, output.clone())).await;
        result_accepted(uploaded, m)
    }

    /// Fetches, runs and uploads; `None` when the server said stop (cancelled, given away).
    async fn execute(self: &Arc<Self>, m: &JobMessage) -> Option<Ended> {
        let dir = self.jobs_dir.join(format!("{}-{}", m.job_id, m.attempt));
        let result = self.execute_in(&dir, m).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        if self.abort.is_cancelled() {
            // Whatever it got to, the job goes to another node: not the job's fault.
            return Some(Ended::failed("the agent stopped before the job finished; handed back".into(), false));
        }
        match result {
            Ok(ended) => ended,
            Err(e) => Some(Ended::failed(format!("{e:#}"), false)),
        }
    }

    async fn execute_in(self: &Arc<Self>, dir: &Path, m: &JobMessage) -> anyhow::Result<Option<Ended>> {
        let q = format!("?attempt={}", m.attempt);
        let Some(app) = self.fetch_application(m, &q).await? else { return Ok(None) };
        let input_path = format!("{JOBS_PATH}/{}/input{q}", m.job_id);
        if m.kind == AppKind::Onnx {
            // A small input (most interactive jobs) never touches the disk: creating and
            // deleting a job's files was most of the agent's work per job (ext4 inode churn).
            let input = match &m.input_csv {
                Some(csv) => Some(csv.clone().into_bytes()),
                None => {
                    let Some(got) = retry(self.abort.cancelled(), || self.api.download_small(&input_path, IN_MEMORY_MAX)).await else {
                        return Ok(None);
                    };
                    got?
                }
            };
            if let Some(input) = input {
                return self.run_model_in_memory(&app, m, input).await;
            }
        }
        tokio::fs::create_dir_all(dir).await?;
        let input = dir.join("input.csv");
        if let Some(csv) = &m.input_csv {
            tokio::fs::write(&input, csv).await?;
        } else {
            let Some(got) = retry(self.abort.cancelled(), || self.api.download(&input_path, &input)).await else { return Ok(None) };
            got?;
        }

        // Progress reports run beside the job; "stop" from the server cancels it.
        let rows = Arc::new(AtomicU64::new(0));
        let stop = self.abort.child_token();
        let reporter = tokio::spawn(report_progress(self.api.clone(), m.clone(), rows.clone(), stop.clone()));
        let log = dir.join("log.txt");
        let output = dir.join("predictions.csv");
        let started = Instant::now();
        let ran = match m.kind {
            AppKind::Onnx => self.run_model(&app, &m.app_sha256, &input, &output, rows.clone()).await,
            AppKind::Script => self.run_script(&app, dir, &input, &output, &log, &stop).await,
        };
        if end_reporter(stop, reporter, m).await {
            return Ok(None);
        }
        let job = &m.job_id;
        if tokio::fs::try_exists(&log).await.unwrap_or(false) {
            let log_path = format!("{JOBS_PATH}/{job}/log{q}");
            let _ = retry(self.abort.cancelled(), || self.api.upload::<Proceed>(&log_path, &log)).await;
        }
        let ended = match ran {
            Ok(rows) => {
                tracing::debug!(job_id = %job, rows, took_ms = started.elapsed().as_millis() as u64, "job ran");
                // A small result goes with the report; a larger one is uploaded first.
                let small = tokio::fs::metadata(&output).await.is_ok_and(|meta| meta.len() <= INLINE_MAX as u64);
                let inline = if small { String::from_utf8(tokio::fs::read(&output).await?).ok() } else { None };
                if inline.is_none() {
                    let result_path = format!("{JOBS_PATH}/{job}/result{q}");
                    let uploaded = retry(self.abort.cancelled(), || self.api.upload::<Proceed>(&result_path, &output)).await;
                    if !result_accepted(uploaded, m)? {
                        return Ok(None);
                    }
                }
                Ended { outcome: Outcome::Succeeded { rows }, result_csv: inline }
            }
            Err((error, user_error)) => Ended::failed(error, user_error),
        };
        Ok(Some(ended))
    }

    /// The application file, from the cache when its hash is known, else downloaded and
    /// checked; `None` when the agent is handing its jobs back.
    async fn fetch_application(&self, m: &JobMessage, q: &str) -> anyhow::Result<Option<PathBuf>> {
        let sha = &m.app_sha256;
        anyhow::ensure!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()), "bad application hash");
        let cached = self.cache_dir.join(sha);
        if tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            return Ok(Some(cached));
        }
        let part = self.cache_dir.join(format!("{sha}.{}.part", uuid_like()));
        let path = format!("{JOBS_PATH}/{}/application{q}", m.job_id);
        let got = retry(self.abort.cancelled(), || self.api.download(&path, &part)).await;
        match got {
            Some(Ok(hash)) if hash == *sha => {
                tokio::fs::rename(&part, &cached).await?;
                Ok(Some(cached))
            }
            Some(Ok(hash)) => {
                let _ = tokio::fs::remove_file(&part).await;
                anyhow::bail!("the application's hash is {hash}, expected {sha}")
            }
            Some(Err(e)) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e.into())
            }
            None => {
                let _ = tokio::fs::remove_file(&part).await;
                Ok(None)
            }
        }
    }

    async fn model(&self, path: &Path, sha: &str) -> Result<Arc<runner::onnx::Model>, (String, bool)> {
        if let Some(m) = self.models.lock().ok().and_then(|c| c.get(sha).cloned()) {
            return Ok(m);
        }
        let path = path.to_path_buf();
        let began = Instant::now();
        let model = tokio::task::spawn_blocking(move || runner::onnx::Model::load(&path))
            .await
            .map_err(|e| (e.to_string(), false))?
            .map_err(|e| (e.to_string(), e.is_user_error()))?;
        crate::telemetry::model_loaded(began.elapsed());
        let model = Arc::new(model);
        if let Ok(mut cache) = self.models.lock() {
            if cache.len() >= MODEL_CACHE {
                cache.clear();
            }
            cache.insert(sha.to_string(), model.clone());
        }
        Ok(model)
    }

    /// Runs a model from file to file. An ONNX job has no log: its error, rows and times are
    /// on the job itself.
    async fn run_model(&self, app: &Path, sha: &str, input: &Path, output: &Path, rows: Arc<AtomicU64>) -> Result<u64, (String, bool)> {
        let model = self.model(app, sha).await?;
        let (input, output) = (input.to_path_buf(), output.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<u64, runner::onnx::OnnxError> {
            let reader = std::io::BufReader::new(std::fs::File::open(&input)?);
            let writer = std::io::BufWriter::new(std::fs::File::create(&output)?);
            model.predict_csv(reader, writer, BATCH_ROWS, &mut |n| rows.store(n, Ordering::Relaxed))
        })
        .await
        .map_err(|e| (e.to_string(), false))?
        .map_err(|e| (e.to_string(), e.is_user_error()))
    }

    /// An ONNX job whose input is in memory: runs it, and sends a small result with the report
    /// or uploads a larger one from memory.
    async fn run_model_in_memory(self: &Arc<Self>, app: &Path, m: &JobMessage, input: Vec<u8>) -> anyhow::Result<Option<Ended>> {
        let rows = Arc::new(AtomicU64::new(0));
        let stop = self.abort.child_token();
        let reporter = tokio::spawn(report_progress(self.api.clone(), m.clone(), rows.clone(), stop.clone()));
        let ran = match self.model(app, &m.app_sha256).await {
            Ok(model) => predict_in_memory(model, input, rows).await,
            Err(e) => Err(e),
        };
        if end_reporter(stop, reporter, m).await {
            return Ok(None);
        }
        match ran {
            Ok((rows, output)) if output.len() <= INLINE_MAX => Ok(Some(Ended::with_result(rows, output))),
            Ok((rows, output)) => {
                Ok(self.upload_result(m, output).await?.then_some(Ended { outcome: Outcome::Succeeded { rows }, result_csv: None }))
            }
            Err((error, user_error)) => Ok(Some(Ended::failed(error, user_error))),
        }
    }

    async fn run_script(
        &self,
        bundle: &Path,
        dir: &Path,
        input: &Path,
        output: &Path,
        log: &Path,
        stop: &CancellationToken,
    ) -> Result<u64, (String, bool)> {
        if !self.config.accepts_scripts {
            return Err(("this node does not run script jobs (--no-scripts)".into(), false));
        }
        let workdir = dir.join("work");
        let (bundle_path, work) = (bundle.to_path_buf(), workdir.clone());
        let manifest = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&work)?;
            runner::bundle::extract(&bundle_path, &work, &runner::bundle::BundleLimits::default()).map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| (e.to_string(), false))?
        .map_err(|e| (format!("bundle: {e}"), true))?;
        // The script reads its input from its own directory (the sandbox sees nothing else).
        let script_input = workdir.join("input.csv");
        tokio::fs::rename(input, &script_input).await.map_err(|e| (e.to_string(), false))?;
        let script_output = workdir.join(&manifest.output);
        let caps = &self.config.script_caps;
        let (time_limit, limits, notes) = caps.apply(&manifest);
        // One per running job: there are as many as slots.
        let uid = match &self.script_uids {
            Some(uids) => Some(uids.take().ok_or_else(|| ("no free sandbox uid".to_owned(), false))?),
            None => None,
        };
        let job = runner::sandbox::ScriptJob {
            workdir: workdir.clone(),
            argv: manifest.argv(),
            env: vec![
                ("AIEDGE_INPUT".into(), script_input.display().to_string()),
                ("AIEDGE_OUTPUT".into(), script_output.display().to_string()),
            ],
            time_limit,
            limits,
            log_path: log.to_path_buf(),
            log_cap_bytes: LOG_CAP_BYTES,
            uid,
            network: caps.network,
            disk_bytes: caps.disk_bytes,
            notes,
        };
        let outcome = runner::sandbox::run(&self.config.launcher, &[crate::SANDBOX_SUBCOMMAND], &job, stop.cancelled()).await;
        if let (Some(uids), Some(uid)) = (&self.script_uids, uid) {
            // `run` has killed every process of this uid.
            uids.give_back(uid);
        }
        let outcome = outcome.map_err(|e| (format!("sandbox: {e}"), false))?;
        match outcome {
            runner::sandbox::Outcome::Exited(0) => {
                // Read without following links: the script controls its directory.
                let (work, name, to) = (workdir.clone(), manifest.output.clone(), output.to_path_buf());
                let copied = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let mut from = runner::sandbox::open_output(&work, &name)?;
                    let mut into = std::fs::File::create(&to)?;
                    std::io::copy(&mut from, &mut into).map(drop)
                })
                .await
                .map_err(|e| (e.to_string(), false))?;
                match copied {
                    Ok(()) => Ok(count_rows(output).await),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err((format!("the script exited 0 but did not write `{}`", manifest.output), true))
                    }
                    // A link, a directory or a FIFO where the output should be: the script's fault.
                    Err(e) => Err((e.to_string(), e.kind() == std::io::ErrorKind::InvalidData)),
                }
            }
            other => {
                // Limits and the script's own failures are the application's problem.
                let user = !matches!(other, runner::sandbox::Outcome::Cancelled);
                Err((other.describe(), user))
            }
        }
    }
}

/// How an attempt ended, as reported: the outcome, and a small result that goes with it.
struct Ended {
    outcome: Outcome,
    result_csv: Option<String>,
}

impl Ended {
    fn failed(error: String, user_error: bool) -> Self {
        Self { outcome: Outcome::Failed { error, user_error }, result_csv: None }
    }

    /// A success whose result (at most `INLINE_MAX` bytes) goes with the report.
    fn with_result(rows: u64, output: Vec<u8>) -> Self {
        match String::from_utf8(output) {
            Ok(csv) => Self { outcome: Outcome::Succeeded { rows }, result_csv: Some(csv) },
            Err(_) => Self::failed("the model wrote a result that is not UTF-8".into(), false),
        }
    }
}

/// Runs a model over a CSV held in memory, off the async threads; counts rows into `rows`.
async fn predict_in_memory(
    model: Arc<runner::onnx::Model>,
    input: Vec<u8>,
    rows: Arc<AtomicU64>,
) -> Result<(u64, Vec<u8>), (String, bool)> {
    tokio::task::spawn_blocking(move || {
        let mut output = Vec::with_capacity(input.len() * 2);
        model
            .predict_csv(&input[..], &mut output, BATCH_ROWS, &mut |n| rows.store(n, Ordering::Relaxed))
            .map(|n| (n, output))
            .map_err(|e| (e.to_string(), e.is_user_error()))
    })
    .await
    .map_err(|e| (e.to_string(), false))
    .and_then(|r| r)
}

/// Stops a job's progress reports; `true` when the server said stop while it ran.
async fn end_reporter(stop: CancellationToken, reporter: tokio::task::JoinHandle<()>, m: &JobMessage) -> bool {
    let stopped = stop.is_cancelled();
    stop.cancel();
    let _ = reporter.await;
    if stopped {
        tracing::info!(job_id = %m.job_id, "job stopped");
    }
    stopped
}

/// Whether the server kept the uploaded result (`false` also when the agent is handing its jobs
/// back, or when the attempt is no longer this node's).
fn result_accepted(uploaded: Option<Result<Proceed, CallError>>, m: &JobMessage) -> Result<bool, CallError> {
    let Some(uploaded) = uploaded else { return Ok(false) };
    let uploaded = uploaded?;
    if !uploaded.proceed {
        tracing::warn!(job_id = %m.job_id, reason = uploaded.reason.as_deref().unwrap_or(""), "result refused");
    }
    Ok(uploaded.proceed)
}

/// Data rows of a CSV (lines after the header).
async fn count_rows(path: &Path) -> u64 {
    let Ok(bytes) = tokio::fs::read(path).await else { return 0 };
    let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    lines.saturating_sub(1)
}

async fn report_progress(api: NodeApi, m: JobMessage, rows: Arc<AtomicU64>, stop: CancellationToken) {
    let path = format!("{JOBS_PATH}/{}/progress", m.job_id);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
        let report = AttemptReport { attempt: m.attempt, rows_done: rows.load(Ordering::Relaxed), instance: None };
        match api.post::<_, Proceed>(&path, &report).await {
            Ok(v) if !v.proceed => {
                tracing::info!(job_id = %m.job_id, reason = v.reason.as_deref().unwrap_or(""), "server says stop");
                stop.cancel();
                return;
            }
            Ok(_) => {}
            // The server is away: carry on; the outcome report waits for it.
            Err(e) => tracing::debug!(error = %e, "progress report failed"),
        }
    }
}

/// Calls `f` until it answers or refuses; waits out transient failures with backoff.
/// `None` when `give_up` resolves first.
async fn retry<T, F, Fut>(give_up: impl std::future::Future<Output = ()>, mut f: F) -> Option<Result<T, CallError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    tokio::pin!(give_up);
    let mut attempt = 0;
    loop {
        let result = tokio::select! {
            () = &mut give_up => return None,
            result = f() => result,
        };
        match result {
            Err(e) if e.is_transient() => {
                let delay = crate::run::backoff(attempt);
                attempt += 1;
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "server call failed; retrying");
                tokio::select! {
                    () = &mut give_up => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            other => return Some(other),
        }
    }
}

/// Marks an attempt as handled here for as long as it lives.
struct ActiveAttempt<'a> {
    set: &'a Mutex<HashSet<(String, u32)>>,
    key: (String, u32),
}

impl<'a> ActiveAttempt<'a> {
    /// `None` when the attempt is already being handled.
    fn enter(set: &'a Mutex<HashSet<(String, u32)>>, job: &str, attempt: u32) -> Option<Self> {
        let key = (job.to_string(), attempt);
        let fresh = set.lock().map(|mut s| s.insert(key.clone())).unwrap_or(true);
        fresh.then_some(Self { set, key })
    }
}

impl Drop for ActiveAttempt<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.key);
        }
    }
}

/// Runs `true` in the sandbox scripts would get, in a job directory like theirs, so a node
/// whose kernel or configuration cannot give scripts what they are promised (a network
/// namespace, its uids) refuses script jobs from the start instead of losing each one.
pub async fn probe_sandbox(work_dir: &Path, launcher: &Path, caps: &runner::sandbox::OwnerCaps) -> Result<(), String> {
    let jobs_dir = work_dir.join("jobs");
    let dir = jobs_dir.join(format!("probe-{}", uuid_like()));
    let setup = || -> std::io::Result<()> {
        set_mode(work_dir, 0o711)?;
        std::fs::create_dir_all(dir.join("work"))?;
        set_mode(&jobs_dir, 0o711)
    };
    setup().map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
    let job = runner::sandbox::ScriptJob {
        workdir: dir.join("work"),
        argv: vec!["true".into()],
        env: Vec::new(),
        time_limit: Duration::from_secs(10),
        limits: runner::sandbox::ResourceLimits {
            cpu_secs: 10,
            memory_bytes: caps.memory_bytes,
            file_size_bytes: caps.disk_bytes,
            max_processes: runner::sandbox::ResourceLimits::DEFAULT_MAX_PROCESSES,
        },
        log_path: dir.join("log"),
        log_cap_bytes: 64 * 1024,
        uid: None,
        network: caps.network,
        disk_bytes: caps.disk_bytes,
        notes: Vec::new(),
    };
    let outcome = runner::sandbox::run(launcher, &[crate::SANDBOX_SUBCOMMAND], &job, std::future::pending()).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(runner::sandbox::Outcome::Exited(0)) => Ok(()),
        Ok(other) => Err(format!("a test script ended with: {other}")),
        Err(e) => Err(e.to_string()),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A short random suffix for temporary file names.
fn uuid_like() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}
