//! What the AI on the Edge server and `node-agent` must agree on, and nothing else.
//!
//! - [`wire`]: the JSON messages between agent and server (registration, heartbeats), the AMQP
//!   names they travel under, and the HMAC that proves which node sent a message.
//! - [`jobs`]: job messages on the node queues and the signed HTTP calls about them.
//! - [`score`]: the node score the load balancer ranks nodes by, as one pure function.
//!
//! This crate is serde plus pure functions on purpose: no async runtime, no IO, so the agent
//! stays small and the server and agent cannot drift apart on a field name or a formula.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is a failed test, which is the point.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod jobs;
pub mod score;
pub mod wire;
