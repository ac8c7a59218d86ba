//! What the server answers an agent about one of its attempts.

/// Whether the agent goes on with an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// Stop: the job was cancelled, finished, or given to another attempt.
    Stop(String),
}

impl Verdict {
    pub fn stop(reason: impl Into<String>) -> Self {
        Verdict::Stop(reason.into())
    }
}
