//! The closed sets of states, each stored as a TEXT column that a CHECK constraint holds to the
//! same words (see the `status_checks` migration), and the transitions each allows.
//!
//! The words are written here once; the store maps them to and from its columns, and nothing
//! else spells them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word from the database or a request that names no state of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownState {
    pub kind: &'static str,
    pub word: String,
}

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.kind, self.word)
    }
}

impl std::error::Error for UnknownState {}

/// A closed set of states with the lowercase word each is stored and shown as.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every state, in the order of the lifecycle.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word stored in the database and shown to people.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(word: &str) -> Result<Self, UnknownState> {
                match word {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: $kind, word: word.to_string() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;
            fn try_from(word: String) -> Result<Self, UnknownState> {
                word.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// Where a job is in its life. `queued → dispatched → running → succeeded`, with
    /// failures sending it back to `queued` (attempts left) or to `failed`, and a cancel
    /// ending it from any unfinished state.
    JobStatus, "job status" {
        /// Waiting for a node.
        Queued = "queued",
        /// Published to a node's queue; the node has not said it started.
        Dispatched = "dispatched",
        /// The node is running it.
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// The states of a job that holds a node's attempt.
    pub const LIVE: &'static [JobStatus] = &[JobStatus::Dispatched, JobStatus::Running];

    /// True once the job can no longer change.
    pub const fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// True while an attempt on a node is under way (dispatched or running).
    pub const fn is_live(self) -> bool {
        matches!(self, JobStatus::Dispatched | JobStatus::Running)
    }

    /// Whether a job in this state may move to `next`. Every change the store makes is one of
    /// these (its compare-and-sets name the state they move from).
    pub const fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        match (self, next) {
            // The balancer reserves an attempt; the owner cancels.
            (Queued, Dispatched | Cancelled) => true,
            // The agent starts it; or reports only once done (small jobs); the message could
            // not be published, the node gave it back or was lost (queued again, attempts
            // left) or it failed for good; the owner cancels.
            (Dispatched, Running | Succeeded | Queued | Failed | Cancelled) => true,
            (Running, Succeeded | Queued | Failed | Cancelled) => true,
            _ => false,
        }
    }
}

states! {
    /// How one attempt of a job (one dispatch to one node) went.
    AttemptOutcome, "attempt outcome" {
        Dispatched = "dispatched",
        Running = "running",
        Succeeded = "succeeded",
        /// The node reported a failure.
        Failed = "failed",
        /// The node can no longer finish it: dead, removed, restarted, or never started it.
        Lost = "lost",
        Cancelled = "cancelled",
    }
}

impl AttemptOutcome {
    /// True once the attempt is over.
    pub const fn is_final(self) -> bool {
        !matches!(self, AttemptOutcome::Dispatched | AttemptOutcome::Running)
    }
}

states! {
    /// What the server sees of a node's agent, from its heartbeats.
    NodeStatus, "node status" {
        /// Added, no agent has enrolled yet.
        Waiting = "waiting",
        /// Heartbeats arrive.
        Active = "active",
        /// The agent is shutting down: it finishes its jobs and takes no new ones.
        Stopping = "stopping",
        /// No heartbeat within the timeout.
        Dead = "dead",
    }
}

impl NodeStatus {
    /// Whether a node in this state may move to `next` (a node never goes back to waiting).
    pub const fn can_become(self, next: NodeStatus) -> bool {
        use NodeStatus::*;
        matches!(
            (self, next),
            (Waiting, Active | Stopping) | (Active, Stopping | Dead) | (Stopping, Active | Dead) | (Dead, Active | Stopping)
        )
    }

    /// True while heartbeats arrive, so the dead-node sweep watches it.
    pub const fn is_heard(self) -> bool {
        matches!(self, NodeStatus::Active | NodeStatus::Stopping)
    }

    /// The reason recorded for a transition the heartbeats caused.
    pub const fn heard_reason(from: NodeStatus, to: NodeStatus) -> &'static str {
        match (from, to) {
            (_, NodeStatus::Stopping) => "agent stopping: finishing its jobs, taking no new ones",
            (NodeStatus::Waiting, _) => "agent connected",
            (NodeStatus::Stopping, _) => "agent running again",
            _ => "heartbeats resumed",
        }
    }
}

states! {
    /// What the node's owner or an admin decided about it.
    AdminState, "admin state" {
        /// Takes jobs.
        Enabled = "enabled",
        /// Takes no new jobs; running ones go on.
        Disabled = "disabled",
        /// Finishes its jobs, then takes no new ones.
        Draining = "draining",
        /// Gone for good: its credentials are revoked.
        Removed = "removed",
    }
}

