//! Recency stamps: each node keeps where the most recent occurrence of its string starts
//! (`Node::recent`) on a clock that counts appended tokens, and which child holds the most
//! recent occurrence (`Node::newest_child`). Agents re-read a file after editing it and copy
//! its latest version; tool-call scaffolding repeats its latest form; so among the
//! continuations of a match the one holding the latest occurrence is worth more than its count
//! says (the suffixspec drafter uses it, `crate::expected`).
//!
//! They cost two u32 per node (40 -> 48 bytes) and a store or two per counted occurrence: an
//! occurrence reaching a node when the clock reads `t` started at `t - depth`, and is the newest
//! one there (the clock only grows), so appending overwrites the stamp and offers the node to
//! its parent as its newest child; a split node takes its lower half's stamp (same
//! occurrences); building a first sequence stamps each node with the last start of its group.
//! Removing a sequence leaves stamps as they are, so a stamp is an upper bound on the live
//! occurrences' latest start (the removed ones are the oldest in a cache that evicts oldest
//! first); the newest child is found again among the stamps when it leaves. Every stamp lies
//! before the clock: `recent + depth <= clock`. Stamps are exact while sequences are appended
//! one after another; when appends of several sequences interleave, an occurrence is stamped
//! when it reaches the node's depth, so a stamp may be later than the true start, never
//! earlier.

use super::{SuffixTree, NIL};

impl SuffixTree {
    /// Moves the clock back by half its range when it is about to wrap (after some four
    /// billion appended tokens): stamps older than that become 0 (all "long ago"), the others
    /// keep their order and their distance from the clock.
    #[cold]
    pub(super) fn rebase_clock(&mut self) {
        let offset = self.clock - (1 << 31);
        for node in &mut self.nodes {
            node.recent = node.recent.saturating_sub(offset);
        }
        self.clock -= offset;
        // Stamps that became 0 now tie: their order is the tokens'.
        for id in 0..self.nodes.len() as u32 {
            if self.node(id).count > 0 {
                self.rescan_newest(id);
            }
        }
    }

    /// Whether child `a` holds a more recent occurrence than child `b` (ties: smaller token).
    #[inline]
    pub(crate) fn is_newer(&self, a: u32, b: u32) -> bool {
        let (x, y) = (self.node(a), self.node(b));
        x.recent > y.recent || (x.recent == y.recent && x.token < y.token)
    }

    /// `child` is new or its stamp went up: it may now be the newest child.
    #[inline]
    pub(super) fn offer_newest(&mut self, parent: u32, child: u32) {
        if parent == super::ROOT {
            return;
        }
        let newest = self.node(parent).newest_child;
        if newest == NIL || (newest != child && self.is_newer(child, newest)) {
            self.node_mut(parent).newest_child = child;
        }
    }

    /// Finds the newest child again after it left.
    pub(super) fn rescan_newest(&mut self, parent: u32) {
        if parent == super::ROOT {
            return;
        }
        let mut newest = NIL;
        let mut next = self.node(parent).first_child;
        while next != NIL {
            if newest == NIL || self.is_newer(next, newest) {
                newest = next;
            }
            next = self.node(next).next_sib;
        }
        self.node_mut(parent).newest_child = newest;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::ROOT;
    use super::*;
    use crate::TokenId;

    /// Every live node's string with its stamp.
    fn stamps(tree: &SuffixTree) -> Vec<(Vec<TokenId>, u32)> {
        let mut out = Vec::new();
        let mut stack: Vec<u32> = tree.children_of(ROOT).collect();
        while let Some(node) = stack.pop() {
            let n = tree.node(node);
            let start = (n.label_end - n.depth) as usize;
            out.push((tree.tokens(n.label_slot)[start..n.label_end as usize].to_vec(), n.recent));
            stack.extend(tree.children_of(node));
        }
        out
    }

    /// Latest start (clock of its first token, less one) of a live occurrence of `s`: each
    /// sequence with the clocks of its tokens.
    fn latest_start(seqs: &[(Vec<TokenId>, Vec<u32>)], s: &[TokenId]) -> Option<u32> {
        seqs.iter()
            .flat_map(|(tokens, clocks)| {
                tokens.windows(s.len()).zip(clocks).filter(|(w, _)| *w == s).map(|(_, &t)| t - 1)
            })
            .max()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Extend(u64, Vec<TokenId>),
        Remove(u64),
    }

    fn ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
        let op = prop_oneof![
            4 => (0u64..3, prop::collection::vec(0 as TokenId..3, 0..12)).prop_map(|(s, t)| Op::Extend(s, t)),
            1 => (0u64..3).prop_map(Op::Remove),
        ];
        (1usize..8, prop::collection::vec(op, 1..24))
    }

