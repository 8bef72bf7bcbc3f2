//! [`SuffixCache`]: per-request prompt trees plus one global tree of responses with budgets.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::tree::check_tokens;
use crate::{
    CacheConfig, CacheError, CacheStats, Draft, Drafter, RequestId, SpecParams, SuffixTree, TokenId,
};

/// Sequence id of the prompt + response inside a local tree.
const LOCAL_SEQ: u64 = 0;

#[derive(Debug)]
struct ActiveRequest {
    local: SuffixTree,
    started: u64,
}

/// Per-request local trees plus one global response tree, with budgets (see the crate docs).
#[derive(Debug)]
pub struct SuffixCache {
    config: CacheConfig,
    /// Responses of active and cached requests (sequence id = request id); None when disabled.
    global: Option<SuffixTree>,
    active: FxHashMap<RequestId, ActiveRequest>,
    next_order: u64,
    /// Cached requests by stop order (oldest first).
    cached: BTreeMap<u64, RequestId>,
    cached_order: FxHashMap<RequestId, u64>,
    cached_tokens: usize,
}

impl SuffixCache {
    pub fn new(config: CacheConfig) -> Result<Self, CacheError> {
        let global_enabled = config.max_cached_requests != Some(0) && config.max_cached_tokens != 0;
        // Validates max_depth for the local trees too.
        let global = SuffixTree::new(config.max_depth)?;
        Ok(Self {
            config,
            global: global_enabled.then_some(global),
            active: FxHashMap::default(),
            next_order: 0,
            cached: BTreeMap::new(),
            cached_order: FxHashMap::default(),
            cached_tokens: 0,
        })
    }

    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// Starts a request: builds its local tree over the prompt (the prompt may be empty).
    /// A cached response under the same id is evicted first.
    pub fn start_request(&mut self, req: RequestId, prompt: &[TokenId]) -> Result<(), CacheError> {
        if self.active.contains_key(&req) {
            return Err(CacheError::DuplicateRequest(req));
        }
        let mut local = SuffixTree::new(self.config.max_depth)?;
        local.extend(LOCAL_SEQ, prompt)?;
        if let Some(global) = &self.global {
            global.check_extend(req, &[])?;
        }
        if self.cached_order.contains_key(&req) {
            self.evict_cached_response(req)?;
        }
        if let Some(global) = &mut self.global {
            global.extend(req, &[])?;
        }
        self.active.insert(req, ActiveRequest { local, started: self.next_order });
        self.next_order += 1;
        Ok(())
    }

    /// Appends generated tokens to an active request (local tree and global tree).
    pub fn add_active_response(&mut self, req: RequestId, tokens: &[TokenId]) -> Result<(), CacheError> {
        let request = self.active.get_mut(&req).ok_or(CacheError::UnknownRequest(req))?;
        check_tokens(tokens)?;
        request.local.check_extend(LOCAL_SEQ, tokens)?;
        if let Some(global) = &self.global {
            global.check_extend(req, tokens)?;
        }
        request.local.extend(LOCAL_SEQ, tokens)?;
        if let Some(global) = &mut self.global {
            global.extend(req, tokens)?;
        }
        Ok(())
    }

    /// Stops an active request: drops its local tree, keeps its response in the global tree as
    /// a cached response (then enforces the budgets, evicting oldest first). An empty response
    /// is not kept (it could never draft a token, and would only cost bookkeeping), and one
    /// larger than the whole token budget is dropped right away instead of flushing the cache.
    ///
    /// Returns the requests whose responses are no longer cached after the call, `req` itself
    /// first when its response was not kept, then the evicted ones oldest first: callers that
    /// map ids onto requests forget exactly these.
    pub fn stop_request(&mut self, req: RequestId) -> Result<Vec<RequestId>, CacheError> {
        self.active.remove(&req).ok_or(CacheError::UnknownRequest(req))?;
        let Some(global) = &mut self.global else { return Ok(vec![req]) };
        let len = global.seq_len(req).unwrap_or(0);
        if len == 0 || len > self.config.max_cached_tokens {
            global.remove(req)?;
            return Ok(vec![req]);
        }
        global.shrink_seq(req);
        self.cached.insert(self.next_order, req);
        self.cached_order.insert(req, self.next_order);
        self.next_order += 1;
        self.cached_tokens += len;
        let mut gone = Vec::new();
        while self.cached.len() > self.config.max_cached_requests.unwrap_or(usize::MAX)
            || self.cached_tokens > self.config.max_cached_tokens
        {
            let Some((_, &oldest)) = self.cached.first_key_value() else { break };
            self.evict_cached_response(oldest)?;
            gone.push(oldest);
        }
        Ok(gone)
    }

