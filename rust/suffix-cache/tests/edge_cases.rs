//! Unit tests for edge cases of the tree and the cache.

mod common;

use common::{naive_draft, substring_counts};
use suffixspec_cache::{
    CacheConfig, CacheError, Draft, Drafter, SpecParams, SuffixCache, SuffixTree, TokenId,
    DEFAULT_MAX_CACHED_REQUESTS, MAX_DEPTH,
};

fn params(max_spec_tokens: usize, use_tree_spec: bool) -> SpecParams {
    SpecParams {
        max_spec_tokens,
        max_spec_factor: 1.0,
        max_spec_offset: 0.0,
        min_token_prob: 0.1,
        use_tree_spec,
        drafter: Drafter::Arctic,
    }
}

/// Deterministic pseudo-random tokens (xorshift).
fn random_tokens(n: usize, vocab: u32, mut state: u64) -> Vec<TokenId> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(vocab)) as TokenId
        })
        .collect()
}

#[test]
fn empty_prompt_and_empty_context() {
    let mut cache = SuffixCache::new(CacheConfig::default()).unwrap();
    cache.start_request(1, &[]).unwrap();
    assert_eq!(cache.speculate(1, &[], &params(8, false)).unwrap(), Draft::default());
    assert_eq!(cache.speculate(1, &[5, 6], &params(8, true)).unwrap(), Draft::default());
    cache.add_active_response(1, &[]).unwrap();
    assert_eq!(cache.stats().tokens, 0);
    // An empty response is not kept: the stop reports it as gone.
    assert_eq!(cache.stop_request(1).unwrap(), vec![1]);
    assert_eq!(cache.cached_requests(), Vec::<u64>::new());
    cache.check_integrity().unwrap();
}

#[test]
fn empty_responses_do_not_accumulate() {
    let mut cache = SuffixCache::new(CacheConfig::default()).unwrap();
    for req in 0..10_000u64 {
        cache.start_request(req, &[]).unwrap();
        assert_eq!(cache.stop_request(req).unwrap(), vec![req]);
    }
    let stats = cache.stats();
    assert_eq!((stats.active_requests, stats.cached_requests, stats.tokens), (0, 0, 0));
    cache.check_integrity().unwrap();
}

#[test]
fn default_budgets_are_finite_and_depth_is_capped() {
    let config = CacheConfig::default();
    assert_eq!(config.max_cached_requests, Some(DEFAULT_MAX_CACHED_REQUESTS));
    assert!(SuffixTree::new(MAX_DEPTH).is_ok());
    assert!(matches!(
        SuffixTree::new(MAX_DEPTH + 1),
        Err(CacheError::InvalidParameter { name: "max_depth", .. })
    ));
    assert!(SuffixCache::new(CacheConfig { max_depth: MAX_DEPTH + 1, ..config }).is_err());
}

#[test]
fn stop_reports_the_responses_it_evicts() {
    let config = CacheConfig { max_depth: 8, max_cached_requests: Some(2), max_cached_tokens: 1 << 20 };
    let mut cache = SuffixCache::new(config).unwrap();
    let mut reported = Vec::new();
    for req in 0..5u64 {
        cache.start_request(req, &[1]).unwrap();
        cache.add_active_response(req, &[2, 3]).unwrap();
        reported.push(cache.stop_request(req).unwrap());
    }
    assert_eq!(reported, vec![vec![], vec![], vec![0], vec![1], vec![2]]);
    assert_eq!(cache.cached_requests(), vec![3, 4]);
}

#[test]
fn max_depth_one_counts_unigrams_and_never_drafts() {
    let mut tree = SuffixTree::new(1).unwrap();
    tree.extend(3, &[4, 4, 2, 4]).unwrap();
    assert_eq!((tree.count(&[4]), tree.count(&[2]), tree.count(&[4, 4])), (3, 1, 0));
    // A match of one token already fills the depth: nothing below it to draft.
    assert_eq!(tree.speculate(&[4], &params(8, false)).unwrap(), Draft::default());
    tree.check_integrity().unwrap();
}

