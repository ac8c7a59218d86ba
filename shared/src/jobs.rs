//! Jobs between the server and `node-agent`.
//!
//! The server publishes a [`JobMessage`] (persistent, publisher-confirmed) to the jobs exchange
//! with the node's id as routing key, so it lands in that node's durable queue. The body is
//! signed like a heartbeat ([`HDR_SIGNATURE`](crate::wire::HDR_SIGNATURE) = HMAC under the node's
//! key), so an agent runs only what the server sent it.
//!
//! Everything after that is HTTP, because every step needs an answer the agent acts on
//! (fencing): `start` (may I run attempt N?), the artifact downloads, `progress` (carry on, or
//! stop: cancelled), the result and log uploads, `finish` (accepted, or refused because the
//! attempt was given away), and `return` (a job held ahead found no slot; see below). Each
//! request is signed with [`request_signature`].
//!
//! Small jobs take a shorter way: an input CSV of up to [`INLINE_MAX`] bytes rides in the
//! message ([`JobMessage::input_csv`]) and a result that small in the finish report
//! ([`FinishReport::result_csv`]). An ONNX job whose input came inline and whose model is
//! already loaded runs at once and reports only `finish` (with [`FinishReport::ran_ms`]): the
//! server records it as started and finished in one step, and the message is acked after that
//! answer, so an agent that dies meanwhile gets the message again. That is one HTTP call per
//! job instead of four.
//!
//! A node whose owner allows it ([`NodeFacts::queue_ahead`](crate::wire::NodeFacts::queue_ahead))
//! holds a few jobs beyond its slots while its jobs come and go quickly, so a freed slot starts
//! the next job without waiting for the server's next dispatch. A held job that has not found
//! a slot within [`RETURN_AFTER_MS`] goes back to the server's queue (`return`), not counted as
//! an attempt, so a job never sits long behind another node's slow work.

use serde::{Deserialize, Serialize};

use crate::wire::sign;

/// Base path of the per-job agent endpoints: `{JOBS_PATH}/{job_id}/{start|application|input|progress|result|log|finish}`.
pub const JOBS_PATH: &str = "/agent/v1/jobs";
/// HTTP header with the calling node's id.
pub const HDR_NODE: &str = "x-aiedge-node";
/// HTTP header with the request time, Unix milliseconds.
pub const HDR_TIME: &str = "x-aiedge-time";
/// HTTP header with `hex(sha256(body))` of an upload.
pub const HDR_BODY_SHA256: &str = "x-aiedge-body-sha256";
/// HTTP header with the request signature, see [`request_signature`].
pub const HDR_REQUEST_SIGNATURE: &str = "x-aiedge-signature";
/// Largest input or result carried inline (in the job message, in the finish report), in bytes.
pub const INLINE_MAX: usize = 64 * 1024;
/// How long a job held beyond the node's slots waits for one before the agent returns it.
pub const RETURN_AFTER_MS: u64 = 3_000;
/// SHA-256 of the empty body, for requests without one.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What kind of application a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// An ONNX model, run in process.
    Onnx,
    /// A zip bundle whose `aiedge.toml` names the entry command, run sandboxed.
    Script,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Onnx => "onnx",
            AppKind::Script => "script",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "onnx" => Some(AppKind::Onnx),
            "script" => Some(AppKind::Script),
            _ => None,
        }
    }
}

/// One attempt of one job, as published to the node's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: String,
    /// The attempt this message is for; every later call about it carries the number.
    pub attempt: u32,
    /// The node the job was sent to; an agent refuses a message for another node.
    pub node_id: String,
    pub kind: AppKind,
    /// SHA-256 of the application artifact: the agent's cache key, checked after download.
    pub app_sha256: String,
    pub app_size: u64,
    pub issued_at_ms: i64,
    /// The input CSV itself when it is at most [`INLINE_MAX`] bytes; otherwise the agent
    /// downloads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_csv: Option<String>,
}

/// Body of `POST {JOBS_PATH}/{id}/start` and of `progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub attempt: u32,
    /// Rows done so far (progress only).
    #[serde(default)]
    pub rows_done: u64,
    /// The agent process's instance id (start only; see `Heartbeat::instance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The server's answer to `start` and `progress`: carry on, or stop and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proceed {
    pub proceed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How an attempt ended, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// The result was uploaded before this report.
    Succeeded { rows: u64 },
    /// `user_error`: the application or its input is at fault (a script exiting non-zero, a CSV
    /// the model rejects), so another node would fail the same way.
    Failed { error: String, user_error: bool },
}

