//! Property tests of SuffixCache against a plain model of requests, budgets and drafts.

mod common;

use common::{naive_draft, spec_params, substring_counts};
use proptest::prelude::*;
use suffixspec_cache::{
    CacheConfig, CacheError, Draft, Drafter, RequestId, SpecParams, SuffixCache, TokenId,
};

#[derive(Debug, Clone)]
enum Op {
    Start(RequestId, Vec<TokenId>),
    Add(RequestId, Vec<TokenId>),
    Stop(RequestId),
    Evict(RequestId),
    Speculate(RequestId, Vec<TokenId>, SpecParams),
}

fn tokens() -> impl Strategy<Value = Vec<TokenId>> {
    // Mostly valid; sometimes a negative id that must be rejected.
    prop::collection::vec(prop_oneof![20 => 0 as TokenId..3, 1 => -3 as TokenId..0], 0..10)
}

fn op() -> impl Strategy<Value = Op> {
    let req = 0 as RequestId..5;
    prop_oneof![
        2 => (req.clone(), tokens()).prop_map(|(r, t)| Op::Start(r, t)),
        4 => (req.clone(), tokens()).prop_map(|(r, t)| Op::Add(r, t)),
        2 => req.clone().prop_map(Op::Stop),
        1 => req.clone().prop_map(Op::Evict),
        3 => (req, prop::collection::vec(0 as TokenId..3, 0..8), spec_params())
            .prop_map(|(r, c, p)| Op::Speculate(r, c, p)),
    ]
}

fn config() -> impl Strategy<Value = CacheConfig> {
    (1usize..6, prop::option::of(0usize..4), prop_oneof![Just(0usize), 1usize..30, Just(1 << 20)]).prop_map(
        |(max_depth, max_cached_requests, max_cached_tokens)| CacheConfig {
            max_depth,
            max_cached_requests,
            max_cached_tokens,
        },
    )
}

/// What the cache should hold: active requests (start order) and cached responses (oldest first).
#[derive(Debug, Default)]
struct Model {
    /// (id, prompt + response, response)
    active: Vec<(RequestId, Vec<TokenId>, Vec<TokenId>)>,
    cached: Vec<(RequestId, Vec<TokenId>)>,
}

fn first_bad(tokens: &[TokenId]) -> Option<CacheError> {
    let index = tokens.iter().position(|&t| t < 0)?;
    Some(CacheError::InvalidToken { index, token: i64::from(tokens[index]) })
}

impl Model {
    fn active_index(&self, req: RequestId) -> Option<usize> {
        self.active.iter().position(|a| a.0 == req)
    }

    fn cached_index(&self, req: RequestId) -> Option<usize> {
        self.cached.iter().position(|c| c.0 == req)
    }

    /// Applies `op`; returns what the cache must report: an error, or the requests whose
    /// responses a stop dropped or evicted (empty for every other operation).
    fn apply(&mut self, op: &Op, config: &CacheConfig) -> Result<Vec<RequestId>, CacheError> {
        let global = config.max_cached_requests != Some(0) && config.max_cached_tokens != 0;
        match op {
            Op::Start(req, prompt) => {
                if self.active_index(*req).is_some() {
                    return Err(CacheError::DuplicateRequest(*req));
                }
                if let Some(e) = first_bad(prompt) {
                    return Err(e);
                }
                if let Some(i) = self.cached_index(*req) {
                    self.cached.remove(i);
                }
                self.active.push((*req, prompt.clone(), Vec::new()));
            }
            Op::Add(req, tokens) => {
                let i = self.active_index(*req).ok_or(CacheError::UnknownRequest(*req))?;
                if let Some(e) = first_bad(tokens) {
                    return Err(e);
                }
                self.active[i].1.extend(tokens);
                self.active[i].2.extend(tokens);
            }
            Op::Stop(req) => {
                let i = self.active_index(*req).ok_or(CacheError::UnknownRequest(*req))?;
                let (_, _, response) = self.active.remove(i);
                // Empty responses are not kept; nor is one larger than the whole budget.
                if !global || response.is_empty() || response.len() > config.max_cached_tokens {
                    return Ok(vec![*req]);
                }
                self.cached.push((*req, response));
                let mut gone = Vec::new();
                while self.cached.len() > config.max_cached_requests.unwrap_or(usize::MAX)
                    || self.cached_tokens() > config.max_cached_tokens
                {
                    gone.push(self.cached.remove(0).0);
                }
                return Ok(gone);
            }
            Op::Evict(req) => {
                let i = self.cached_index(*req).ok_or(CacheError::UnknownRequest(*req))?;
                self.cached.remove(i);
            }
            Op::Speculate(req, context, params) => {
                self.active_index(*req).ok_or(CacheError::UnknownRequest(*req))?;
                let _ = (context, params);
            }
        }
        Ok(Vec::new())
    }