#[test]
fn long_repeated_text_stays_compressed_and_exact() {
    let mut tree = SuffixTree::new(16).unwrap();
    let text: Vec<TokenId> = [7, 8, 9].repeat(400);
    for chunk in text.chunks(37) {
        tree.extend(1, chunk).unwrap();
    }
    tree.check_integrity().unwrap();
    assert_eq!(tree.count(&[7, 8, 9, 7]), 399);
    assert_eq!(tree.count(&[9]), 400);
    // A period-3 text has only a handful of distinct substrings per length.
    assert!(tree.num_nodes() < 64, "{} nodes", tree.num_nodes());
    let draft = tree.speculate(&[8, 9], &params(4, false)).unwrap();
    assert_eq!(draft.token_ids, vec![7, 8]);
    assert_eq!(draft.match_len, 2);
}

#[test]
fn context_longer_than_max_depth_uses_its_tail() {
    let mut tree = SuffixTree::new(4).unwrap();
    let seq = random_tokens(300, 5, 11);
    tree.extend(0, &seq).unwrap();
    let counts = substring_counts([seq.as_slice()], 4);
    let p = SpecParams { max_spec_offset: 3.0, min_token_prob: 0.0, ..params(6, true) };
    for cut in [10, 57, 299] {
        let context = &seq[..cut];
        let draft = tree.speculate(context, &p).unwrap();
        assert_eq!(draft, tree.speculate(&context[cut - 4..], &p).unwrap());
        assert_eq!(draft, naive_draft(&counts, 4, context, &p));
        assert!(draft.match_len <= 4 && !draft.token_ids.is_empty());
    }
}

#[test]
fn full_context_is_a_candidate_match() {
    // The whole 3-token context matches, and only its full length predicts 5 reliably.
    let mut tree = SuffixTree::new(8).unwrap();
    tree.extend(0, &[1, 2, 3, 5, 9, 2, 3, 6, 0, 2, 3, 6]).unwrap();
    let p = SpecParams { min_token_prob: 0.0, ..params(1, false) };
    let draft = tree.speculate(&[1, 2, 3], &p).unwrap();
    assert_eq!((draft.token_ids, draft.match_len, draft.score), (vec![5], 3, 1.0));
}

#[test]
fn oversized_response_is_dropped_without_flushing_the_cache() {
    let config = CacheConfig { max_depth: 8, max_cached_requests: None, max_cached_tokens: 10 };
    let mut cache = SuffixCache::new(config).unwrap();
    for (req, len) in [(1, 4), (2, 5), (3, 11)] {
        cache.start_request(req, &[1]).unwrap();
        cache.add_active_response(req, &random_tokens(len, 9, req + 1)).unwrap();
        cache.stop_request(req).unwrap();
    }
    assert_eq!(cache.cached_requests(), vec![1, 2]);
    cache.start_request(4, &[]).unwrap();
    cache.add_active_response(4, &[3, 3]).unwrap();
    cache.stop_request(4).unwrap();
    // 4 + 5 + 2 > 10: the oldest goes.
    assert_eq!(cache.cached_requests(), vec![2, 4]);
    assert_eq!(cache.stats().cached_tokens, 7);
    cache.check_integrity().unwrap();
}

#[test]
fn removed_tokens_are_released_once_they_outgrow_live_ones() {
    let mut tree = SuffixTree::new(8).unwrap();
    let big = random_tokens(18_000, 3, 5);
    tree.extend(1, &big).unwrap();
    tree.extend(2, &big[1000..1200]).unwrap();
    tree.remove(1).unwrap();
    assert_eq!(tree.removed_tokens_held(), 0);
    tree.check_integrity().unwrap();
    assert_eq!(tree.count(&big[1000..1008]), 1);
}

#[test]
fn memory_stays_bounded_under_churn() {
    let config = CacheConfig { max_depth: 16, max_cached_requests: Some(8), max_cached_tokens: 1 << 20 };
    let mut cache = SuffixCache::new(config).unwrap();
    let mut peak_after_warmup = 0;
    for req in 0..120u64 {
        cache.start_request(req, &random_tokens(50, 1000, req + 7)).unwrap();
        cache.add_active_response(req, &random_tokens(100, 1000, req + 1000)).unwrap();
        cache.stop_request(req).unwrap();
        let bytes = cache.stats().bytes;
        if req == 40 {
            peak_after_warmup = bytes;
        } else if req > 40 {
            assert!(bytes <= 2 * peak_after_warmup, "memory grew: {bytes} vs {peak_after_warmup}");
        }
    }
    assert_eq!(cache.stats().cached_requests, 8);
    cache.check_integrity().unwrap();
}
