/// Everything that can go wrong in the scheduler crate. A call that returns an error has
/// changed nothing. The bindings map each variant onto a `suffixspec.SuffixSpecError` class.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown request {0}")]
    UnknownRequest(u64),
    #[error("request {0} already exists")]
    DuplicateRequest(u64),
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    #[error("invalid draft tree of request {request}: {reason}")]
    InvalidTree { request: u64, reason: String },
    /// Not enough free KV blocks (only [`crate::BlockPool::reserve`] returns it; the scheduler
    /// resolves it by preemption).
    #[error("out of KV blocks: {needed} more needed, {free} free")]
    OutOfBlocks { needed: u32, free: u32 },
    /// A call made out of the step protocol (`schedule`, then `commit` for every planned request).
    #[error("{0}")]
    StepOrder(String),
}

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidParameter { name, reason: reason.into() }
}
