//! The server's side of the use cases' events (see [`aiedge_services::Events`]): they wake the
//! dispatcher and answer API callers waiting for a job.

use aiedge_services::{Changes, Events, JobEnds};

use crate::scheduler::Dispatcher;

pub struct ServerEvents {
    pub dispatcher: Dispatcher,
    pub job_ends: JobEnds,
    pub changes: Changes,
}

impl Events for ServerEvents {
    fn job_changed(&self, _job_id: &str) {
        self.changes.jobs_changed();
    }

    fn job_ended(&self, job_id: &str) {
        self.job_ends.announce(job_id);
    }

    fn dispatch_wanted(&self) {
        self.dispatcher.wake();
    }

    fn node_changed(&self, _node_id: &str) {
        // A disabled, drained or removed node: its attempts may be lost now, and its room is
        // gone. The heartbeat path re-reads the admin state within `heartbeats::AUTH_CACHE`.
        self.dispatcher.node_lost();
        self.changes.nodes_changed();
    }
}
