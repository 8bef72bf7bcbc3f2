//! Node arena: allocation with an intrusive free list, child links (a doubly linked sibling
//! list, plus one hash map for lookup by token among the children of branching nodes) and the
//! cached best child.
//!
//! Only children of nodes with two or more children are in the map: an only child is found
//! through `first_child`. Nodes that exist just because an occurrence ends there (cursors)
//! mostly have one child, and they move down their edge on every append (`slide_down`), which
//! would otherwise re-key their child in the map each time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::SuffixTree;
use crate::TokenId;

/// Hasher of the `(node, token)` child keys: packs the two 32-bit words into one u64 and mixes
/// it with a single multiply (FxHash would run one round per word).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    #[inline]
    fn write_u32(&mut self, word: u32) {
        self.0 = (self.0 << 32) | u64::from(word);
    }
    #[inline]
    fn write_i32(&mut self, word: i32) {
        self.write_u32(word as u32);
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Odd multiplier (as FxHash); the rotation brings the well-mixed high bits down to
        // the low bits hashbrown indexes buckets with (it takes its tag from the top 7 bits).
        self.0.wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26)
    }
}

/// (node, first token of a child edge) -> child.
pub(crate) type ChildMap = HashMap<(u32, TokenId), u32, BuildHasherDefault<PairHasher>>;

/// "No node" marker for u32 links.
pub(crate) const NIL: u32 = u32::MAX;
/// The root always lives at index 0.
pub(crate) const ROOT: u32 = 0;

/// One explicit node. Its string is `tokens(label_slot)[label_end - depth .. label_end]` (some
/// occurrence of it), its incoming edge covers depths `parent.depth + 1 ..= depth`, and every
/// string on that edge occurs `count` times.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    pub(crate) parent: u32,
    pub(crate) count: u32,
    pub(crate) depth: u32,
    /// First token of the incoming edge (the key under which the parent finds this node).
    pub(crate) token: TokenId,
    pub(crate) label_slot: u32,
    pub(crate) label_end: u32,
    pub(crate) first_child: u32,
    pub(crate) next_sib: u32,
    pub(crate) prev_sib: u32,
    /// Child with the highest count, ties to the smallest token (not maintained for the root).
    pub(crate) best_child: u32,
    /// Where the most recent occurrence of this node's string starts, on the tree's clock
    /// (see `recency.rs`).
    pub(crate) recent: u32,
    /// Child with the highest `recent`, ties to the smallest token (not maintained for the
    /// root).
    pub(crate) newest_child: u32,
}

impl Node {
    pub(crate) const EMPTY: Node = Node {
        parent: NIL,
        count: 0,
        depth: 0,
        token: -1,
        label_slot: NIL,
        label_end: 0,
        first_child: NIL,
        next_sib: NIL,
        prev_sib: NIL,
        best_child: NIL,
        recent: 0,
        newest_child: NIL,
    };

    pub(crate) fn new(
        depth: u32,
        count: u32,
        token: TokenId,
        label_slot: u32,
        label_end: u32,
        recent: u32,
    ) -> Node {
        Node { count, depth, token, label_slot, label_end, recent, ..Node::EMPTY }
    }
}

impl SuffixTree {
    #[inline]
    pub(crate) fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    #[inline]
    pub(super) fn node_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// The child of `node` whose edge starts with `token`, or NIL.
    #[inline]
    pub(crate) fn child(&self, node: u32, token: TokenId) -> u32 {
        let n = self.node(node);
        let first = n.first_child;
        if first == NIL {
            return NIL;
        }
        let f = self.node(first);
        if f.token == token {
            return first;
        }
        if f.next_sib == NIL {
            return NIL;
        }
        // The most frequent continuation is the likeliest one (not kept for the root).
        let best = n.best_child;
        if best != NIL && self.node(best).token == token {
            return best;
        }
        self.children.get(&(node, token)).copied().unwrap_or(NIL)
    }

    /// Whether `node` has two or more children (then they are in the child map).
    #[inline]
    pub(super) fn is_branching(&self, node: u32) -> bool {
        let first = self.node(node).first_child;
        first != NIL && self.node(first).next_sib != NIL
    }

    /// Iterates the children of `node` (unordered).
    pub(crate) fn children_of(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.node(node).first_child;
        std::iter::from_fn(move || {
            let current = next;
            (current != NIL).then(|| {
                next = self.node(current).next_sib;
                current
            })
        })
    }