/// Body of `POST {JOBS_PATH}/{id}/finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishReport {
    pub attempt: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// A success's predictions CSV of at most [`INLINE_MAX`] bytes, instead of an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_csv: Option<String>,
    /// Set when the attempt was run without a `start` call: how long it ran, in milliseconds
    /// (the server dates its start from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
    /// The agent process's instance id, with `ran_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// One node as the balancer saw it when it chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub node_id: String,
    pub node_name: String,
    /// The node's score from its latest heartbeat.
    pub score: f64,
    /// Jobs already sent to the node and not finished, including this round's.
    pub in_flight: u32,
    pub max_jobs: u32,
    /// Jobs the node may hold beyond `max_jobs` now (see the balancer): 0 when it holds none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ahead: u32,
    /// What the server saw of the node's recent attempts, against the whole fleet's: 1 unless the
    /// node fails or loses work more often than the fleet does, down to [`OBSERVED_MIN`]. It
    /// multiplies the score, so a node that lies about its speed or botches jobs loses its work.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub observed: f64,
    /// What the pick compares: the score, tempered by what was observed, shared among the jobs in
    /// flight: `score × observed / (1 + in_flight)`.
    pub effective: f64,
    /// Why the node could not take the job; `None` when it was eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
    /// An earlier attempt of this job ran on the node (failed or lost there); such nodes come
    /// last.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tried: bool,
}

/// The balancer's decision for one attempt, kept with the job so people can see why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: i64,
    pub attempt: u32,
    pub chosen: String,
    /// The winner and the best of the rest (at most `aiedge_core::balancer::RECORDED`).
    pub candidates: Vec<Candidate>,
    /// Nodes of the pool that were candidates too but are not recorded.
    #[serde(default)]
    pub more: u64,
}

/// The least a node's track record may multiply its score by: a node that failed every job of
/// late still gets work when no other node can take it, and can win its way back.
pub const OBSERVED_MIN: f64 = 0.05;

fn one() -> f64 {
    1.0
}

#[allow(clippy::float_cmp)] // 1.0 exactly is the default that is not written
fn is_one(x: &f64) -> bool {
    *x == 1.0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The text a request signature covers: method, path (with query), time, body hash, one per line.
pub fn request_string(method: &str, path_and_query: &str, time_ms: i64, body_sha256: &str) -> String {
    format!("{}\n{}\n{}\n{}", method.to_ascii_uppercase(), path_and_query, time_ms, body_sha256.to_ascii_lowercase())
}

/// The [`HDR_REQUEST_SIGNATURE`] value: HMAC-SHA256 of [`request_string`] under the node key.
pub fn request_signature(node_key: &str, method: &str, path_and_query: &str, time_ms: i64, body_sha256: &str) -> String {
    sign(node_key, request_string(method, path_and_query, time_ms, body_sha256).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::verify;

    #[test]
    fn message_round_trip() {
        let m = JobMessage {
            job_id: "j".into(),
            attempt: 2,
            node_id: "n".into(),
            kind: AppKind::Script,
            app_sha256: "ab".into(),
            app_size: 3,
            issued_at_ms: 5,
            input_csv: Some("a,b\n1,2\n".into()),
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""kind":"script""#));
        assert_eq!(serde_json::from_str::<JobMessage>(&json).unwrap(), m);
    }

    #[test]
    fn finish_report_is_flat() {
        let r = FinishReport {
            attempt: 1,
            outcome: Outcome::Failed { error: "boom".into(), user_error: true },
            result_csv: None,
            ran_ms: None,
            instance: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["error"], "boom");
        // An older agent's report (no inline fields) still reads.
        assert_eq!(v.as_object().unwrap().len(), 4);
        assert_eq!(serde_json::from_value::<FinishReport>(v).unwrap(), r);
    }

    #[test]
    fn signature_covers_every_part() {
        let sig = request_signature("k", "get", "/a?attempt=1", 7, EMPTY_SHA256);
        let covered = request_string("GET", "/a?attempt=1", 7, EMPTY_SHA256);
        assert!(verify("k", covered.as_bytes(), &sig));
        for other in [
            request_string("PUT", "/a?attempt=1", 7, EMPTY_SHA256),
            request_string("GET", "/a?attempt=2", 7, EMPTY_SHA256),
            request_string("GET", "/a?attempt=1", 8, EMPTY_SHA256),
            request_string("GET", "/a?attempt=1", 7, "00"),
        ] {
            assert!(!verify("k", other.as_bytes(), &sig), "{other}");
        }
    }

    #[test]
    fn empty_sha_is_right() {
        use sha2::{Digest, Sha256};
        assert_eq!(hex::encode(Sha256::digest(b"")), EMPTY_SHA256);
    }
}
