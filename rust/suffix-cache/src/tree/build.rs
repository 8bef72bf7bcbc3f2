//! Building the tree of a whole first sequence at once (a request's prompt tree), top down:
//! the truncated suffixes are grouped by their next token, depth by depth, and each group
//! becomes one explicit node. Appending token by token costs `max_depth` cursor steps per
//! token, each a count update and often a child lookup, split or merge; here each token is
//! read about as many times as its suffix shares a prefix with another one (at most
//! `max_depth`, as a sequential compare), and every node is allocated once with its final
//! count. The result is the same trie (same explicit nodes, same counts, hence the same
//! drafts) as appending the tokens one by one; only labels and sibling order may differ,
//! and neither changes what the tree answers.

use super::{Node, SuffixTree, ROOT};
use crate::TokenId;

/// Truncated suffixes (start positions `starts[lo..hi]`) that share their first `depth`
/// tokens, the last of which is the first token of the edge below `parent`.
#[derive(Debug, Clone, Copy)]
struct Group {
    lo: usize,
    hi: usize,
    parent: u32,
    depth: usize,
}

impl SuffixTree {
    /// Stores `tokens` as the sequence in `slot` and builds the whole tree over them; the tree
    /// must be empty (only the root) and the sequence new.
    pub(super) fn build_first_sequence(&mut self, slot: u32, tokens: &[TokenId]) {
        debug_assert!(self.live_nodes == 1 && self.tokens(slot).is_empty());
        let n = tokens.len();
        // Nothing holds a stamp: the clock can start over (so that it does not wrap here).
        self.clock = 0;
        self.reserve_for(n);
        self.slots[slot as usize].tokens.extend_from_slice(tokens);
        let mut build = Build {
            tree: self,
            tokens,
            slot,
            starts: (0..n as u32).collect(),
            keyed: Vec::new(),
            spare: Vec::new(),
            pending: Vec::new(),
        };
        build.split(0, n, ROOT, 0);
        while let Some(group) = build.pending.pop() {
            let (node, depth) = build.group_node(group);
            if depth < build.tree.max_depth as usize && group.hi - group.lo > 1 {
                build.split(group.lo, group.hi, node, depth);
            }
        }
        self.node_mut(ROOT).count += n as u32;
        self.live_tokens += n;
        self.clock = n as u32;
        if n > 0 {
            self.rebuild_cursors(slot);
        }
    }
}

/// The state of one [`SuffixTree::build_first_sequence`].
struct Build<'a> {
    tree: &'a mut SuffixTree,
    tokens: &'a [TokenId],
    slot: u32,
    /// Start positions of the truncated suffixes, each group's contiguous.
    starts: Vec<u32>,
    /// Sort buffer: (next token, start) packed.
    keyed: Vec<u64>,
    /// Second buffer of the radix sort.
    spare: Vec<u64>,
    pending: Vec<Group>,
}

