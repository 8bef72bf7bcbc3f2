//! Node arena: allocation with an intrusive free list, child links (one hash map for lookup by
//! token plus a doubly linked sibling list for iteration) and the cached best child.

use super::SuffixTree;
use crate::TokenId;

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
    };

    pub(crate) fn new(depth: u32, count: u32, token: TokenId, label_slot: u32, label_end: u32) -> Node {
        Node { count, depth, token, label_slot, label_end, ..Node::EMPTY }
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
        self.children.get(&(node, token)).copied().unwrap_or(NIL)
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
        self.children.insert((parent, token), child);
        let c = self.node_mut(child);
        c.parent = parent;
        c.next_sib = head;
        c.prev_sib = NIL;
        if head != NIL {
            self.node_mut(head).prev_sib = child;
        }
        self.node_mut(parent).first_child = child;
        self.offer_best(parent, child);
    }

    /// Unlinks `child` from its parent.
    pub(super) fn detach(&mut self, child: u32) {
        let Node { parent, token, prev_sib, next_sib, .. } = *self.node(child);
        self.children.remove(&(parent, token));
        if prev_sib != NIL {
            self.node_mut(prev_sib).next_sib = next_sib;
        } else {
            self.node_mut(parent).first_child = next_sib;
        }
        if next_sib != NIL {
            self.node_mut(next_sib).prev_sib = prev_sib;
        }
        if self.node(parent).best_child == child {
            self.rescan_best(parent);
        }
    }

    /// Puts `new` in `old`'s place under old's parent; `new` takes old's first token and must
    /// have old's count (best-child bookkeeping relies on that).
    pub(super) fn replace(&mut self, old: u32, new: u32) {
        let Node { parent, token, prev_sib, next_sib, .. } = *self.node(old);
        if let Some(entry) = self.children.get_mut(&(parent, token)) {
            *entry = new;
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
