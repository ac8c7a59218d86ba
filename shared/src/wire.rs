//! The messages between `node-agent` and the server.
//!
//! Registration is one HTTP call, [`RegisterRequest`] → [`RegisterResponse`], `POST`ed to
//! [`REGISTER_PATH`] on the server. The server answers 200 with lasting node credentials, or
//! 401/403/410 when the one-time token is unknown, expired or already used.
//!
//! Heartbeats then flow over RabbitMQ: the agent publishes a [`Heartbeat`] as JSON to the durable
//! fanout exchange [`HEARTBEAT_EXCHANGE`], non-persistent and with a short expiration so that
//! they never pile up while the server is away. Each message carries the AMQP headers
//! [`HDR_NODE_ID`] and [`HDR_SIGNATURE`] = [`sign`]`(node_key, body)`; the server looks the node's
//! key up by the id and checks the body with [`verify`] before believing a word of it.
//!
//! Unknown fields are ignored when reading, so either side can add an optional field first.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Durable fanout exchange the agents publish heartbeats to.
pub const HEARTBEAT_EXCHANGE: &str = "aiedge.heartbeats";
/// AMQP header carrying the sending node's id.
pub const HDR_NODE_ID: &str = "x-node-id";
/// AMQP header carrying `hex(HMAC-SHA256(node_key, body))`, see [`sign`].
pub const HDR_SIGNATURE: &str = "x-signature";
/// Path of the registration endpoint, relative to the server's base URL.
pub const REGISTER_PATH: &str = "/agent/v1/register";
/// Path of the check-in endpoint: a node proves it still holds valid credentials.
pub const HELLO_PATH: &str = "/agent/v1/hello";
/// How far a check-in's clock may be from the server's before it is refused as a replay.
pub const HELLO_MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Body of `POST {server}/agent/v1/hello`, sent with the [`HDR_SIGNATURE`] header signed by the
/// node key. 200: carry on. 403: the node was removed; its credentials are revoked for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: String,
    pub sent_at_ms: i64,
}

/// What a machine is: reported at registration and on the first heartbeat of each connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub hostname: String,
    /// Human-readable OS name and version, e.g. "Linux 12 Debian GNU/Linux".
    pub os: String,
    /// CPU architecture as Rust names it: "x86_64", "aarch64", "arm", ...
    pub arch: String,
    /// Logical CPUs.
    pub cpu_cores: u32,
    pub total_memory_bytes: u64,
    pub agent_version: String,
    /// Accelerators the agent can see, e.g. GPU names from `nvidia-smi`. Empty when none.
    #[serde(default)]
    pub accelerators: Vec<String>,
    /// Runtimes that jobs can use, e.g. `python3` 3.11.7.
    #[serde(default)]
    pub runtimes: Vec<Runtime>,
    /// Jobs the node runs at the same time (`--max-jobs`); older agents did not say: 1.
    #[serde(default = "one")]
    pub max_jobs: u32,
    /// Jobs the node takes beyond `max_jobs`, to start the moment a slot frees (`--queue-ahead`);
    /// older agents did not: 0.
    #[serde(default)]
    pub queue_ahead: u32,
    /// The owner allows script jobs on this node (`--no-scripts` turns them off).
    #[serde(default = "yes")]
    pub accepts_scripts: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// One runtime found on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub name: String,
    pub version: String,
}

/// How the node is doing right now: the inputs of the [node score](crate::score).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Free CPU, 0..=100 (100 minus the global CPU usage since the previous sample).
    pub free_cpu_pct: f64,
    /// Available memory as a share of total memory, 0..=100.
    pub free_mem_pct: f64,
    /// Available memory in GiB (2^30 bytes).
    pub free_ram_gib: f64,
    /// Single-threaded CPU benchmark result (`sysbench cpu` events: primes up to 10 000).
    pub events_per_sec: f64,
    /// Hottest CPU sensor in °C; `None` when the machine exposes none (counts as "unknown").
    pub temperature_c: Option<f64>,
    pub running_jobs: u32,
}

/// One heartbeat, published every interval (default 2 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    /// Counts up from 0 for the life of the agent process, across reconnects. Never reused
    /// within a process; gaps mean heartbeats that may not have arrived.
    pub seq: u64,
    /// Sender's wall clock, Unix milliseconds.
    pub sent_at_ms: i64,
    pub metrics: NodeMetrics,
    /// Present on the first heartbeat of each broker connection, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<NodeFacts>,
    /// Random per agent process: when it changes, the agent restarted and the attempts the
    /// old process started are lost (the server moves them on at once, without a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The agent is stopping (SIGTERM): it takes no new jobs and finishes the ones it holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// Body of `POST {server}/agent/v1/register`.
///
/// Serialize (it must go over the wire) but holds a secret, so `Debug` redacts the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The one-time registration token the web app issued.
    pub token: String,
    /// Name the owner gave the node; the server may fall back to the hostname.
    #[serde(default)]
    pub name: Option<String>,
    pub facts: NodeFacts,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest").field("token", &"<redacted>").field("name", &self.name).field("facts", &self.facts).finish()
    }
}

