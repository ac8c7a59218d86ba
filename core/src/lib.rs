//! The domain of AI on the Edge with no I/O: what a job, a node and an account are, which
//! changes of state are allowed, and the rules that need no database. Compiled for the server
//! and for the browser alike, so a page and the API show the same types.
//!
//! - [`states`]: [`JobStatus`], [`AttemptOutcome`], [`NodeStatus`], [`AdminState`] and
//!   [`Role`], each a closed set stored as TEXT (with a CHECK in the schema), with its allowed
//!   transitions.
//! - [`access`]: who may act on what ("owner or admin", written once), and which nodes may run
//!   whose jobs (pools and sharing).
//! - [`balancer`]: which node runs a job (one pure function).
//! - [`verdict`]: what the server answers an agent about one of its attempts.
//! - [`names`]: validation of the names people give things.
//! - [`reported`]: what a node says of itself, held to what a machine can be.
//! - [`views`]: accounts, applications, jobs and nodes as pages and the API show them.
//! - [`schedules`]: jobs that run by themselves: fire times, catch-up and overlap rules, and
//!   (feature `cron`, server side) cron expressions in time zones.
//! - [`usage`]: usage analytics: functionality by route, latency buckets, the Usage report.

#![forbid(unsafe_code)]

pub mod access;
pub mod balancer;
pub mod names;
pub mod reported;
pub mod schedules;
pub mod states;
pub mod usage;
pub mod verdict;
pub mod views;

pub use access::{may_manage, may_run, NodeAccess};
pub use states::{AdminState, AttemptOutcome, JobStatus, NodeStatus, Overlap, Pool, Role, RunOutcome, Sharing, UnknownState};
pub use verdict::Verdict;
