//! Properties of suffixspec's own drafter (`Drafter::Suffixspec`): drafts are valid trees that
//! follow the text, probabilities lie in (0, 1] and never grow along a path, budgets hold, and
//! the request's own occurrence of the context is left out of the frequencies, the newest of
//! a few continuations is preferred.

use proptest::prelude::*;
use suffixspec_cache::{CacheConfig, Draft, Drafter, SpecParams, SuffixCache, SuffixTree, TokenId};

fn params(max_spec_tokens: usize, min_token_prob: f64, use_tree_spec: bool) -> SpecParams {
    SpecParams {
        max_spec_tokens,
        max_spec_factor: 1.0,
        max_spec_offset: 0.0,
        min_token_prob,
        use_tree_spec,
        drafter: Drafter::Suffixspec,
    }
}

/// Depth of each node (1 for children of the root); panics on an invalid parent.
fn depths(draft: &Draft) -> Vec<usize> {
    let mut depths = Vec::with_capacity(draft.parents.len());
    for (i, &parent) in draft.parents.iter().enumerate() {
        assert!(parent >= -1 && parent < i as i32, "parent {parent} of node {i}");
        depths.push(if parent < 0 { 1 } else { depths[parent as usize] + 1 });
    }
    depths
}

/// The root path of node `i` as tokens.
fn path_to(draft: &Draft, mut i: usize) -> Vec<TokenId> {
    let mut tokens = vec![draft.token_ids[i]];
    while draft.parents[i] >= 0 {
        i = draft.parents[i] as usize;
        tokens.push(draft.token_ids[i]);
    }
    tokens.reverse();
    tokens
}

/// Everything a draft must satisfy whatever the text.
fn check_draft(
    tree: &SuffixTree,
    context: &[TokenId],
    p: &SpecParams,
    draft: &Draft,
) -> Result<(), TestCaseError> {
    let n = draft.token_ids.len();
    prop_assert_eq!(draft.parents.len(), n);
    prop_assert_eq!(draft.probs.len(), n);
    prop_assert!(n <= p.max_spec_tokens, "{} nodes over the budget {}", n, p.max_spec_tokens);
    let depths = depths(draft);
    if !p.use_tree_spec {
        prop_assert!(draft.parents.iter().enumerate().all(|(i, &parent)| parent == i as i32 - 1));
    }
    for (i, &prob) in draft.probs.iter().enumerate() {
        prop_assert!(prob > 0.0 && prob <= 1.0, "prob {} of node {}", prob, i);
        if draft.parents[i] >= 0 {
            prop_assert!(prob <= draft.probs[draft.parents[i] as usize], "prob grows at node {}", i);
        }
    }
    let score: f64 = draft.probs.iter().sum();
    prop_assert!((score - draft.score).abs() < 1e-9);
    if n == 0 {
        prop_assert_eq!(draft.match_len, 0);
        return Ok(());
    }
    let deepest = depths.iter().copied().max().unwrap_or(0);
    prop_assert!(draft.match_len >= 1 && draft.match_len <= context.len());
    prop_assert!(draft.match_len + deepest <= tree.max_depth(), "deeper than max_depth");
    // Every node continues the matched suffix somewhere in the tree.
    let matched = &context[context.len() - draft.match_len..];
    for i in 0..n {
        let string: Vec<TokenId> = matched.iter().copied().chain(path_to(draft, i)).collect();
        prop_assert!(tree.count(&string) >= 1, "node {} is not a continuation: {:?}", i, string);
    }
    Ok(())
}

