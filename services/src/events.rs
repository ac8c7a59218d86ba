//! What follows from a state change, beyond the database: the server wakes its dispatcher,
//! answers API callers waiting for a job, and drops what it caches of a node. The use cases
//! raise these through [`Events`]; the server implements it, and tests record the calls.

use std::sync::Arc;

/// The side effects a use case raises. Each must return quickly: they signal, never wait.
pub trait Events: Send + Sync + 'static {
    /// A job reached an end state (succeeded, failed, cancelled).
    fn job_ended(&self, job_id: &str);
    /// Queued work or the fleet's room changed: the dispatcher should run a round soon.
    fn dispatch_wanted(&self);
    /// A node's admin state changed: what is cached of it is stale, and the attempts of a
    /// removed node must move on.
    fn node_changed(&self, node_id: &str);
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
