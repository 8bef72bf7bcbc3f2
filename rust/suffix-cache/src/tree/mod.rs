//! The depth-truncated, path-compressed suffix trie behind [`SuffixTree`].
//!
//! Every sequence contributes all its suffixes truncated to `max_depth`; a node's count is the
//! number of those truncated suffixes passing through it, i.e. the number of occurrences of its
//! string. Explicit nodes are exactly the root, branching nodes and nodes where an occurrence
//! ends (a sequence end or `max_depth`); everything else is compressed into edges whose labels
//! point into stored sequence tokens. The last `max_depth - 1` suffixes of a sequence keep
//! cursors (explicit nodes, since an occurrence ends there) so appending is `max_depth` steps.

mod arena;
mod build;
mod insert;
mod integrity;
mod recency;
mod remove;
mod seqs;
mod walk;

use rustc_hash::FxHashMap;

use arena::ChildMap;
pub(crate) use arena::{Node, NIL, ROOT};
pub(crate) use walk::Position;

use crate::{CacheError, TokenId};
use seqs::Slot;

/// Tokens one tree may hold (live plus zombie): counts, positions and depths are u32.
const MAX_TOKENS: usize = (u32::MAX - 1) as usize;

/// One depth-truncated suffix trie over several sequences (see the crate docs).
#[derive(Debug)]
pub struct SuffixTree {
    max_depth: u32,
    nodes: Vec<Node>,
    /// Head of the intrusive free list (linked through `Node::parent`).
    free_head: u32,
    live_nodes: usize,
    /// (node, first token of a child edge) -> child.
    children: ChildMap,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    seq_slots: FxHashMap<u64, u32>,
    live_tokens: usize,
    zombie_tokens: usize,
    /// Tokens appended so far (moved back when it would wrap): the time of the stamps
    /// ([`Node::recent`]).
    clock: u32,
}

/// First negative token, as the error the public API reports.
pub(crate) fn check_tokens(tokens: &[TokenId]) -> Result<(), CacheError> {
    match tokens.iter().position(|&t| t < 0) {
        Some(index) => Err(CacheError::InvalidToken { index, token: i64::from(tokens[index]) }),
        None => Ok(()),
    }
}

impl SuffixTree {
    /// A new empty tree; `1 <= max_depth <= MAX_DEPTH`.
    pub fn new(max_depth: usize) -> Result<Self, CacheError> {
        if !(1..=crate::MAX_DEPTH).contains(&max_depth) {
            return Err(CacheError::InvalidParameter {
                name: "max_depth",
                reason: format!("must be in [1, {}], got {max_depth}", crate::MAX_DEPTH),
            });
        }
        Ok(Self {
            max_depth: max_depth as u32,
            nodes: vec![Node::EMPTY],
            free_head: NIL,
            live_nodes: 1,
            children: ChildMap::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            seq_slots: FxHashMap::default(),
            live_tokens: 0,
            zombie_tokens: 0,
            clock: 0,
        })
    }

    /// Tokens appended so far: the time of the recency stamps (see `recency`).
    #[inline]
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    pub fn max_depth(&self) -> usize {
        self.max_depth as usize
    }

    /// Checks that `extend(seq, tokens)` would succeed (without changing anything).
    pub fn check_extend(&self, seq: u64, tokens: &[TokenId]) -> Result<(), CacheError> {
        check_tokens(tokens)?;
        let new_slot = usize::from(!self.seq_slots.contains_key(&seq));
        if self.live_tokens + self.zombie_tokens + tokens.len() > MAX_TOKENS
            || self.slots.len() + new_slot >= NIL as usize
        {
            return Err(CacheError::InvalidParameter {
                name: "tokens",
                reason: format!("a tree holds at most {MAX_TOKENS} tokens"),
            });
        }
        Ok(())
    }

    /// Appends tokens to sequence `seq` (created on first use).
    pub fn extend(&mut self, seq: u64, tokens: &[TokenId]) -> Result<(), CacheError> {
        self.check_extend(seq, tokens)?;
        let slot = match self.seq_slots.get(&seq) {
            Some(&slot) => slot,
            None => self.new_slot(seq),
        };
        if self.live_nodes == 1 && self.zombie_tokens == 0 && self.tokens(slot).is_empty() {
            // A first sequence in an empty tree (a prompt tree): built in one go.
            self.build_first_sequence(slot, tokens);
            self.debug_check();
            return Ok(());
        }
        let s = &mut self.slots[slot as usize];
        s.tokens.reserve(tokens.len());
        let len = s.tokens.len();
        if s.cursors.len() != self.cursor_count(len) && !tokens.is_empty() {
            self.rebuild_cursors(slot);
        }
        for &token in tokens {
            self.append_token(slot, token);
        }
        self.debug_check();
        Ok(())
    }