fn tokens(alphabet: TokenId, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<TokenId>> {
    prop::collection::vec(0..alphabet, len)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Repetitive text over a small alphabet, any budget: valid drafts in path and tree mode,
    /// with and without the own sequence.
    #[test]
    fn drafts_are_valid_and_follow_the_text(
        depth in 2usize..20,
        seqs in prop::collection::vec(tokens(4, 1..60), 1..4),
        max_spec_tokens in 0usize..40,
        min_token_prob in prop::sample::select(vec![0.0, 0.1, 0.3]),
        tree_spec in any::<bool>(),
    ) {
        let mut tree = SuffixTree::new(depth).unwrap();
        for (seq, tokens) in seqs.iter().enumerate() {
            tree.extend(seq as u64, tokens).unwrap();
        }
        let p = params(max_spec_tokens, min_token_prob, tree_spec);
        for (seq, tokens) in seqs.iter().enumerate() {
            for cut in 1..=tokens.len() {
                let context = &tokens[..cut];
                let usable = &context[context.len().saturating_sub(depth)..];
                let free = tree.speculate(context, &p).unwrap();
                check_draft(&tree, usable, &p, &free)?;
                // The whole sequence as the context: its own occurrence is left out.
                if cut == tokens.len() {
                    let own = tree.speculate_after(Some(seq as u64), context, &p).unwrap();
                    check_draft(&tree, usable, &p, &own)?;
                }
            }
        }
    }

    /// Through the cache (prompt tree + global tree, the request's own sequence in both).
    #[test]
    fn cache_drafts_are_valid(
        prompts in prop::collection::vec(tokens(3, 0..40), 1..4),
        outputs in prop::collection::vec(tokens(3, 1..30), 1..4),
        tree_spec in any::<bool>(),
    ) {
        let mut cache = SuffixCache::new(CacheConfig { max_depth: 16, ..CacheConfig::default() }).unwrap();
        let p = params(12, 0.1, tree_spec);
        for (req, (prompt, output)) in prompts.iter().zip(&outputs).enumerate() {
            let req = req as u64;
            cache.start_request(req, prompt).unwrap();
            let mut context = prompt.clone();
            for &token in output {
                if !context.is_empty() {
                    let draft = cache.speculate(req, &context, &p).unwrap();
                    let usable = &context[context.len().saturating_sub(16)..];
                    let local = cache.local_tree(req).unwrap();
                    let global = cache.global_tree().unwrap();
                    // It comes from one of the two trees.
                    if check_draft(local, usable, &p, &draft).is_err() {
                        check_draft(global, usable, &p, &draft)?;
                    }
                }
                cache.add_active_response(req, &[token]).unwrap();
                context.push(token);
            }
            cache.stop_request(req).unwrap();
        }
    }
}

#[test]
fn own_occurrence_is_left_out() {
    // 5 6 7 occurs once before, followed by 8; the context ends with its own 5 6 7.
    let seq: Vec<TokenId> = vec![1, 5, 6, 7, 8, 9, 2, 3, 5, 6, 7];
    let mut tree = SuffixTree::new(16).unwrap();
    tree.extend(0, &seq).unwrap();
    let p = params(8, 0.0, false);
    let own = tree.speculate_after(Some(0), &seq, &p).unwrap();
    let blind = tree.speculate(&seq, &p).unwrap();
    assert_eq!(own.token_ids[0], 8);
    assert_eq!(own.match_len, 3);
    // Seen once before and followed once: more likely than when the context's own occurrence
    // (which has no continuation yet) counts against it.
    if let Some(&blind_first) = blind.probs.first() {
        assert!(own.probs[0] > blind_first, "{own:?} vs {blind:?}");
    }
    assert!(own.token_ids.len() >= blind.token_ids.len());
    // Another sequence ending the same way is not this context's own occurrence.
    assert_eq!(tree.speculate_after(Some(1), &seq, &p).unwrap(), blind);
}

#[test]
fn arctic_remains_the_default() {
    assert_eq!(Drafter::default(), Drafter::Arctic);
    let mut tree = SuffixTree::new(16).unwrap();
    tree.extend(0, &[1, 5, 6, 7, 8, 9, 2, 3, 5, 6, 7]).unwrap();
    let arctic = SpecParams { drafter: Drafter::Arctic, ..params(8, 0.1, false) };
    // The own sequence changes nothing for arctic's drafts.
    let context = [3, 5, 6, 7];
    assert_eq!(tree.speculate_after(Some(0), &context, &arctic), tree.speculate(&context, &arctic));
}

#[test]
fn long_matches_draft_longer_than_short_ones() {
    // A 40-token span seen before: after matching 30 of it the copy is drafted further than
    // after matching 2 (which may be chance).
    let span: Vec<TokenId> = (100..140).collect();
    let mut seq: Vec<TokenId> = span.clone();
    seq.extend([7, 7, 7]);
    let mut tree = SuffixTree::new(64).unwrap();
    tree.extend(0, &seq).unwrap();
    let p = params(32, 0.0, false);
    let mut long_ctx = seq.clone();
    long_ctx.extend(&span[..30]);
    let mut short_ctx = seq.clone();
    short_ctx.extend(&span[..2]);
    let mut own = SuffixTree::new(64).unwrap();
    own.extend(0, &long_ctx).unwrap();
    let long = own.speculate_after(Some(0), &long_ctx, &p).unwrap();
    let mut own_short = SuffixTree::new(64).unwrap();
    own_short.extend(0, &short_ctx).unwrap();
    let short = own_short.speculate_after(Some(0), &short_ctx, &p).unwrap();
    assert_eq!(long.token_ids[..10], span[30..]);
    assert!(long.token_ids.len() > short.token_ids.len(), "{long:?} vs {short:?}");
    assert!(long.probs[0] > short.probs[0]);
}

#[test]
fn earlier_responses_are_trusted_more_than_the_prompt() {
    // The same span seen once, after the same 3-token match: in an earlier response (global
    // tree) its continuation is estimated higher than in the request's own prompt.
    let span: Vec<TokenId> = (100..140).collect();
    let p = params(32, 0.0, false);
    let context = [1, 2, 3, 100, 101, 102];
    let draft = |prompt: &[TokenId], earlier_response: Option<&[TokenId]>| {
        let mut cache = SuffixCache::new(CacheConfig::default()).unwrap();
        if let Some(response) = earlier_response {
            cache.start_request(1, &[]).unwrap();
            cache.add_active_response(1, response).unwrap();
            cache.stop_request(1).unwrap();
        }
        cache.start_request(2, prompt).unwrap();
        cache.add_active_response(2, &context).unwrap();
        cache.speculate(2, &context, &p).unwrap()
    };
    let from_prompt = draft(&span, None);
    let from_response = draft(&[9, 9], Some(&span));
    assert_eq!(from_prompt.token_ids[..2], span[3..5]);
    assert_eq!(from_response.token_ids[..2], span[3..5]);
    assert!(from_response.probs[0] > from_prompt.probs[0], "{from_response:?} vs {from_prompt:?}");
    assert!(from_response.token_ids.len() > from_prompt.token_ids.len());
}

#[test]
fn a_copy_seen_once_fades_faster_the_further_it_goes() {
    // A 60-token span seen once, matched on 10 of its tokens: each further token is trusted
    // less than the one before (the text may part from its source at any point), while a
    // continuation seen many times fades little.
    let span: Vec<TokenId> = (100..160).collect();
    let p = params(32, 0.0, false);
    let mut context = span.clone();
    context.extend([7, 8]);
    context.extend(&span[..10]);
    let mut tree = SuffixTree::new(64).unwrap();
    tree.extend(0, &context).unwrap();
    let once = tree.speculate_after(Some(0), &context, &p).unwrap();
    assert_eq!(once.token_ids[..], span[10..10 + once.token_ids.len()]);
    assert!(once.token_ids.len() >= 3 && once.token_ids.len() < 32, "{once:?}");
    let steps: Vec<f64> = once.probs.windows(2).map(|w| w[1] / w[0]).collect();
    assert!(steps.windows(2).all(|w| w[1] < w[0]), "step estimates {steps:?}");

    // The same 12-token phrase 50 times: its continuation is drafted to the end, all of it
    // above 0.85 (0.99 falling to 0.87 over 8 tokens).
    let phrase: Vec<TokenId> = (200..212).collect();
    let mut repeated: Vec<TokenId> = Vec::new();
    for i in 0..50 {
        repeated.extend(&phrase);
        repeated.push(300 + i);
    }
    let mut tree = SuffixTree::new(64).unwrap();
    tree.extend(0, &repeated).unwrap();
    let many = tree.speculate(&phrase[..4], &p).unwrap();
    assert_eq!(many.token_ids[..], phrase[4..]);
    assert!(many.probs.iter().all(|&prob| prob > 0.85), "{many:?}");
}

#[test]
fn the_newest_continuation_wins_a_tie() {
    // 1 2 was followed by 5 first, by 7 later: arctic drafts the smaller token, suffixspec the
    // newer one, in both modes, with more confidence than a plain half.
    let seq: Vec<TokenId> = vec![1, 2, 5, 9, 8, 1, 2, 7, 9, 8, 3, 1, 2];
    let mut tree = SuffixTree::new(16).unwrap();
    tree.extend(0, &seq).unwrap();
    let arctic = SpecParams { drafter: Drafter::Arctic, ..params(8, 0.0, false) };
    assert_eq!(tree.speculate_after(Some(0), &seq, &arctic).unwrap().token_ids[0], 5);
    for use_tree_spec in [false, true] {
        let draft = tree.speculate_after(Some(0), &seq, &params(8, 0.0, use_tree_spec)).unwrap();
        assert_eq!(draft.token_ids[0], 7, "{draft:?}");
        if use_tree_spec {
            // The older continuation, if drafted at all, is estimated lower.
            if let Some(older) = draft.token_ids.iter().position(|&t| t == 5) {
                assert!(draft.probs[older] < draft.probs[0], "{draft:?}");
            }
        }
    }
    // In the other order the other token is the newest, and drafted.
    let swapped: Vec<TokenId> = vec![1, 2, 7, 9, 8, 1, 2, 5, 9, 8, 3, 1, 2];
    let mut tree = SuffixTree::new(16).unwrap();
    tree.extend(0, &swapped).unwrap();
    assert_eq!(tree.speculate_after(Some(0), &swapped, &params(8, 0.0, false)).unwrap().token_ids[0], 5);
}

#[test]
fn a_clear_majority_outweighs_the_newest_continuation() {
    // 1 2 5 three times, then 1 2 7 once: the newest continuation's bonus does not overturn
    // a 3 to 1 majority.
    let mut seq: Vec<TokenId> = Vec::new();
    for next in [5, 5, 5, 7] {
        seq.extend([1, 2, next, 9, 8]);
    }
    seq.extend([1, 2]);
    let mut tree = SuffixTree::new(16).unwrap();
    tree.extend(0, &seq).unwrap();
    let draft = tree.speculate_after(Some(0), &seq, &params(8, 0.0, false)).unwrap();
    assert_eq!(draft.token_ids[0], 5, "{draft:?}");
}

#[test]
fn the_newest_earlier_response_wins_a_tie() {
    // Two earlier responses continue 1 2 3 differently: the later one is drafted.
    let mut cache = SuffixCache::new(CacheConfig::default()).unwrap();
    for (req, next) in [(1, 7), (2, 5)] {
        cache.start_request(req, &[]).unwrap();
        cache.add_active_response(req, &[1, 2, 3, next, 9, 9]).unwrap();
        cache.stop_request(req).unwrap();
    }
    cache.start_request(3, &[4, 4]).unwrap();
    cache.add_active_response(3, &[1, 2, 3]).unwrap();
    let draft = cache.speculate(3, &[4, 4, 1, 2, 3], &params(8, 0.0, false)).unwrap();
    assert_eq!(draft.token_ids[0], 5, "{draft:?}");
}
