//! Token trees for speculative verification (SpecInfer-style tree attention).
//!
//! A [`TokenTree`] holds draft nodes in parents-first order: node `i` carries a token, the index
//! of its parent (`-1` = the root, i.e. the last context token that is fed together with the
//! tree) and a probability. From it this crate derives everything one verification step needs:
//! depths and position ids, the "self or ancestor" attention mask (bit-packed or boolean), the
//! padded root-first block of a whole batch, and the greedy acceptance walk over the model's
//! outputs. Trees from several drafts can be merged (trie union) and pruned to a node budget.
//!
//! Pure Rust; the Python bindings live in `suffixspec-python`.

mod accept;
mod batch;
mod error;
mod mask;
mod merge;
mod prune;
mod tree;

pub use accept::{accept_greedy_batch, Acceptance};
pub use batch::{build_verification_batch, VerificationBatch};
pub use error::TreeError;
pub use mask::AncestorMask;
pub use merge::merge;
pub use tree::{ChildrenCsr, TokenTree, ROOT};