    /// Removes a cached response from the global tree.
    pub fn evict_cached_response(&mut self, req: RequestId) -> Result<(), CacheError> {
        let (Some(order), Some(global)) = (self.cached_order.get(&req).copied(), &mut self.global) else {
            return Err(CacheError::UnknownRequest(req));
        };
        self.cached_tokens -= global.seq_len(req).unwrap_or(0);
        global.remove(req)?;
        self.cached_order.remove(&req);
        self.cached.remove(&order);
        Ok(())
    }

    /// Draft for an active request (see [`SpecParams`]): the better of the local and the
    /// global tree's drafts, the local one on ties.
    pub fn speculate(
        &self,
        req: RequestId,
        context: &[TokenId],
        params: &SpecParams,
    ) -> Result<Draft, CacheError> {
        params.validate()?;
        let request = self.active.get(&req).ok_or(CacheError::UnknownRequest(req))?;
        check_tokens(context)?;
        let local = request.local.speculate_after(Some(LOCAL_SEQ), context, params)?;
        match &self.global {
            Some(global) => {
                let shared = global.speculate_from(Some(req), true, Some(&request.local), context, params)?;
                let better = match params.drafter {
                    Drafter::Arctic => shared.score > local.score,
                    Drafter::Suffixspec => {
                        let tree_spec = params.use_tree_spec;
                        crate::expected::gain(&shared, tree_spec) > crate::expected::gain(&local, tree_spec)
                    }
                };
                Ok(if better { shared } else { local })
            }
            None => Ok(local),
        }
    }

    /// Active request ids, in start order.
    pub fn active_requests(&self) -> Vec<RequestId> {
        let mut requests: Vec<_> = self.active.iter().map(|(&req, r)| (r.started, req)).collect();
        requests.sort_unstable();
        requests.into_iter().map(|(_, req)| req).collect()
    }

    /// Cached request ids, oldest first.
    pub fn cached_requests(&self) -> Vec<RequestId> {
        self.cached.values().copied().collect()
    }

    pub fn is_active(&self, req: RequestId) -> bool {
        self.active.contains_key(&req)
    }

    pub fn is_cached(&self, req: RequestId) -> bool {
        self.cached_order.contains_key(&req)
    }

    /// The local (prompt + response) tree of an active request.
    pub fn local_tree(&self, req: RequestId) -> Option<&SuffixTree> {
        self.active.get(&req).map(|r| &r.local)
    }

    /// The global response tree (None when disabled).
    pub fn global_tree(&self) -> Option<&SuffixTree> {
        self.global.as_ref()
    }

    pub fn stats(&self) -> CacheStats {
        use std::mem::size_of;
        let trees = self.active.values().map(|r| &r.local).chain(self.global.as_ref());
        let (mut tokens, mut nodes, mut bytes) = (0, 0, 0);
        for tree in trees {
            tokens += tree.num_tokens();
            nodes += tree.num_nodes();
            bytes += tree.memory_bytes();
        }
        bytes += self.active.capacity() * (size_of::<(RequestId, ActiveRequest)>() + 1)
            + self.cached_order.capacity() * (size_of::<(RequestId, u64)>() + 1)
            + self.cached.len() * 2 * size_of::<(u64, RequestId)>();
        CacheStats {
            active_requests: self.active.len(),
            cached_requests: self.cached.len(),
            tokens,
            cached_tokens: self.cached_tokens,
            nodes,
            bytes,
        }
    }

    pub fn check_integrity(&self) -> Result<(), String> {
        for (req, request) in &self.active {
            request.local.check_integrity().map_err(|e| format!("local tree of {req}: {e}"))?;
        }
        if self.cached.len() != self.cached_order.len()
            || self.cached.iter().any(|(order, req)| self.cached_order.get(req) != Some(order))
        {
            return Err("cached request index out of sync".into());
        }
        let Some(global) = &self.global else {
            return if self.cached.is_empty() {
                Ok(())
            } else {
                Err("cached requests without a global tree".into())
            };
        };
        global.check_integrity().map_err(|e| format!("global tree: {e}"))?;
        let mut cached_tokens = 0;
        for req in self.cached.values() {
            if self.active.contains_key(req) {
                return Err(format!("request {req} both active and cached"));
            }
            cached_tokens += global.seq_len(*req).ok_or(format!("cached request {req} missing"))?;
        }
        if cached_tokens != self.cached_tokens {
            return Err(format!("cached tokens {} recorded, {cached_tokens} held", self.cached_tokens));
        }
        if self.active.keys().any(|req| !global.contains_seq(*req))
            || global.num_tokens()
                != cached_tokens + self.active.keys().filter_map(|r| global.seq_len(*r)).sum::<usize>()
        {
            return Err("global tree holds other sequences than active + cached responses".into());
        }
        Ok(())
    }
}
