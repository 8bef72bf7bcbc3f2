/// Everything that can go wrong while building or querying a token tree. The bindings map
/// each variant onto a Python exception of the `suffixspec.SuffixSpecError` hierarchy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch { what: &'static str, expected: usize, got: usize },
    #[error("invalid parent {parent} of node {index}: parents must be -1 (the root) or an earlier node")]
    InvalidParent { index: usize, parent: i64 },
    #[error("invalid token id {token} at index {index}: token ids must be non-negative")]
    InvalidToken { index: usize, token: i64 },
    #[error("invalid probability {prob} of node {index}: probabilities must be finite and in [0, 1]")]
    InvalidProb { index: usize, prob: f64 },
    #[error("node {node} is out of range for a tree of {len} nodes")]
    NodeOutOfRange { node: i64, len: usize },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
}
