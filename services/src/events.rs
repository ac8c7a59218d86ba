//! What follows from a state change, beyond the database: the server wakes its dispatcher,
//! answers API callers waiting for a job, and drops what it caches of a node. The use cases
//! raise these through [`Events`]; the server implements it, and tests record the calls.

use std::sync::Arc;

/// The side effects a use case raises. Each must return quickly: they signal, never wait.
pub trait Events: Send + Sync + 'static {
    /// A job changed (created, dispatched, started, progressed, ended): live pages look again.
    fn job_changed(&self, job_id: &str);
    /// A job reached an end state (succeeded, failed, cancelled).
    fn job_ended(&self, job_id: &str);
    /// Queued work or the fleet's room changed: the dispatcher should run a round soon.
    fn dispatch_wanted(&self);
    /// A node's admin state changed: what is cached of it is stale, and the attempts of a
    /// removed node must move on.
    fn node_changed(&self, node_id: &str);
    /// A node was removed for good: whatever credentials it holds outside the database (its
    /// broker user) must be revoked now.
    fn node_removed(&self, node_id: &str);
}

/// Tells the live feeds that something they show changed, so they query again instead of
/// polling. A notice carries no data: a feed that missed several reads once (they coalesce).
#[derive(Clone)]
pub struct Changes {
    jobs: Arc<tokio::sync::watch::Sender<u64>>,
    nodes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self { jobs: Arc::new(tokio::sync::watch::channel(0).0), nodes: Arc::new(tokio::sync::watch::channel(0).0) }
    }
}

impl Changes {
    pub fn jobs_changed(&self) {
        self.jobs.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn nodes_changed(&self) {
        self.nodes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn watch_jobs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.jobs.subscribe()
    }

    pub fn watch_nodes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.nodes.subscribe()
    }
}

/// Announces jobs that reached an end state, by id, so that API callers waiting for one
/// (`GET /api/v1/jobs/{id}?wait=…`) answer at once. Waiters also look again every second, so
/// an end that is not announced is still seen.
#[derive(Clone)]
pub struct JobEnds(tokio::sync::broadcast::Sender<Arc<str>>);

impl Default for JobEnds {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
}

impl JobEnds {
    pub fn announce(&self, id: &str) {
        // No receiver is fine: nobody is waiting.
        let _ = self.0.send(id.into());
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.0.subscribe()
    }
}
