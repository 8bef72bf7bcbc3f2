//! Locating strings in the tree.

use super::{SuffixTree, NIL, ROOT};
use crate::TokenId;

/// A point in the trie: depth `depth` on the edge into `node` (`node`'s own string when
/// `depth == node.depth`); `(ROOT, 0)` is the empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) node: u32,
    pub(crate) depth: u32,
}

impl SuffixTree {
    /// Where `s` ends in the trie, if it occurs (`s` no longer than `max_depth`).
    pub(crate) fn locate(&self, s: &[TokenId]) -> Option<Position> {
        let mut node = ROOT;
        let mut done = 0usize;
        while done < s.len() {
            let next = self.child(node, s[done]);
            if next == NIL {
                return None;
            }
            let n = self.node(next);
            let take = ((n.depth as usize) - done).min(s.len() - done);
            let start = (n.label_end - n.depth) as usize + done;
            let label = &self.tokens(n.label_slot)[start + 1..start + take];
            if label != &s[done + 1..done + take] {
                return None;
            }
            done += take;
            node = next;
        }
        Some(Position { node, depth: done as u32 })
    }

    /// Like [`Self::locate`] for a string known to occur: jumps whole edges without comparing
    /// their tokens (skip/count), so it costs one lookup per explicit node on the path.
    pub(crate) fn locate_known(&self, s: &[TokenId]) -> Option<Position> {
        let mut node = ROOT;
        let mut done = 0usize;
        while done < s.len() {
            node = self.child(node, s[done]);
            if node == NIL {
                return None;
            }
            done = self.node(node).depth as usize;
        }
        Some(Position { node, depth: s.len() as u32 })
    }
}