impl AdminState {
    /// Removal is final; every other state may become any other.
    pub const fn can_become(self, next: AdminState) -> bool {
        let _ = next;
        !matches!(self, AdminState::Removed)
    }

    /// Whether the balancer may give the node new work.
    pub const fn takes_jobs(self) -> bool {
        matches!(self, AdminState::Enabled)
    }
}

states! {
    /// Whose jobs a node runs besides its owner's. A node is its owner's machine, and it sees
    /// everything a job carries (the model, the input, the result), so it is private until its
    /// owner says otherwise.
    Sharing, "node sharing" {
        /// Its owner's jobs only.
        Private = "private",
        /// Anyone's jobs.
        Everyone = "everyone",
        /// Its owner's and those of the users named for it.
        Users = "users",
    }
}

states! {
    /// Which nodes a job may run on, as its owner chose at submission.
    Pool, "job pool" {
        /// The owner's nodes and the nodes shared with the owner.
        Shared = "shared",
        /// The owner's own nodes only.
        Own = "own",
    }
}

states! {
    /// What a schedule does when a fire time comes while its previous run has not ended.
    Overlap, "overlap policy" {
        /// No new run while the last one is queued or running (the default).
        Skip = "skip",
        /// Runs side by side.
        Allow = "allow",
        /// Cancels the running one, then starts the new one.
        Replace = "replace",
    }
}

states! {
    /// What became of one fire time of a schedule.
    RunOutcome, "schedule run outcome" {
        /// A job was submitted.
        Fired = "fired",
        /// No job: the overlap policy or the application said no (the note says which).
        Skipped = "skipped",
        /// No job: the time passed while the server was down or the schedule paused, and a
        /// later fire time (or the starting deadline) superseded it.
        Missed = "missed",
    }
}

states! {
    /// The two roles. Admins see every resource; users see their own.
    Role, "role" {
        User = "user",
        Admin = "admin",
    }
}

impl Role {
    /// The role a stored word names, if any.
    pub fn parse(word: &str) -> Option<Role> {
        word.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_serde() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in NodeStatus::ALL {
            assert_eq!(s.as_str().parse::<NodeStatus>(), Ok(*s));
        }
        for s in AdminState::ALL {
            assert_eq!(s.as_str().parse::<AdminState>(), Ok(*s));
        }
        for s in AttemptOutcome::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in Sharing::ALL {
            assert_eq!(s.as_str().parse::<Sharing>(), Ok(*s));
        }
        for s in Pool::ALL {
            assert_eq!(s.as_str().parse::<Pool>(), Ok(*s));
        }
        for s in Overlap::ALL {
            assert_eq!(s.as_str().parse::<Overlap>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RunOutcome::ALL {
            assert_eq!(s.as_str().parse::<RunOutcome>(), Ok(*s));
        }
        assert_eq!("Queued".parse::<JobStatus>().unwrap_err().to_string(), "unknown job status \"Queued\"");
    }

    #[test]
    fn terminal_jobs_never_change() {
        for from in JobStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in JobStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn job_lifecycle() {
        use JobStatus::*;
        assert!(Queued.can_become(Dispatched));
        assert!(!Queued.can_become(Running), "a job starts only once a node has it");
        assert!(!Queued.can_become(Succeeded));
        assert!(Dispatched.can_become(Succeeded), "small jobs report only once done");
        assert!(Running.can_become(Queued), "a lost attempt goes back to the queue");
        for s in [Queued, Dispatched, Running] {
            assert!(s.can_become(Cancelled));
            assert!(!s.is_terminal());
        }
        assert_eq!(JobStatus::ALL.iter().filter(|s| s.is_live()).copied().collect::<Vec<_>>(), JobStatus::LIVE);
    }

    #[test]
    fn nodes_never_go_back_to_waiting_and_removal_is_final() {
        for s in NodeStatus::ALL {
            assert!(!s.can_become(NodeStatus::Waiting));
        }
        for s in AdminState::ALL {
            assert!(!AdminState::Removed.can_become(*s));
        }
        assert!(AdminState::Draining.can_become(AdminState::Enabled));
        assert!(AdminState::Enabled.can_become(AdminState::Removed));
        assert!(AdminState::Enabled.takes_jobs() && !AdminState::Draining.takes_jobs());
    }

    #[test]
    fn attempt_outcomes() {
        assert!(!AttemptOutcome::Running.is_final());
        assert!(AttemptOutcome::Lost.is_final());
    }
}