/// 200 answer to a registration: the node's lasting credentials and where to send heartbeats.
///
/// Holds the node key, so `Debug` redacts it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    /// Secret shared by this node and the server; keys the HMAC of every message.
    pub node_key: String,
    /// Broker the agent connects to, e.g. `amqp://user:pass@broker:5672/%2f`.
    pub amqp_url: String,
    /// Exchange to publish heartbeats to; normally [`HEARTBEAT_EXCHANGE`].
    pub heartbeat_exchange: String,
    /// Heartbeat interval the server expects, unless the agent is told otherwise.
    pub heartbeat_interval_ms: u64,
    /// The node's durable job queue to consume. Empty from servers that predate jobs.
    #[serde(default)]
    pub jobs_queue: String,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("node_id", &self.node_id)
            .field("node_key", &"<redacted>")
            .field("amqp_url", &"<redacted>")
            .field("heartbeat_exchange", &self.heartbeat_exchange)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("jobs_queue", &self.jobs_queue)
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed, short ones padded), so this
    // constructor cannot fail; the Result only exists because the trait is shared with ciphers.
    #[allow(clippy::expect_used)]
    <HmacSha256 as Mac>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length")
}

/// `hex(HMAC-SHA256(key, body))`, lowercase: the value of the [`HDR_SIGNATURE`] header.
pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `sig_hex` is the signature of `body` under `key`. The comparison is constant-time;
/// malformed hex (either case accepted) is simply `false`.
pub fn verify(key: &str, body: &[u8], sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex.trim()) else {
        return false;
    };
    let mut mac = mac(key);
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "pi-42".into(),
            os: "Linux 12 Debian GNU/Linux".into(),
            arch: "aarch64".into(),
            cpu_cores: 4,
            total_memory_bytes: 8 << 30,
            agent_version: "0.1.0".into(),
            accelerators: vec![],
            runtimes: vec![Runtime { name: "python3".into(), version: "3.11.7".into() }],
            max_jobs: 2,
            queue_ahead: 2,
            accepts_scripts: true,
        }
    }

    fn heartbeat(with_facts: bool) -> Heartbeat {
        Heartbeat {
            node_id: "n-1".into(),
            seq: 7,
            sent_at_ms: 1_700_000_000_000,
            metrics: NodeMetrics {
                free_cpu_pct: 87.5,
                free_mem_pct: 40.0,
                free_ram_gib: 3.2,
                events_per_sec: 1234.5,
                temperature_c: None,
                running_jobs: 0,
            },
            facts: with_facts.then(facts),
            instance: None,
            draining: false,
        }
    }

    #[test]
    fn sign_then_verify() {
        let body = br#"{"hello":"world"}"#;
        let sig = sign("k3y", body);
        assert_eq!(sig.len(), 64);
        assert!(sig.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(verify("k3y", body, &sig));
        assert!(verify("k3y", body, &sig.to_uppercase()));
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(sign("Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn tampered_body_fails() {
        let sig = sign("k3y", br#"{"free_cpu_pct":10}"#);
        assert!(!verify("k3y", br#"{"free_cpu_pct":99}"#, &sig));
    }

    #[test]
    fn wrong_key_fails() {
        let sig = sign("k3y", b"body");
        assert!(!verify("other", b"body", &sig));
        assert!(!verify("", b"body", &sig));
    }

    #[test]
    fn malformed_signature_fails() {
        let sig = sign("k3y", b"body");
        assert!(!verify("k3y", b"body", ""));
        assert!(!verify("k3y", b"body", "zz"));
        assert!(!verify("k3y", b"body", &sig[..62]));
        assert!(!verify("k3y", b"body", &format!("{sig}00")));
    }

    #[test]
    fn heartbeat_round_trip() {
        for with_facts in [true, false] {
            let hb = heartbeat(with_facts);
            let json = serde_json::to_string(&hb).unwrap();
            assert_eq!(json.contains("\"facts\""), with_facts);
            let back: Heartbeat = serde_json::from_str(&json).unwrap();
            assert_eq!(back, hb);
        }
    }

    #[test]
    fn unknown_temperature_is_null() {
        let json = serde_json::to_value(heartbeat(false)).unwrap();
        assert!(json["metrics"]["temperature_c"].is_null());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut json = serde_json::to_value(heartbeat(false)).unwrap();
        json["from_the_future"] = serde_json::json!(1);
        let back: Heartbeat = serde_json::from_value(json).unwrap();
        assert_eq!(back, heartbeat(false));
    }

    #[test]
    fn register_round_trip_and_redaction() {
        let req = RegisterRequest { token: "secret-token".into(), name: Some("pi".into()), facts: facts() };
        let back: RegisterRequest = serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        assert!(!format!("{req:?}").contains("secret-token"));

        let resp = RegisterResponse {
            node_id: "n-1".into(),
            node_key: "secret-key".into(),
            amqp_url: "amqp://u:secret-pass@h/%2f".into(),
            heartbeat_exchange: HEARTBEAT_EXCHANGE.into(),
            heartbeat_interval_ms: 2000,
            jobs_queue: "aiedge.node.n-1".into(),
        };
        let back: RegisterResponse = serde_json::from_str(&serde_json::to_string(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
        let dbg = format!("{resp:?}");
        assert!(!dbg.contains("secret-key") && !dbg.contains("secret-pass"));
    }

    #[test]
    fn register_request_name_is_optional() {
        let json = serde_json::json!({ "token": "t", "facts": serde_json::to_value(facts()).unwrap() });
        let req: RegisterRequest = serde_json::from_value(json).unwrap();
        assert_eq!(req.name, None);
    }
}