impl Build<'_> {
    /// Allocates and attaches the explicit node of `group`: it sits where the group's
    /// suffixes first differ, one of them ends, or `max_depth` is reached, and counts them
    /// all. Returns the node and its depth.
    fn group_node(&mut self, group: Group) -> (u32, usize) {
        let tokens = self.tokens;
        let n = tokens.len();
        let members = &self.starts[group.lo..group.hi];
        // Compared against the member that ends first, the others need no compare past its
        // end (else a long run of one token, or any periodic text, would compare each member
        // up to max_depth at every depth: max_depth^2 / 2 reads per token).
        let first = members.iter().copied().max().unwrap_or_default() as usize;
        // Deepest depth every member reaches with the same tokens as `first` (no member ends
        // before it).
        let mut depth = (self.tree.max_depth as usize).min(n - first);
        for &start in members {
            if depth == group.depth {
                break;
            }
            let start = start as usize;
            if start == first {
                continue;
            }
            let ours = &tokens[first + group.depth..first + depth];
            let theirs = &tokens[start + group.depth..start + depth];
            if let Some(differ) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                depth = group.depth + differ;
            }
        }
        let token = tokens[first + group.depth - 1];
        let count = (group.hi - group.lo) as u32;
        // The member starting last is the most recent occurrence (the clock counts this
        // sequence's tokens from 0).
        let node = self.tree.alloc(Node::new(
            depth as u32,
            count,
            token,
            self.slot,
            (first + depth) as u32,
            first as u32,
        ));
        self.tree.attach(group.parent, node);
        (node, depth)
    }

    /// Splits the suffixes `starts[lo..hi]`, which share their first `depth` tokens and end
    /// at or pass through `node`, into one pending group per next token (a suffix that ends
    /// here, at most one, joins none).
    fn split(&mut self, lo: usize, hi: usize, node: u32, depth: usize) {
        let tokens = self.tokens;
        // Sort by next token, shifted up by one so that the suffix ending here (key 0) comes
        // first (tokens are non-negative, so as u32 they order the same).
        let keyed = &mut self.keyed;
        keyed.clear();
        keyed.extend(self.starts[lo..hi].iter().map(|&s| {
            let next = tokens.get(s as usize + depth).map_or(0, |&t| u64::from(t as u32) + 1);
            (next << 32) | u64::from(s)
        }));
        if keyed.len() >= RADIX_MIN {
            radix_sort_high(keyed, &mut self.spare);
        } else {
            keyed.sort_unstable();
        }
        let mut run_start = lo;
        for (i, &key) in keyed.iter().enumerate() {
            self.starts[lo + i] = key as u32;
            if key >> 32 == 0 {
                run_start = lo + i + 1;
            } else if lo + i > run_start && key >> 32 != keyed[i - 1] >> 32 {
                self.pending.push(Group { lo: run_start, hi: lo + i, parent: node, depth: depth + 1 });
                run_start = lo + i;
            }
        }
        if run_start < hi {
            self.pending.push(Group { lo: run_start, hi, parent: node, depth: depth + 1 });
        }
    }
}

/// Groups at least this large (the root's, mostly) are sorted by radix: a comparison sort
/// costs log2(n) passes over them, the radix sort two for a 128k-token vocabulary.
const RADIX_MIN: usize = 1024;
/// Bits per radix digit (2048 buckets: the counts stay in L1).
const RADIX_BITS: u32 = 11;

