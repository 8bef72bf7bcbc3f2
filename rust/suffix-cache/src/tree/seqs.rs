//! Sequence storage. Edge labels point into stored tokens, so a removed sequence whose tokens
//! are still referenced by some label stays as a "zombie" (reference counted); once zombie
//! tokens outgrow live tokens, every label is re-pointed at a live occurrence and the zombies
//! are freed. Memory thus stays bounded by about twice the live tokens.

use std::collections::VecDeque;

use super::{SuffixTree, NIL};
use crate::TokenId;

/// Zombie tokens tolerated on top of the live tokens before labels are re-pointed.
const ZOMBIE_SLACK: usize = 1 << 14;

#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) id: u64,
    pub(crate) tokens: Vec<TokenId>,
    /// Nodes of the growing suffixes (lengths `1..max_depth`), longest first: the back one has
    /// length 1. A ring, so that appending pops the longest and pushes a new one without
    /// shifting. Emptied by [`SuffixTree::shrink_seq`] and rebuilt if the sequence grows again.
    pub(crate) cursors: VecDeque<u32>,
    pub(crate) live: bool,
    /// Labels pointing into `tokens`.
    pub(crate) refs: u32,
}

impl SuffixTree {
    #[inline]
    pub(crate) fn tokens(&self, slot: u32) -> &[TokenId] {
        &self.slots[slot as usize].tokens
    }

    /// Token at string offset `offset` of `node`'s string (0-based, `offset < depth`).
    #[inline]
    pub(crate) fn label_token(&self, node: u32, offset: u32) -> TokenId {
        let n = self.node(node);
        self.tokens(n.label_slot)[(n.label_end - n.depth + offset) as usize]
    }

    pub(super) fn new_slot(&mut self, id: u64) -> u32 {
        let slot = Slot { id, live: true, ..Slot::default() };
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.slots[index as usize] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.seq_slots.insert(id, index);
        index
    }

    pub(super) fn acquire_label(&mut self, slot: u32) {
        if slot != NIL {
            self.slots[slot as usize].refs += 1;
        }
    }

    pub(super) fn release_label(&mut self, slot: u32) {
        if slot == NIL {
            return;
        }
        let s = &mut self.slots[slot as usize];
        s.refs -= 1;
        if s.refs == 0 && !s.live {
            self.zombie_tokens -= s.tokens.len();
            self.free_slot(slot);
        }
    }

    /// Number of cursors a sequence of `len` tokens keeps.
    #[inline]
    pub(super) fn cursor_count(&self, len: usize) -> usize {
        len.min(self.max_depth as usize - 1)
    }

    /// Re-finds the cursors of a sequence whose cursors were dropped (every suffix shorter
    /// than `max_depth` ends at an explicit node, so a skip/count walk lands on it).
    pub(super) fn rebuild_cursors(&mut self, slot: u32) {
        let tokens = self.tokens(slot);
        let len = tokens.len();
        let cursors: VecDeque<u32> = (1..=self.cursor_count(len))
            .rev()
            .map(|k| self.locate_known(&tokens[len - k..]).map_or(NIL, |pos| pos.node))
            .collect();
        debug_assert!(!cursors.contains(&NIL), "suffix of a live sequence missing");
        self.slots[slot as usize].cursors = cursors;
    }

    /// Forgets a removed sequence's slot once nothing points into it.
    pub(super) fn free_slot(&mut self, slot: u32) {
        self.slots[slot as usize] = Slot::default();
        self.free_slots.push(slot);
    }

    /// Re-points labels away from zombies when they hold too many tokens.
    pub(super) fn maybe_relabel(&mut self) {
        if self.zombie_tokens > self.live_tokens + ZOMBIE_SLACK {
            self.relabel_zombies();
        }
    }

    /// Walks every truncated suffix of every live sequence (that visits every node, since every
    /// node's string occurs in a live sequence) and re-points zombie labels at that occurrence.
    pub(super) fn relabel_zombies(&mut self) {
        let depth_limit = self.max_depth as usize;
        for slot in 0..self.slots.len() as u32 {
            if !self.slots[slot as usize].live {
                continue;
            }
            let len = self.tokens(slot).len();
            for start in 0..len {
                let end = (start + depth_limit).min(len);
                let mut node = super::ROOT;
                while (self.node(node).depth as usize) < end - start {
                    let token = self.tokens(slot)[start + self.node(node).depth as usize];
                    node = self.child(node, token);
                    let n = self.node(node);
                    if !self.slots[n.label_slot as usize].live {
                        self.set_label(node, slot, (start + n.depth as usize) as u32);
                    }
                }
            }
        }
        debug_assert_eq!(self.zombie_tokens, 0);
    }
}
