//! Appending tokens: every growing suffix (cursor) of the sequence takes one step down.

use super::{Node, SuffixTree, NIL, ROOT};
use crate::TokenId;

impl SuffixTree {
    /// Appends one token to the sequence in `slot`: the suffixes of lengths `0..max_depth`
    /// ending at the old end each grow by `token` (longest first), counting one occurrence each.
    pub(super) fn append_token(&mut self, slot: u32, token: TokenId) {
        if self.clock == u32::MAX {
            self.rebase_clock();
        }
        self.clock += 1;
        let s = &mut self.slots[slot as usize];
        s.tokens.push(token);
        let end = s.tokens.len() as u32;
        let mut cursors = std::mem::take(&mut s.cursors);
        let full = cursors.len() == self.max_depth as usize - 1;
        for cursor in cursors.iter_mut() {
            *cursor = self.step(*cursor, token, slot, end);
        }
        // The longest suffix reached max_depth: it stops growing and needs no cursor any more.
        if full {
            cursors.pop_front();
        }
        let first = self.step(ROOT, token, slot, end);
        if self.max_depth > 1 {
            cursors.push_back(first);
        }
        self.node_mut(ROOT).count += 1;
        self.slots[slot as usize].cursors = cursors;
        self.live_tokens += 1;
    }

    /// Moves one occurrence ending at explicit node `from` one token further (the new token
    /// sits at `end - 1` of `slot`) and returns the explicit node it lands on.
    #[inline]
    fn step(&mut self, from: u32, token: TokenId, slot: u32, end: u32) -> u32 {
        // Hot path (most steps on novel text): a leaf holding only this occurrence, labelled
        // by this sequence, just grows its edge.
        let now = self.clock;
        let n = &mut self.nodes[from as usize];
        if n.first_child == NIL && n.count == 1 && n.label_slot == slot && from != ROOT {
            n.depth += 1;
            n.label_end = end;
            let recent = now - n.depth;
            // Unchanged unless another sequence's tokens were appended in between.
            if recent != n.recent {
                n.recent = recent;
                let parent = n.parent;
                self.offer_newest(parent, from);
            }
            return from;
        }
        self.step_slow(from, token, slot, end)
    }

    #[inline(never)]
    fn step_slow(&mut self, from: u32, token: TokenId, slot: u32, end: u32) -> u32 {
        let n = *self.node(from);
        let depth = n.depth + 1;
        // This occurrence is the most recent one of every string it reaches.
        let recent = self.clock - depth;
        let next = if n.first_child == NIL { NIL } else { self.child(from, token) };
        if next == NIL {
            if from != ROOT && n.first_child == NIL && n.count == 1 {
                // A leaf holding only this occurrence just grows its edge.
                let f = self.node_mut(from);
                f.depth = depth;
                f.recent = recent;
                self.offer_newest(n.parent, from);
                self.set_label(from, slot, end);
                return from;
            }
            let leaf = self.alloc(Node::new(depth, 1, token, slot, end, recent));
            self.attach(from, leaf);
            return leaf;
        }
        let child = *self.node(next);
        if child.depth > depth && from != ROOT && child.next_sib == NIL && child.count + 1 == n.count {
            // `from` exists only for this occurrence and the edge below continues with `token`:
            // split-then-merge would just move `from` one token down its edge.
            self.slide_down(from, next, depth, slot, end);
            self.node_mut(from).recent = recent;
            self.offer_newest(n.parent, from);
            return from;
        }
        let landed = if child.depth == depth { next } else { self.split(next, depth) };
        let l = self.node_mut(landed);
        l.count += 1;
        l.recent = recent;
        self.offer_best(from, landed);
        self.offer_newest(from, landed);
        self.merge_if_redundant(from);
        landed
    }

    /// Lengthens `node`'s edge by one token taken from the top of its only child's edge.
    fn slide_down(&mut self, node: u32, child: u32, depth: u32, slot: u32, end: u32) {
        // An only child: not in the child map, so re-keying it is just this.
        self.node_mut(child).token = self.label_token(child, depth);
        self.node_mut(node).depth = depth;
        self.set_label(node, slot, end);
    }

    /// Splits the edge into `lower` with a new node at `depth`; returns the new node (it has
    /// lower's occurrences, so lower's most recent one).
    pub(super) fn split(&mut self, lower: u32, depth: u32) -> u32 {
        let Node { count, depth: lower_depth, token, label_slot, label_end, recent, .. } = *self.node(lower);
        let label_end = label_end - (lower_depth - depth);
        let upper = self.alloc(Node::new(depth, count, token, label_slot, label_end, recent));
        let lower_token = self.label_token(lower, depth);
        self.replace(lower, upper);
        let l = self.node_mut(lower);
        l.token = lower_token;
        l.parent = upper;
        l.prev_sib = NIL;
        l.next_sib = NIL;
        let u = self.node_mut(upper);
        u.first_child = lower;
        u.best_child = lower;
        u.newest_child = lower;
        upper
    }

    /// Merges non-root `node` into its only child when they have the same count (then no
    /// occurrence ends at `node`, so it is not needed as an explicit node).
    pub(super) fn merge_if_redundant(&mut self, node: u32) {
        let n = *self.node(node);
        if node == ROOT || n.first_child == NIL {
            return;
        }
        let child = n.first_child;
        let c = self.node(child);
        if c.next_sib != NIL || c.count != n.count {
            return;
        }
        self.replace(node, child);
        self.free(node);
    }
}
