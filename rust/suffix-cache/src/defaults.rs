//! The default of every drafting setting, defined once.
//!
//! The bindings export these (`suffixspec._native.SPEC_DEFAULTS`) and the Python settings type
//! (`suffixspec.SpecConfig`) reads them from there, so Rust and Python cannot drift.

/// Depth of every suffix tree: the longest context match and draft counted (arctic-inference and
/// the SuffixDecoding paper use 64).
pub const MAX_DEPTH: usize = 64;

/// Most draft tokens verified per request and step. 32 is where the measured traces stop gaining:
/// accepted runs longer than 32 tokens are rare outside verbatim copies (benches/README.md), and on
/// a GPU a 33-token verification still costs about one decode step at small batch (memory-bound),
/// while a 64-token one starts to cost more where batch x tokens reaches the compute roofline.
pub const MAX_SPEC_TOKENS: usize = 32;

/// Draft tokens per matched context token (`floor(match_len * factor + offset)` caps a draft).
pub const MAX_SPEC_FACTOR: f64 = 1.0;

/// Added to the per-match-length cap above.
pub const MAX_SPEC_OFFSET: f64 = 0.0;

/// Draft nodes whose estimated probability of being reached is lower are dropped.
pub const MIN_TOKEN_PROB: f64 = 0.1;

/// Path drafts by default (arctic-inference's default); trees are a setting.
pub const USE_TREE_SPEC: bool = false;

/// The drafter of suffixspec's own decoding paths (`generate`, the engine, the engine adapters,
/// the replay's `suffixspec` methods): drafts sized by expected acceptance (`Drafter::Suffixspec`,
/// measured in benches/README.md). `SuffixCache.speculate` keeps arctic-inference's drafts by
/// default (`Drafter::Arctic`): it is the drop-in.
pub const DRAFTER: &str = "suffixspec";

/// Most nodes of a draft tree verified per request and step.
pub const MAX_TREE_NODES: usize = 64;

/// Drafts matched on fewer context tokens are not verified by suffixspec's own decoding loop: a
/// 1-token match in text that does not repeat is close to a guess (measured: 8% slower on sampled
/// text, almost no hits). The arctic-compatible `SuffixCache.speculate` has no such filter.
pub const MIN_MATCH_LEN: usize = 2;

/// Most cached (stopped) responses kept in the global tree: finite, so that many short responses
/// (each costing a few hundred bytes of bookkeeping beyond its tokens) cannot grow memory without
/// bound, and large enough that the token budget is what binds on real traces.
pub const MAX_CACHED_REQUESTS: usize = 1 << 16;

/// Most tokens of cached responses kept in the global tree (about 4M tokens).
pub const MAX_CACHED_TOKENS: usize = 1 << 22;
