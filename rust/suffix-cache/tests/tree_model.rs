//! Property tests: a SuffixTree under random extend/remove sequences matches the naive model
//! (counts of every substring, draft of random contexts) and keeps its invariants.

mod common;

use std::collections::BTreeMap;

use common::{naive_draft, spec_params, substring_counts, Counts};
use proptest::prelude::*;
use suffixspec_cache::{CacheError, Drafter, SpecParams, SuffixTree, TokenId};

#[derive(Debug, Clone)]
enum Op {
    Extend(u64, Vec<TokenId>),
    Remove(u64),
    ReleaseRemoved,
    /// shrink_seq: drops the append cursors, which a later extend must find again.
    Shrink(u64),
}

fn op(alphabet: TokenId) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4, prop::collection::vec(0..alphabet, 0..14)).prop_map(|(s, t)| Op::Extend(s, t)),
        1 => (0u64..4).prop_map(Op::Remove),
        1 => Just(Op::ReleaseRemoved),
        1 => (0u64..4).prop_map(Op::Shrink),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, TokenId, Vec<Op>)> {
    (1usize..8, 1 as TokenId..5).prop_flat_map(|(depth, alphabet)| {
        (Just(depth), Just(alphabet), prop::collection::vec(op(alphabet), 1..30))
    })
}

fn model_counts(seqs: &BTreeMap<u64, Vec<TokenId>>, depth: usize) -> Counts {
    substring_counts(seqs.values().map(Vec::as_slice), depth)
}

fn assert_counts(tree: &SuffixTree, counts: &Counts, probes: &[Vec<TokenId>]) -> Result<(), TestCaseError> {
    for (s, &c) in counts {
        prop_assert_eq!(tree.count(s), c, "count of {:?}", s);
    }
    prop_assert_eq!(tree.num_distinct_strings(), counts.len() as u64);
    for s in probes {
        let expected = counts.get(s).copied().unwrap_or(0);
        prop_assert_eq!(tree.count(s), expected, "count of probe {:?}", s);
    }
    prop_assert_eq!(tree.count(&[]), 0);
    Ok(())
}

/// Contexts worth speculating on: tails of the sequences (so matches exist), random ones.
fn contexts(seqs: &BTreeMap<u64, Vec<TokenId>>, extra: &[Vec<TokenId>], depth: usize) -> Vec<Vec<TokenId>> {
    let mut out: Vec<Vec<TokenId>> = extra.to_vec();
    for seq in seqs.values() {
        for cut in [seq.len(), seq.len().saturating_sub(1), seq.len() / 2] {
            let start = cut.saturating_sub(depth + 2);
            out.push(seq[start..cut].to_vec());
        }
    }
    out
}

proptest! {
    // 256 cases by default; PROPTEST_CASES overrides.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn tree_matches_naive_model(
        (depth, _alphabet, ops) in scenario(),
        probes in prop::collection::vec(prop::collection::vec(0 as TokenId..6, 1..10), 0..12),
        params in prop::collection::vec(spec_params(), 3),
    ) {
        let mut tree = SuffixTree::new(depth).unwrap();
        let mut seqs: BTreeMap<u64, Vec<TokenId>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Extend(seq, tokens) => {
                    tree.extend(seq, &tokens).unwrap();
                    seqs.entry(seq).or_default().extend(&tokens);
                }
                Op::ReleaseRemoved => {
                    tree.release_removed_tokens();
                    prop_assert_eq!(tree.removed_tokens_held(), 0);
                }
                Op::Shrink(seq) => tree.shrink_seq(seq),
                Op::Remove(seq) => {
                    let result = tree.remove(seq);
                    if seqs.remove(&seq).is_some() {
                        prop_assert_eq!(result, Ok(()));
                    } else {
                        prop_assert_eq!(result, Err(CacheError::UnknownRequest(seq)));
                    }
                }
            }
            tree.check_integrity().map_err(TestCaseError::fail)?;
            let counts = model_counts(&seqs, depth);
            assert_counts(&tree, &counts, &probes)?;
            prop_assert_eq!(tree.num_tokens(), seqs.values().map(Vec::len).sum::<usize>());
            for (&seq, tokens) in &seqs {
                prop_assert_eq!(tree.seq_len(seq), Some(tokens.len()));
            }
            for context in contexts(&seqs, &probes, depth) {
                for p in &params {
                    let got = tree.speculate(&context, p).unwrap();
                    prop_assert_eq!(got, naive_draft(&counts, depth, &context, p), "context {:?} {:?}", context, p);
                }
            }
        }
    }

    #[test]
    fn rejected_extend_changes_nothing(
        (depth, alphabet, ops) in scenario(),
        bad_at in 0usize..5,
        seq in 0u64..5,
    ) {
        let mut tree = SuffixTree::new(depth).unwrap();
        for op in ops {
            match op {
                Op::Extend(seq, tokens) => tree.extend(seq, &tokens).unwrap(),
                Op::Remove(seq) => { let _ = tree.remove(seq); }
                Op::ReleaseRemoved => tree.release_removed_tokens(),
                Op::Shrink(seq) => tree.shrink_seq(seq),
            }
        }
        let before = (tree.num_tokens(), tree.num_nodes(), tree.memory_bytes(), tree.contains_seq(seq));
        let mut tokens: Vec<TokenId> = (0..5).map(|t| t % alphabet).collect();
        tokens[bad_at] = -1 - bad_at as TokenId;
        prop_assert_eq!(
            tree.extend(seq, &tokens),
            Err(CacheError::InvalidToken { index: bad_at, token: -1 - bad_at as i64 })
        );
        prop_assert_eq!(before, (tree.num_tokens(), tree.num_nodes(), tree.memory_bytes(), tree.contains_seq(seq)));
        tree.check_integrity().map_err(TestCaseError::fail)?;
    }
}

