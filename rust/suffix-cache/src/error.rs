use crate::RequestId;

/// Everything that can go wrong in the cache. The bindings map each variant onto a Python
/// exception of the `suffixspec.SuffixSpecError` hierarchy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    #[error("unknown request id {0}")]
    UnknownRequest(RequestId),
    #[error("request id {0} is already active")]
    DuplicateRequest(RequestId),
    #[error("invalid token id {token} at index {index}: token ids must be non-negative")]
    InvalidToken { index: usize, token: i64 },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
}
