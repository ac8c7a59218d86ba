//! The server's side of the use cases' events (see [`aiedge_services::Events`]): they wake the
//! dispatcher and answer API callers waiting for a job.

use aiedge_services::{Changes, Events, JobEnds};

use crate::broker_users::BrokerUsers;
use crate::replica_events::{Event, Relay};
use crate::scheduler::Dispatcher;

pub struct ServerEvents {
    pub dispatcher: Dispatcher,
    pub job_ends: JobEnds,
    pub changes: Changes,
    pub broker_users: BrokerUsers,
    /// The same events for the other replicas, if any.
    pub relay: Relay,
}

impl Events for ServerEvents {
    fn job_changed(&self, _job_id: &str) {
        self.changes.jobs_changed();
        self.relay.send(Event::JobsChanged);
    }

    fn job_ended(&self, job_id: &str) {
        self.job_ends.announce(job_id);
        self.relay.send(Event::JobEnded(job_id.to_string()));
    }

    fn dispatch_wanted(&self) {
        self.dispatcher.wake();
        self.relay.send(Event::DispatchWanted);
    }

    fn node_changed(&self, _node_id: &str) {
        // A disabled, drained or removed node: its attempts may be lost now, and its room is
        // gone. The heartbeat path re-reads the admin state within `heartbeats::AUTH_CACHE`.
        self.dispatcher.node_lost();
        self.changes.nodes_changed();
        self.relay.send(Event::NodeLost);
        self.relay.send(Event::NodesChanged);
    }

    fn node_removed(&self, node_id: &str) {
        // Off the request: the broker may be slow or away; its user is deleted when it answers
        // (and a removed node's heartbeats and reports are refused meanwhile anyway).
        let (users, node_id) = (self.broker_users.clone(), node_id.to_string());
        tokio::spawn(async move {
            match users.revoke(&node_id).await {
                Ok(()) => tracing::info!(node_id, "node's broker user deleted, its connections closed"),
                Err(e) => tracing::error!(node_id, error = %e, "cannot revoke the removed node's broker user"),
            }
        });
    }
}