#[test]
fn speculate_rejects_bad_input() {
    let mut tree = SuffixTree::new(4).unwrap();
    tree.extend(1, &[1, 2, 3]).unwrap();
    let good = SpecParams {
        max_spec_tokens: 4,
        max_spec_factor: 1.0,
        max_spec_offset: 0.0,
        min_token_prob: 0.1,
        use_tree_spec: false,
        drafter: Drafter::Arctic,
    };
    assert_eq!(tree.speculate(&[1, -7], &good), Err(CacheError::InvalidToken { index: 1, token: -7 }));
    for bad in [
        SpecParams { max_spec_factor: f64::NAN, ..good.clone() },
        SpecParams { max_spec_factor: -1.0, ..good.clone() },
        SpecParams { max_spec_offset: f64::INFINITY, ..good.clone() },
        SpecParams { min_token_prob: 1.5, ..good.clone() },
        SpecParams { min_token_prob: f64::NAN, ..good.clone() },
    ] {
        assert!(matches!(tree.speculate(&[1], &bad), Err(CacheError::InvalidParameter { .. })), "{bad:?}");
    }
    assert!(matches!(SuffixTree::new(0), Err(CacheError::InvalidParameter { name: "max_depth", .. })));
}

/// Spec params with budgets up to past the depth, so long matches get drafts cut by the depth.
fn deep_params() -> impl Strategy<Value = SpecParams> {
    (
        0usize..40,
        prop::sample::select(vec![0.5, 1.0, 2.0]),
        prop::sample::select(vec![-2.0, 0.0, 1.0]),
        prop::sample::select(vec![0.0, 0.1, 0.3]),
        any::<bool>(),
    )
        .prop_map(
            |(max_spec_tokens, max_spec_factor, max_spec_offset, min_token_prob, use_tree_spec)| SpecParams {
                max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                use_tree_spec,
                drafter: Drafter::Arctic,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Repeated text: long matches, many match lengths sharing one count, drafts cut by the
    /// depth (the case where speculate drafts one range of lengths at once).
    #[test]
    fn long_repeated_matches_match_naive_model(
        depth in 4usize..24,
        base in prop::collection::vec(0 as TokenId..3, 4..30),
        copies in prop::collection::vec(prop::collection::vec((0usize..30, 0 as TokenId..3), 0..3), 1..4),
        params in prop::collection::vec(deep_params(), 4),
    ) {
        let mut tree = SuffixTree::new(depth).unwrap();
        let mut seqs: BTreeMap<u64, Vec<TokenId>> = BTreeMap::new();
        for (seq, edits) in copies.iter().enumerate() {
            let mut tokens = base.clone();
            for &(at, token) in edits {
                let at = at % tokens.len();
                tokens[at] = token;
            }
            tree.extend(seq as u64, &tokens).unwrap();
            seqs.insert(seq as u64, tokens);
        }
        let counts = model_counts(&seqs, depth);
        for seq in seqs.values() {
            for cut in 1..=seq.len() {
                let context = &seq[cut.saturating_sub(depth + 2)..cut];
                for p in &params {
                    let got = tree.speculate(context, p).unwrap();
                    prop_assert_eq!(got, naive_draft(&counts, depth, context, p), "context {:?} {:?}", context, p);
                }
            }
        }
    }
}
