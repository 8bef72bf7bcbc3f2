//! Property tests: masks, positions, merge, prune and acceptance against naive references.
// Index loops mirror the naive definitions being checked against.
#![allow(clippy::needless_range_loop)]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{monotone_tree, naive_accept, naive_ancestors, token_path, tree};
use proptest::prelude::*;
use suffixspec_tree::{accept_greedy_batch, build_verification_batch, merge, TokenTree, ROOT};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn mask_is_exactly_self_or_ancestor(t in tree(150, 5)) {
        let mask = t.ancestor_mask();
        let bools = mask.to_bools();
        prop_assert_eq!(mask.words_per_row(), t.len().div_ceil(64));
        for i in 0..t.len() {
            let ancestors: BTreeSet<usize> = naive_ancestors(&t, i).into_iter().collect();
            for j in 0..t.len() {
                prop_assert_eq!(mask.contains(i, j), ancestors.contains(&j), "row {} col {}", i, j);
                prop_assert_eq!(bools[i * t.len() + j], ancestors.contains(&j));
            }
            // No stray bits beyond the last column.
            let ones: u32 = mask.row(i).iter().map(|w| w.count_ones()).sum();
            prop_assert_eq!(ones as usize, ancestors.len());
        }
    }

    #[test]
    fn depths_positions_paths_and_children_agree(t in tree(80, 5), prefix_len in 0i64..10_000) {
        let positions = t.position_ids(prefix_len).unwrap();
        let csr = t.children_csr();
        prop_assert_eq!(csr.row(0).iter().map(|&c| c as usize).collect::<Vec<_>>(),
            (0..t.len()).filter(|&c| t.parents()[c] == ROOT).collect::<Vec<_>>());
        prop_assert_eq!(t.children(-1).unwrap(), csr.row(0).to_vec());
        for i in 0..t.len() {
            let mut path = naive_ancestors(&t, i);
            path.reverse();
            prop_assert_eq!(t.depths()[i] as usize, path.len());
            prop_assert_eq!(positions[i], prefix_len + path.len() as i64);
            prop_assert_eq!(t.path_to(i as i64).unwrap(), path);
            let naive_children: Vec<u32> =
                (0..t.len() as u32).filter(|&c| t.parents()[c as usize] == i as i32).collect();
            prop_assert_eq!(csr.row(i + 1), &naive_children[..]);
            prop_assert_eq!(t.children(i as i64).unwrap(), naive_children);
        }
    }

    #[test]
    fn merge_is_a_lossless_deduplicated_trie_union(drafts in prop::collection::vec(tree(30, 3), 0..5)) {
        let merged = merge(&drafts);
        // Parents-first and otherwise valid.
        prop_assert!(TokenTree::new(
            merged.tokens().to_vec(), merged.parents().to_vec(), Some(merged.probs().to_vec())).is_ok());
        // The set of root-to-node token paths is exactly the union of the inputs' paths, and
        // each merged node carries the largest probability seen on its path.
        let mut expected: BTreeMap<Vec<i32>, f64> = BTreeMap::new();
        for d in &drafts {
            for i in 0..d.len() {
                let p = expected.entry(token_path(d, i)).or_insert(0.0);
                *p = p.max(d.probs()[i]);
            }
        }
        let mut got: BTreeMap<Vec<i32>, f64> = BTreeMap::new();
        for i in 0..merged.len() {
            // Distinct nodes have distinct paths: no two siblings share a token.
            prop_assert!(got.insert(token_path(&merged, i), merged.probs()[i]).is_none());
        }
        prop_assert_eq!(got, expected);
        // Deterministic.
        prop_assert_eq!(merge(&drafts), merged);
    }

    #[test]
    fn prune_keeps_a_parent_closed_best_scoring_set(t in tree(60, 4), budget in 0usize..70) {
        let kept = t.prune_selection(budget);
        prop_assert_eq!(kept.len(), budget.min(t.len()));
        prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
        let is_kept: BTreeSet<usize> = kept.iter().copied().collect();
        for &k in &kept {
            let parent = t.parents()[k];
            prop_assert!(parent == ROOT || is_kept.contains(&(parent as usize)), "parent of {} dropped", k);
        }
        // Ranking guarantee: no dropped node scores higher than any kept node.
        let scores = t.path_min_probs();
        let worst_kept = kept.iter().map(|&k| scores[k]).fold(f64::INFINITY, f64::min);
        for d in (0..t.len()).filter(|d| !is_kept.contains(d)) {
            prop_assert!(scores[d] <= worst_kept);
        }
        // The pruned tree is that sub-tree, in the same relative order.
        let pruned = t.prune(budget);
        prop_assert_eq!(pruned.len(), kept.len());
        for (new, &old) in kept.iter().enumerate() {
            prop_assert_eq!(pruned.tokens()[new], t.tokens()[old]);
            prop_assert_eq!(pruned.probs()[new], t.probs()[old]);
            prop_assert_eq!(pruned.depths()[new], t.depths()[old]);
            prop_assert_eq!(token_path(&pruned, new), token_path(&t, old));
        }
    }

    #[test]
    fn prune_of_monotone_probs_keeps_the_most_probable(t in monotone_tree(60, 4), budget in 0usize..70) {
        let kept: BTreeSet<usize> = t.prune_selection(budget).into_iter().collect();
        let worst_kept = kept.iter().map(|&k| t.probs()[k]).fold(f64::INFINITY, f64::min);
        for d in (0..t.len()).filter(|d| !kept.contains(d)) {
            prop_assert!(t.probs()[d] <= worst_kept);
        }
    }

    #[test]
    fn accept_greedy_matches_a_naive_walk(
        t in tree(60, 3),
        raw_targets in prop::collection::vec(0i32..3, 61),
    ) {
        let targets = &raw_targets[..t.len() + 1];
        let got = t.accept_greedy(targets).unwrap();
        let (nodes, bonus) = naive_accept(&t, targets);
        prop_assert_eq!(&got.nodes, &nodes);
        prop_assert_eq!(got.bonus, bonus);
        // A chain from the root, each node being the model's token after the previous one.
        let mut tip = ROOT;
        for &n in &got.nodes {
            prop_assert_eq!(t.parents()[n], tip);
            prop_assert_eq!(t.tokens()[n], targets[(tip + 1) as usize]);
            tip = n as i32;
        }
        prop_assert_eq!(got.bonus, targets[(tip + 1) as usize]);
    }

    #[test]
    fn batch_block_matches_per_tree_masks_and_positions(
        trees in prop::collection::vec(tree(40, 5), 0..6),
        seed in any::<u64>(),
    ) {
        let refs: Vec<&TokenTree> = trees.iter().collect();
        let prefix_lens: Vec<i64> = (0..trees.len() as i64).map(|b| (seed as i64 & 0xffff) + 7 * b).collect();
        let roots: Vec<i32> = (0..trees.len() as i32).map(|b| 100 + b).collect();
        let out = build_verification_batch(&refs, &prefix_lens, &roots).unwrap();
        let n = 1 + trees.iter().map(TokenTree::len).max().unwrap_or(0);
        prop_assert_eq!((out.batch, out.width), (trees.len(), n));
        prop_assert_eq!(out.token_ids.len(), trees.len() * n);
        prop_assert_eq!(out.mask.len(), trees.len() * n * n);
        for (b, t) in trees.iter().enumerate() {
            let len = 1 + t.len();
            prop_assert_eq!(out.lengths[b], len as i64);
            let ancestors = t.ancestor_mask();
            let positions = t.position_ids(prefix_lens[b]).unwrap();
            let row_of = |r: usize| &out.token_ids[b * n..][..n][r];
            prop_assert_eq!(*row_of(0), i64::from(roots[b]));
            prop_assert_eq!(out.position_ids[b * n], prefix_lens[b]);
            for r in 1..n {
                let (token, position) = (out.token_ids[b * n + r], out.position_ids[b * n + r]);
                if r < len {
                    prop_assert_eq!(token, i64::from(t.tokens()[r - 1]));
                    prop_assert_eq!(position, positions[r - 1]);
                } else {
                    prop_assert_eq!(token, 0);
                    prop_assert_eq!(position, prefix_lens[b] + i64::from(t.max_depth()) + (r - len + 1) as i64);
                }
            }
            for r in 0..n {
                for c in 0..n {
                    let expected = c == 0 || c == r || (r < len && c < len && r > 0 && c > 0
                        && ancestors.contains(r - 1, c - 1));
                    prop_assert_eq!(out.mask[(b * n + r) * n + c], expected, "b {} r {} c {}", b, r, c);
                }
            }
        }
        // Verifying the block with targets read off it gives the per-tree results.
        let targets: Vec<i32> = out.token_ids.iter().map(|&t| (t % 5) as i32).collect();
        let accepted = accept_greedy_batch(&refs, &targets, n).unwrap();
        for (b, t) in trees.iter().enumerate() {
            prop_assert_eq!(&accepted[b], &t.accept_greedy(&targets[b * n..b * n + t.len() + 1]).unwrap());
        }
    }
}