    /// Stores `node` (unlinked) and takes a reference on its label.
    pub(super) fn alloc(&mut self, node: Node) -> u32 {
        self.acquire_label(node.label_slot);
        self.live_nodes += 1;
        if self.free_head != NIL {
            let id = self.free_head;
            self.free_head = self.node(id).parent;
            *self.node_mut(id) = node;
            id
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Returns an unlinked node to the free list (count 0 marks it free).
    pub(super) fn free(&mut self, id: u32) {
        let slot = self.node(id).label_slot;
        *self.node_mut(id) = Node { parent: self.free_head, ..Node::EMPTY };
        self.free_head = id;
        self.live_nodes -= 1;
        self.release_label(slot);
    }

    pub(super) fn set_label(&mut self, id: u32, slot: u32, end: u32) {
        if self.node(id).label_slot == slot {
            self.node_mut(id).label_end = end;
            return;
        }
        self.acquire_label(slot);
        let old = std::mem::replace(&mut self.node_mut(id).label_slot, slot);
        self.node_mut(id).label_end = end;
        self.release_label(old);
    }

    /// Links `child` as a new child of `parent` (map entry, head of the sibling list, best child).
    pub(super) fn attach(&mut self, parent: u32, child: u32) {
        let head = self.node(parent).first_child;
        let token = self.node(child).token;
        if head != NIL {
            if self.node(head).next_sib == NIL {
                // The parent starts branching: its only child joins the map too.
                self.children.insert((parent, self.node(head).token), head);
            }
            self.children.insert((parent, token), child);
        }
        let c = self.node_mut(child);
        c.parent = parent;
        c.next_sib = head;
        c.prev_sib = NIL;
        if head != NIL {
            self.node_mut(head).prev_sib = child;
        }
        self.node_mut(parent).first_child = child;
        self.offer_best(parent, child);
        self.offer_newest(parent, child);
    }

    /// Unlinks `child` from its parent.
    pub(super) fn detach(&mut self, child: u32) {
        let Node { parent, token, prev_sib, next_sib, .. } = *self.node(child);
        if self.is_branching(parent) {
            self.children.remove(&(parent, token));
        }
        if prev_sib != NIL {
            self.node_mut(prev_sib).next_sib = next_sib;
        } else {
            self.node_mut(parent).first_child = next_sib;
        }
        if next_sib != NIL {
            self.node_mut(next_sib).prev_sib = prev_sib;
        }
        let first = self.node(parent).first_child;
        if first != NIL && self.node(first).next_sib == NIL {
            // Down to one child: it leaves the map.
            self.children.remove(&(parent, self.node(first).token));
        }
        if self.node(parent).best_child == child {
            self.rescan_best(parent);
        }
        if self.node(parent).newest_child == child {
            self.rescan_newest(parent);
        }
    }

    /// Puts `new` in `old`'s place under old's parent; `new` takes old's first token and must
    /// have old's count (best-child bookkeeping relies on that).
    pub(super) fn replace(&mut self, old: u32, new: u32) {
        let Node { parent, token, prev_sib, next_sib, recent, .. } = *self.node(old);
        let as_new = self.node(new).recent >= recent;
        if prev_sib != NIL || next_sib != NIL {
            if let Some(entry) = self.children.get_mut(&(parent, token)) {
                *entry = new;
            }
        }
        let n = self.node_mut(new);
        n.parent = parent;
        n.token = token;
        n.prev_sib = prev_sib;
        n.next_sib = next_sib;
        if prev_sib != NIL {
            self.node_mut(prev_sib).next_sib = new;
        } else {
            self.node_mut(parent).first_child = new;
        }
        if next_sib != NIL {
            self.node_mut(next_sib).prev_sib = new;
        }
        if self.node(parent).best_child == old {
            self.node_mut(parent).best_child = new;
        }
        // `new` (old's only child, or its split-off upper half) may hold a newer occurrence
        // than `old` did (see `recency.rs`), or, when `old`'s newest was a removed one, an older one.
        if self.node(parent).newest_child != old {
            self.offer_newest(parent, new);
        } else if as_new {
            self.node_mut(parent).newest_child = new;
        } else {
            self.rescan_newest(parent);
        }
    }

    /// Whether child `a` ranks before child `b` (higher count, ties: smaller token).
    #[inline]
    pub(super) fn ranks_before(&self, a: u32, b: u32) -> bool {
        let (x, y) = (self.node(a), self.node(b));
        x.count > y.count || (x.count == y.count && x.token < y.token)
    }

    /// `child`'s count went up (or it is new): it may now be the best child.
    #[inline]
    pub(super) fn offer_best(&mut self, parent: u32, child: u32) {
        if parent == ROOT {
            return;
        }
        let best = self.node(parent).best_child;
        if best == NIL || self.ranks_before(child, best) {
            self.node_mut(parent).best_child = child;
        }
    }

    /// Recomputes the best child after the old best lost count or left.
    pub(super) fn rescan_best(&mut self, parent: u32) {
        if parent == ROOT {
            return;
        }
        let mut best = NIL;
        let mut next = self.node(parent).first_child;
        while next != NIL {
            if best == NIL || self.ranks_before(next, best) {
                best = next;
            }
            next = self.node(next).next_sib;
        }
        self.node_mut(parent).best_child = best;
    }
}
