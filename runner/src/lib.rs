//! Everything about running an application, in one place so the server (which validates uploads)
//! and the agent (which runs jobs) cannot disagree about what is valid.
//!
//! - [`onnx`]: load an ONNX model with tract, describe its inputs and outputs, refuse what it
//!   cannot run (naming the operator), and turn an input CSV into a predictions CSV in batches.
//! - [`model_check`]: loads an uploaded model in a child process with memory and time limits,
//!   so a hostile file cannot take the server down.
//! - [`bundle`]: script bundles: the zip checks (paths, links, bombs) and the `aiedge.toml` manifest.
//! - [`sandbox`]: runs a bundle's entry command in a fresh directory with a cleared environment,
//!   a wall-clock limit and resource limits, its output captured to a capped log.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bundle;
pub mod model_check;
pub mod onnx;
pub mod sandbox;
