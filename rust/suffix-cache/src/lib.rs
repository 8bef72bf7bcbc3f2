//! Suffix-tree draft cache for lossless speculative decoding (SuffixDecoding, arXiv 2411.04975).
//!
//! CONTRACT (the bindings crate and the Python layer rely on exactly this public API):
//!
//! * [`SuffixTree`]: one depth-truncated, path-compressed suffix trie over several token
//!   sequences. `count(s)` of a string `s` with `1 <= |s| <= max_depth` is the number of its
//!   occurrences over all sequences in the tree (occurrences may overlap).
//! * [`SuffixCache`]: one tree per active request over its prompt + response ("local"), and
//!   one global tree over responses (active and cached). Budgets evict cached responses,
//!   oldest stop first. `max_cached_requests == 0` or `max_cached_tokens == 0` disables the
//!   global tree entirely.
//! * Draft semantics (what `speculate` returns) are specified on [`SpecParams`] and [`Draft`].
//!
//! Every fallible call validates all its inputs before it mutates anything, so an `Err`
//! leaves the cache exactly as it was.

mod cache;
pub mod defaults;
mod error;
mod expected;
mod params;
mod speculate;
mod tree;

pub use cache::SuffixCache;
pub use error::CacheError;
pub use tree::SuffixTree;

/// Token ids as the public API takes them (Python int32); negative ids are rejected.
pub type TokenId = i32;
/// Request handle (the Python layer maps arbitrary hashable request ids onto these).
pub type RequestId = u64;

/// Parameters of one speculation.
///
/// For a match length `m` (the last `m` context tokens occur in the tree), the draft has at
/// most `min(max_spec_tokens, floor(m * max_spec_factor + max_spec_offset + 1e-6))` tokens
/// (clamped at 0). Drafts never go deeper than `max_depth` in the tree (so `m + depth <=
/// max_depth`). Probability of a draft node = product over its path of
/// `count(child) / count(parent)` computed in f64 as `p_parent * (c_child as f64 / c_parent as
/// f64)`, starting from 1.0 at the matched node. Nodes with prob `< min_token_prob` are dropped.
///
/// Path mode: repeatedly follow the child with the highest count (ties: smallest token id).
/// Tree mode: best-first expansion of the frontier, highest prob first (ties: the node pushed
/// first; children are pushed in ascending token id order), until the token budget is reached.
///
/// Every match length `1..=min(len(context), max_depth)` is a candidate (the full context
/// included); the draft with the highest score wins, ties going to the longer match. Since a
/// draft of `k` tokens scores at most `k`, lengths whose token budget cannot beat the best
/// score so far are skipped (early stopping). Across the two trees of a request, the local
/// (prompt) tree wins ties.
///
/// All of the above is [`Drafter::Arctic`], the default; [`Drafter::Suffixspec`] sizes and
/// chooses drafts differently (see there) within the same `max_spec_tokens`, `max_depth` and
/// `min_token_prob` bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecParams {
    pub max_spec_tokens: usize,
    pub max_spec_factor: f64,
    pub max_spec_offset: f64,
    pub min_token_prob: f64,
    pub use_tree_spec: bool,
    pub drafter: Drafter,
}

/// The drafting algorithm of a speculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drafter {
    /// arctic-inference's drafts, exactly as specified on [`SpecParams`] (the drop-in default).
    #[default]
    Arctic,
    /// Drafts chosen by expected accepted tokens per verified node (details in the
    /// `expected` module): (1) continuation frequencies leave out the occurrence that is the
    /// context itself (the request's own sequence ends with the context, and that occurrence
    /// has no continuation yet), so a span seen once before is not halved; (2) each step below
    /// a match of `m` tokens, `j` tokens below it, is estimated as
    /// `count(child) / (count(parent) + k * (1 + 0.4 j) / m)` (`k` = 1.5 in the prompt tree,
    /// 0.75 in the global tree), so continuations backed by few occurrences after short
    /// matches fade fast and those backed by many, or following long matches, do not; at a
    /// branching node the child holding the newest occurrence, and in the global tree the child
    /// whose token last followed the previous token in the request's recent tokens, count
    /// extra occurrences; (3) nodes are drafted while their estimate exceeds a node cost of
    /// 0.2525 accepted tokens (0.2725 in tree mode; up to `max_spec_tokens` nodes, never deeper than `max_depth`, frequencies at
    /// least `min_token_prob`); `max_spec_factor` and `max_spec_offset` are not used. Probabilities are the estimates (non-increasing along
    /// paths, in (0, 1]); the draft with the highest gain (score minus node cost per node)
    /// over match lengths and the two trees wins, ties to the longer match and the local tree.
    Suffixspec,
}

impl Default for SpecParams {
    fn default() -> Self {
        Self {
            max_spec_tokens: defaults::MAX_SPEC_TOKENS,
            max_spec_factor: defaults::MAX_SPEC_FACTOR,
            max_spec_offset: defaults::MAX_SPEC_OFFSET,
            min_token_prob: defaults::MIN_TOKEN_PROB,
            use_tree_spec: defaults::USE_TREE_SPEC,
            drafter: Drafter::default(),
        }
    }
}

/// A speculated token tree. `parents[i]` is the index of node i's parent in this draft, or
/// -1 when node i is a child of the last context token; parents come before children.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    pub token_ids: Vec<TokenId>,
    pub parents: Vec<i32>,
    /// Estimated probability that the model reaches each node.
    pub probs: Vec<f64>,
    /// Sum of probs: the expected number of accepted tokens.
    pub score: f64,
    /// Length of the context suffix the draft was matched on (0 when the draft is empty).
    pub match_len: usize,
}

/// Memory and size figures of a cache (or a tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub active_requests: usize,
    pub cached_requests: usize,
    /// Tokens held by all trees (local trees + global tree).
    pub tokens: usize,
    /// Tokens of cached (stopped) responses in the global tree.
    pub cached_tokens: usize,
    pub nodes: usize,
    /// Heap bytes owned by the cache (capacity-based estimate).
    pub bytes: usize,
}

/// Default `max_cached_tokens` budget of the global tree (see [`defaults`]).
pub const DEFAULT_MAX_CACHED_TOKENS: usize = defaults::MAX_CACHED_TOKENS;

/// Default `max_cached_requests` budget (see [`defaults`]).
pub const DEFAULT_MAX_CACHED_REQUESTS: usize = defaults::MAX_CACHED_REQUESTS;

/// Largest `max_depth`. Appending a token costs `O(max_depth)` tree steps (every suffix of the
/// last `max_depth` tokens is extended), so the cap bounds ingestion at `MAX_DEPTH` steps per
/// token (a 40k-token prompt: at most ~41M steps) while staying far above useful depths
/// (arctic and vLLM default to 24-64).
pub const MAX_DEPTH: usize = 1024;

/// Construction parameters of a [`SuffixCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Depth of every tree (longest counted substring); must be >= 1.
    pub max_depth: usize,
    /// Most cached responses kept in the global tree (`None` = no limit, `Some(0)` = no global tree).
    pub max_cached_requests: Option<usize>,
    /// Most tokens of cached responses kept in the global tree (`0` = no global tree).
    pub max_cached_tokens: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_depth: defaults::MAX_DEPTH,
            max_cached_requests: Some(defaults::MAX_CACHED_REQUESTS),
            max_cached_tokens: defaults::MAX_CACHED_TOKENS,
        }
    }
}