    /// Sizes the arena and the child map for a first sequence of `tokens` tokens (built in
    /// one go): growing them node by node would copy and rehash them several times over.
    /// Measured on the prompt trees of an agent trace (depth 24): 1.21 nodes and 1.21
    /// child-map entries per token (nearly every node hangs off a branching node).
    fn reserve_for(&mut self, tokens: usize) {
        let expected = tokens + tokens / 4;
        self.nodes.reserve(expected);
        self.children.reserve(expected);
    }

    /// Removes sequence `seq` and all its counts.
    pub fn remove(&mut self, seq: u64) -> Result<(), CacheError> {
        let slot = *self.seq_slots.get(&seq).ok_or(CacheError::UnknownRequest(seq))?;
        self.remove_slot(slot);
        self.debug_check();
        Ok(())
    }

    /// Releases spare capacity of sequence `seq` and drops its append cursors (call when it
    /// will not grow any more; should it grow after all, the cursors are found again).
    pub fn shrink_seq(&mut self, seq: u64) {
        if let Some(&slot) = self.seq_slots.get(&seq) {
            let s = &mut self.slots[slot as usize];
            s.tokens.shrink_to_fit();
            s.cursors = Default::default();
        }
    }

    /// Re-points every edge label at a live sequence so the tokens of removed sequences are
    /// freed now (it also happens by itself once they outgrow the live tokens).
    pub fn release_removed_tokens(&mut self) {
        self.relabel_zombies();
        self.debug_check();
    }

    /// Tokens of removed sequences still kept because edge labels point into them.
    pub fn removed_tokens_held(&self) -> usize {
        self.zombie_tokens
    }

    pub fn contains_seq(&self, seq: u64) -> bool {
        self.seq_slots.contains_key(&seq)
    }

    /// Length in tokens of sequence `seq`.
    pub fn seq_len(&self, seq: u64) -> Option<usize> {
        self.seq_slots.get(&seq).map(|&slot| self.tokens(slot).len())
    }

    /// Occurrences of `s` (0 when `s` is empty, longer than `max_depth` or absent).
    pub fn count(&self, s: &[TokenId]) -> u64 {
        if s.is_empty() || s.len() > self.max_depth as usize {
            return 0;
        }
        self.locate(s).map_or(0, |pos| u64::from(self.node(pos.node).count))
    }

    /// Number of distinct strings counted (sum of edge lengths), for tests and diagnostics.
    pub fn num_distinct_strings(&self) -> u64 {
        let mut total = 0u64;
        let mut stack = vec![ROOT];
        while let Some(node) = stack.pop() {
            for child in self.children_of(node) {
                total += u64::from(self.node(child).depth - self.node(node).depth);
                stack.push(child);
            }
        }
        total
    }

    /// Length of the longest common suffix of sequence `seq` (0 when absent) and `context`.
    pub(crate) fn common_suffix(&self, seq: u64, context: &[TokenId]) -> usize {
        let Some(&slot) = self.seq_slots.get(&seq) else { return 0 };
        let tokens = self.tokens(slot);
        tokens.iter().rev().zip(context.iter().rev()).take_while(|(a, b)| a == b).count()
    }

    /// Tokens held (sum of sequence lengths).
    pub fn num_tokens(&self) -> usize {
        self.live_tokens
    }

    pub fn num_nodes(&self) -> usize {
        self.live_nodes
    }

    /// Heap bytes owned (capacity-based estimate).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket on top of the entry.
        let map_bytes =
            |capacity: usize, entry: usize| if capacity == 0 { 0 } else { capacity * (entry + 1) };
        let seq_bytes: usize =
            self.slots.iter().map(|s| (s.tokens.capacity() + s.cursors.capacity()) * size_of::<u32>()).sum();
        self.nodes.capacity() * size_of::<Node>()
            + map_bytes(self.children.capacity(), size_of::<((u32, TokenId), u32)>())
            + self.slots.capacity() * size_of::<Slot>()
            + seq_bytes
            + self.free_slots.capacity() * size_of::<u32>()
            + map_bytes(self.seq_slots.capacity(), size_of::<(u64, u32)>())
    }

    /// Verifies every structural invariant; describes the first violation found.
    pub fn check_integrity(&self) -> Result<(), String> {
        self.integrity()
    }

    #[inline]
    fn debug_check(&self) {
        #[cfg(feature = "debug-checks")]
        if let Err(problem) = self.integrity() {
            panic!("suffix tree integrity violated: {problem}");
        }
    }
}