    fn cached_tokens(&self) -> usize {
        self.cached.iter().map(|c| c.1.len()).sum()
    }

    fn draft(&self, req: RequestId, context: &[TokenId], params: &SpecParams, config: &CacheConfig) -> Draft {
        let depth = config.max_depth;
        let local_seq = &self.active[self.active_index(req).unwrap()].1;
        let local = naive_draft(&substring_counts([local_seq.as_slice()], depth), depth, context, params);
        if config.max_cached_requests == Some(0) || config.max_cached_tokens == 0 {
            return local;
        }
        let responses =
            self.active.iter().map(|a| a.2.as_slice()).chain(self.cached.iter().map(|c| c.1.as_slice()));
        let global = naive_draft(&substring_counts(responses, depth), depth, context, params);
        if global.score > local.score {
            global
        } else {
            local
        }
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES overrides.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn cache_matches_model(config in config(), ops in prop::collection::vec(op(), 1..40)) {
        let mut cache = SuffixCache::new(config).unwrap();
        let mut model = Model::default();
        for op in &ops {
            let before = cache.stats();
            let expected = model.apply(op, &config);
            let got = match op {
                Op::Start(req, prompt) => cache.start_request(*req, prompt).map(|()| Vec::new()),
                Op::Add(req, tokens) => cache.add_active_response(*req, tokens).map(|()| Vec::new()),
                Op::Stop(req) => cache.stop_request(*req),
                Op::Evict(req) => cache.evict_cached_response(*req).map(|()| Vec::new()),
                Op::Speculate(req, context, params) => cache.speculate(*req, context, params).map(|draft| {
                    assert_eq!(draft, model.draft(*req, context, params, &config), "{op:?}");
                    Vec::new()
                }),
            };
            prop_assert_eq!(&got, &expected, "{:?}", op);
            if got.is_err() {
                prop_assert_eq!(cache.stats(), before, "failed {:?} changed the cache", op);
            }
            cache.check_integrity().map_err(TestCaseError::fail)?;
            prop_assert_eq!(cache.active_requests(), model.active.iter().map(|a| a.0).collect::<Vec<_>>());
            prop_assert_eq!(cache.cached_requests(), model.cached.iter().map(|c| c.0).collect::<Vec<_>>());
            let stats = cache.stats();
            prop_assert_eq!(stats.cached_tokens, model.cached_tokens());
            prop_assert_eq!(stats.active_requests, model.active.len());
            prop_assert_eq!(stats.cached_requests, model.cached.len());
            let global = cache.global_tree().map_or(0, |g| g.num_tokens());
            let local: usize = model.active.iter().map(|a| a.1.len()).sum();
            prop_assert_eq!(stats.tokens, local + global);
            if let Some(g) = cache.global_tree() {
                let responses = model.active.iter().map(|a| a.2.as_slice())
                    .chain(model.cached.iter().map(|c| c.1.as_slice()));
                let counts = substring_counts(responses, config.max_depth);
                for (s, &c) in &counts {
                    prop_assert_eq!(g.count(s), c);
                }
                prop_assert_eq!(g.num_distinct_strings(), counts.len() as u64);
            }
            for (req, seq, _) in &model.active {
                prop_assert!(cache.is_active(*req) && !cache.is_cached(*req));
                prop_assert_eq!(cache.local_tree(*req).unwrap().seq_len(0), Some(seq.len()));
            }
        }
    }
}

#[test]
fn rejects_bad_config_and_params() {
    assert!(matches!(
        SuffixCache::new(CacheConfig { max_depth: 0, ..CacheConfig::default() }),
        Err(CacheError::InvalidParameter { name: "max_depth", .. })
    ));
    let mut cache = SuffixCache::new(CacheConfig::default()).unwrap();
    cache.start_request(7, &[1, 2, 3]).unwrap();
    let before = cache.stats();
    let bad = SpecParams {
        max_spec_tokens: 4,
        max_spec_factor: f64::INFINITY,
        max_spec_offset: 0.0,
        min_token_prob: 0.1,
        use_tree_spec: false,
        drafter: Drafter::Arctic,
    };
    assert!(matches!(cache.speculate(7, &[1], &bad), Err(CacheError::InvalidParameter { .. })));
    assert_eq!(
        cache.speculate(8, &[1], &SpecParams { max_spec_factor: 1.0, ..bad }),
        Err(CacheError::UnknownRequest(8))
    );
    assert_eq!(cache.start_request(7, &[]), Err(CacheError::DuplicateRequest(7)));
    assert_eq!(cache.stats(), before);
}
