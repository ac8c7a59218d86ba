//! The use cases: each change of a job's or a node's state happens in one function here, which
//! checks who may make it, asks the store to make it, and raises what follows from it through
//! [`Events`]. Server functions, the JSON API and the agent routes are adapters over these
//! calls, so a rule (who may cancel, what a cancel wakes) is written once.
//!
//! - [`accounts`]: what admins do with accounts (disable, enable, change the role, delete).
//! - [`jobs`]: what a user does with a job (cancel, look).
//! - [`attempts`]: what a node does with one (start, progress, give back, finish), and the
//!   recovery of attempts that can no longer finish.
//! - [`nodes`]: the admin state of a node (enable, disable, drain, remove).
//! - [`placement`]: the fleet as the balancer sees it, and why a queued job waits.
//! - [`schedules`]: what a user does with a schedule, and the ticker that fires them.
//! - [`storage`]: storage used per account, measured.
//! - [`metrics`]: the domain's counters.
//! - [`events`]: the side effects a use case raises, implemented by the server.
//! - [`error`]: one error type for every use case, which knows its HTTP status.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod attempts;
pub mod error;
pub mod events;
pub mod jobs;
pub mod metrics;
pub mod nodes;
pub mod placement;
pub mod schedules;
pub mod storage;
pub mod usage;

pub use error::{Result, ServiceError};
pub use events::{Changes, Events, JobEnds};
