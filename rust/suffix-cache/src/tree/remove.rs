//! Removing a sequence: every truncated suffix of it loses one occurrence.

use super::{SuffixTree, NIL, ROOT};

impl SuffixTree {
    /// Uncounts every truncated suffix of the sequence in `slot` (longest first, so every
    /// intermediate state is the tree of a suffix-closed set of occurrences), then retires it.
    pub(super) fn remove_slot(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.live = false;
        s.cursors = Default::default();
        let len = s.tokens.len();
        self.seq_slots.remove(&s.id);
        self.live_tokens -= len;
        self.zombie_tokens += len;
        // Our own reference keeps the tokens readable while nodes pointing at them go away.
        self.acquire_label(slot);
        for start in 0..len {
            self.uncount_suffix(slot, start, (start + self.max_depth as usize).min(len));
        }
        self.release_label(slot);
        self.maybe_relabel();
    }

    /// Removes one occurrence of `tokens(slot)[start..end]` (which ends at an explicit node).
    fn uncount_suffix(&mut self, slot: u32, start: usize, end: usize) {
        self.node_mut(ROOT).count -= 1;
        let target = (end - start) as u32;
        let mut node = ROOT;
        while self.node(node).depth < target {
            let token = self.tokens(slot)[start + self.node(node).depth as usize];
            let next = self.child(node, token);
            debug_assert!(next != NIL && self.node(next).depth <= target, "suffix path broken");
            let n = self.node_mut(next);
            n.count -= 1;
            if n.count == 0 {
                // Everything below on this path held only this occurrence.
                self.detach(next);
                self.free_chain(next);
                self.merge_if_redundant(node);
                return;
            }
            if self.node(node).best_child == next {
                self.rescan_best(node);
            }
            node = next;
        }
        // The occurrence ended here: the node may have become redundant.
        self.merge_if_redundant(node);
    }

    /// Frees a detached node and its single-child chain (all with no occurrences left).
    fn free_chain(&mut self, mut node: u32) {
        while node != NIL {
            // An only child (so not in the child map).
            let child = self.node(node).first_child;
            debug_assert!(
                child == NIL || self.node(child).next_sib == NIL,
                "dead node with several children"
            );
            self.free(node);
            node = child;
        }
    }
}