    /// Replays `ops`, checking the stamps after each: exactly the latest start while each
    /// sequence is appended in one go (an extend of another id starts a new sequence) and
    /// nothing was removed; at least it otherwise (and before the clock: the integrity check).
    fn check(depth: usize, ops: &[Op], interleave: bool) -> Result<(), TestCaseError> {
        let mut tree = SuffixTree::new(depth).unwrap();
        // Per sequence: its tokens and the clock each was appended at.
        let mut seqs: std::collections::BTreeMap<u64, (Vec<TokenId>, Vec<u32>)> = Default::default();
        let (mut removed, mut last, mut fresh) = (false, None, 10);
        for op in ops {
            match op {
                Op::Extend(seq, tokens) => {
                    let seq = if interleave || last == Some(*seq) {
                        *seq
                    } else {
                        fresh += 1;
                        fresh
                    };
                    last = Some(seq);
                    tree.extend(seq, tokens).unwrap();
                    let (held, clocks) = seqs.entry(seq).or_default();
                    let first = tree.clock + 1 - tokens.len() as u32;
                    held.extend_from_slice(tokens);
                    clocks.extend((0..tokens.len() as u32).map(|i| first + i));
                }
                Op::Remove(k) => {
                    let Some(&seq) = seqs.keys().nth(*k as usize % seqs.len().max(1)) else { continue };
                    tree.remove(seq).unwrap();
                    seqs.remove(&seq);
                    removed = true;
                    last = None;
                }
            }
            prop_assert_eq!(tree.check_integrity(), Ok(()));
            let live: Vec<_> = seqs.values().cloned().collect();
            for (s, recent) in stamps(&tree) {
                let latest = latest_start(&live, &s).expect("a live node's string occurs");
                if interleave || removed {
                    prop_assert!(recent >= latest, "stamp of {:?}: {} < {}", s, recent, latest);
                } else {
                    prop_assert_eq!(recent, latest, "stamp of {:?}", s);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn stamps_cost_eight_bytes_per_node() {
        // Ten u32 links and counts, plus the stamp and the newest child.
        assert_eq!(std::mem::size_of::<super::super::Node>(), 48);
    }

    #[test]
    fn the_clock_moves_back_before_it_wraps() {
        let mut tree = SuffixTree::new(4).unwrap();
        tree.extend(0, &[1, 2, 3, 1, 2, 4]).unwrap();
        tree.clock = u32::MAX - 3;
        tree.extend(1, &[1, 2, 5, 6, 7, 8, 1, 2]).unwrap();
        assert_eq!(tree.check_integrity(), Ok(()));
        assert!(tree.clock < (1 << 31) + 16, "clock {}", tree.clock);
        let stamp = |s: &[TokenId]| {
            let pos = tree.locate(s).unwrap();
            tree.node(pos.node).recent
        };
        // The first sequence's stamps all went to 0; the second's kept their order.
        assert_eq!(stamp(&[2, 4]), 0);
        assert!(stamp(&[1, 2, 5]) > 0);
        assert!(stamp(&[7, 8]) > stamp(&[1, 2, 5]));
        assert_eq!(
            tree.node(tree.locate(&[1, 2]).unwrap().node).newest_child,
            tree.locate(&[1, 2, 5]).unwrap().node
        );
    }

    proptest! {
        #[test]
        fn stamps_hold_the_latest_start((depth, ops) in ops(), interleave in any::<bool>()) {
            check(depth, &ops, interleave)?;
        }
    }
}