/// Sorts `keys` by their high 32 bits (stable, least significant digit first), with as many
/// passes as the largest key needs; `spare` is scratch space.
fn radix_sort_high(keys: &mut Vec<u64>, spare: &mut Vec<u64>) {
    let largest = keys.iter().map(|k| k >> 32).max().unwrap_or(0);
    let mut shift = 32;
    while shift < 64 && largest >> (shift - 32) > 0 {
        let digit = |key: u64| ((key >> shift) & ((1 << RADIX_BITS) - 1)) as usize;
        let mut offsets = [0usize; 1 << RADIX_BITS];
        for &key in keys.iter() {
            offsets[digit(key)] += 1;
        }
        let mut total = 0;
        for offset in offsets.iter_mut() {
            (*offset, total) = (total, total + *offset);
        }
        spare.clear();
        spare.resize(keys.len(), 0);
        for &key in keys.iter() {
            let slot = &mut offsets[digit(key)];
            spare[*slot] = key;
            *slot += 1;
        }
        std::mem::swap(keys, spare);
        shift += RADIX_BITS;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Drafter, SpecParams};

    /// Every explicit node as (string, count, recency stamp), sorted: two trees with the same
    /// list are the same trie whatever their node ids, labels and sibling order.
    fn canonical(tree: &SuffixTree) -> Vec<(Vec<TokenId>, u32, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![ROOT];
        while let Some(node) = stack.pop() {
            let n = tree.node(node);
            let string = if node == ROOT {
                Vec::new()
            } else {
                tree.tokens(n.label_slot)[(n.label_end - n.depth) as usize..n.label_end as usize].to_vec()
            };
            out.push((string, n.count, n.recent));
            stack.extend(tree.children_of(node));
        }
        out.sort();
        out
    }

    /// The tree of `tokens` appended by cursor steps: a first token builds the tree, the rest
    /// is appended to it.
    fn stepwise(depth: usize, tokens: &[TokenId]) -> SuffixTree {
        let mut tree = SuffixTree::new(depth).unwrap();
        let split = tokens.len().min(1);
        tree.extend(0, &tokens[..split]).unwrap();
        tree.extend(0, &tokens[split..]).unwrap();
        tree
    }

    fn sequence() -> impl Strategy<Value = (usize, Vec<TokenId>)> {
        // Small alphabets make long repeats (deep shared groups, ends inside groups).
        (1usize..10, 1 as TokenId..6)
            .prop_flat_map(|(depth, alphabet)| (Just(depth), prop::collection::vec(0..alphabet, 0..80)))
    }

    /// Long sequences: repeats of random phrases (deep shared groups) over a wide vocabulary,
    /// so the root's group is radix sorted (and over two digits).
    fn long_sequence() -> impl Strategy<Value = (usize, Vec<TokenId>)> {
        let phrase = prop::collection::vec(prop_oneof![0 as TokenId..4, 0..TokenId::MAX], 1..40);
        (1usize..30, prop::collection::vec(phrase, 1..8), prop::collection::vec(0usize..8, 40..160)).prop_map(
            |(depth, phrases, picks)| {
                let tokens = picks.iter().flat_map(|&p| phrases[p % phrases.len()].iter().copied()).collect();
                (depth, tokens)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn bulk_build_of_long_sequences_equals_token_by_token((depth, tokens) in long_sequence()) {
            let mut bulk = SuffixTree::new(depth).unwrap();
            bulk.extend(0, &tokens).unwrap();
            prop_assert_eq!(bulk.check_integrity(), Ok(()));
            prop_assert_eq!(canonical(&bulk), canonical(&stepwise(depth, &tokens)));
        }

        #[test]
        fn radix_sort_orders_by_the_high_half(
            pairs in prop::collection::vec((prop_oneof![0u32..3000, 0..1u32 << 31], any::<u32>()), 0..3000),
        ) {
            let mut keys: Vec<u64> = pairs.iter().map(|&(high, low)| (u64::from(high) << 32) | u64::from(low)).collect();
            let mut expected = keys.clone();
            radix_sort_high(&mut keys, &mut Vec::new());
            prop_assert!(keys.windows(2).all(|w| w[0] >> 32 <= w[1] >> 32));
            keys.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(keys, expected);
        }
    }

    proptest! {
        #[test]
        fn bulk_build_equals_token_by_token(
            (depth, tokens) in sequence(),
            more in prop::collection::vec(0 as TokenId..6, 0..20),
        ) {
            let mut bulk = SuffixTree::new(depth).unwrap();
            bulk.extend(0, &tokens).unwrap();
            let mut steps = stepwise(depth, &tokens);
            prop_assert_eq!(bulk.check_integrity(), Ok(()));
            prop_assert_eq!(canonical(&bulk), canonical(&steps));
            // Appending afterwards (the response) goes on from the bulk tree's cursors.
            bulk.extend(0, &more).unwrap();
            steps.extend(0, &more).unwrap();
            prop_assert_eq!(bulk.check_integrity(), Ok(()));
            prop_assert_eq!(canonical(&bulk), canonical(&steps));
            let all: Vec<TokenId> = tokens.iter().chain(&more).copied().collect();
            for cut in 0..=all.len() {
                let context = &all[cut.saturating_sub(depth + 1)..cut];
                for (use_tree_spec, drafter) in [
                    (false, Drafter::Arctic), (true, Drafter::Arctic),
                    (false, Drafter::Suffixspec), (true, Drafter::Suffixspec),
                ] {
                    let params = SpecParams {
                        max_spec_tokens: 8,
                        max_spec_factor: 2.0,
                        max_spec_offset: 1.0,
                        min_token_prob: 0.05,
                        use_tree_spec,
                        drafter,
                    };
                    prop_assert_eq!(
                        bulk.speculate_after(Some(0), context, &params).unwrap(),
                        steps.speculate_after(Some(0), context, &params).unwrap()
                    );
                }
            }
            bulk.remove(0).unwrap();
            prop_assert_eq!(bulk.check_integrity(), Ok(()));
            prop_assert_eq!(bulk.num_nodes(), 1);
        }
    }
}
