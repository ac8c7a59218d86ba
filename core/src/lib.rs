//! The domain of AI on the Edge with no I/O: what a job, a node and an account are, which
//! changes of state are allowed, and the rules that need no database. Compiled for the server
//! and for the browser alike, so a page and the API show the same types.
//!
//! - [`states`]: [`JobStatus`], [`AttemptOutcome`], [`NodeStatus`], [`AdminState`] and
//!   [`Role`], each a closed set stored as TEXT (with a CHECK in the schema), with its allowed
//!   transitions.
//! - [`access`]: who may act on what ("owner or admin", written once).
//! - [`verdict`]: what the server answers an agent about one of its attempts.
//! - [`names`]: validation of the names people give things.
//! - [`reported`]: what a node says of itself, held to what a machine can be.
//! - [`views`]: accounts, applications, jobs and nodes as pages and the API show them.

#![forbid(unsafe_code)]

pub mod access;
pub mod names;
pub mod reported;
pub mod states;
pub mod verdict;
pub mod views;

pub use access::may_manage;
pub use states::{AdminState, AttemptOutcome, JobStatus, NodeStatus, Role, UnknownState};
pub use verdict::Verdict;
