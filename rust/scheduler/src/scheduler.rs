//! The continuous-batching scheduler: waiting / running / preempted queues, one `schedule`
//! call per engine step, one `commit` per step's results.
//!
//! Each step, in order:
//! 1. **Running requests**, decoding ones first (Sarathi-Serve's stall-free batching: each
//!    feeds its one pending token, the tree root), then prefilling ones with a chunk of their
//!    prompt (chunked prefill, bounded by the per-step prefill budget); within each group most
//!    important first (priority, then earliest deadline, then FCFS). When the pool has no
//!    block for one, the least important running request not yet served this step is
//!    preempted (recompute), possibly the request itself.
//! 2. **Admission** of preempted, then waiting requests, by priority then FCFS, while the
//!    token, prefill, KV and running-count budgets allow. The head of the queue is never
//!    overtaken by an equal (bounded waiting); a more important request may preempt running
//!    requests of strictly lower priority.
//! 3. **Tree selection** for the decoding requests the engine drafted for ([`select`]), under
//!    the remaining token budget, the verify budget and free KV blocks; the step-cost model
//!    then cuts the throughput part of the pick order where expected tokens per second peak.
//!
//! **Sit-outs (AdaServe only).** Where a step's cost grows with the number of requests in it
//! (a per-request term: the CPU engine's per-request attention and verification, a GPU's
//! attention at long contexts), a request far ahead of its TPOT pace can skip a step so that
//! the step is cheaper for the requests that are behind. Before step 1, with `tau` the larger
//! of an upper estimate of this step's time ([`Scheduler::step_time_bound`]: every decoding
//! request's root, the prefill the budgets allow, the last step's verify tokens) and the time
//! since the last `schedule` call (the last step as it really took, whatever the cost model
//! says), each running decoding request with a TPOT target `t` and a first token has
//! AdaServe's requirement `A = (now - t0 + tau) / t - o` ([`required_tokens`]). When some of
//! them is **behind** (`A > 1`: the bonus token alone would not keep its pace), every one with
//! `A <= -sit_out_margin * tau / t` (still on pace after this step without a token, with
//! `sit_out_margin` more steps' worth of its target to spare) and a target of at least
//! `sit_out_min_target_steps` steps (`t >= k * tau`) **sits out**: it is not scheduled (no
//! query token, no tree), keeps its KV blocks and stays running. Its `A` grows by about
//! `tau / t` per step, so it is scheduled again before it could fall behind its pace.
//! Nobody sits out while no SLO request is behind (it would only slow the batch down);
//! best-effort requests (no TPOT target), requests without a first token and requests whose
//! target is tighter than `k` steps never do (these must emit about every step: a skipped step
//! would spend the slack that absorbs long steps, such as those carrying prefill chunks, and
//! in measurements they then missed their targets more often). A sitting-out request may still
//! be preempted when blocks run out (it is served last). The baselines (`NoSpeculation`,
//! `Uniform`, `ProbabilityGreedy`) feed every running request every step, as vLLM does. Off by
//! default ([`DEFAULT_SIT_OUT_MARGIN`]): in `bench_serve` they did not pay (see there).
use rustc_hash::{FxHashMap, FxHashSet};

use crate::cost::{best_budget, StepCostModel};
use crate::error::{invalid, SchedulerError};
use crate::plan::StepPlan;
use crate::pool::{BlockPool, DEFAULT_BLOCK_SIZE};
use crate::request::{Phase, RequestSpec, RequestState};
use crate::selection::{max_depth, required_tokens, validate_tree, Candidate, Policy, Selector};

/// Sizes and policies of a scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub num_blocks: u32,
    pub block_size: u32,
    /// Tokens fed per step: prefill chunks + tree roots + tree nodes.
    pub max_tokens_per_step: u32,
    /// Prefill-chunk tokens per step (Sarathi-Serve's chunk size); the rest of the token
    /// budget stays free for decoding and verification.
    pub max_prefill_tokens_per_step: u32,
    /// Requests holding KV at once.
    pub max_running: u32,
    /// Tree nodes (besides roots) verified per step at most.
    pub max_verify_tokens: u32,
    pub policy: Policy,
    pub cost_model: StepCostModel,
    /// AdaServe's sit-outs (module docs): a request this many steps' worth of its TPOT target
    /// ahead of its pace sits a step out while another SLO request is behind. `f64::INFINITY`
    /// (the default): never. 1 (the setting measured in `benches/README.md`) keeps a request on
    /// pace through the step after a sit-out even when that step takes twice the estimate.
    pub sit_out_margin: f64,
    /// AdaServe's sit-outs: only a request whose TPOT target spans at least this many steps
    /// (`t >= k * tau`) may sit out (module docs).
    pub sit_out_min_target_steps: f64,
}

/// The default [`SchedulerConfig::sit_out_margin`]: no sit-outs. Measured with a margin of 1
/// step (`bench_serve`, "Sit-outs" in `benches/README.md`), they moved SLO attainment by -2..+2
/// requests of 32 and cost goodput, so they are opt-in.
pub const DEFAULT_SIT_OUT_MARGIN: f64 = f64::INFINITY;
/// The default [`SchedulerConfig::sit_out_min_target_steps`].
pub const DEFAULT_SIT_OUT_MIN_TARGET_STEPS: f64 = 2.0;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_blocks: 4096,
            block_size: DEFAULT_BLOCK_SIZE,
            max_tokens_per_step: 2048,
            max_prefill_tokens_per_step: 512,
            max_running: 256,
            max_verify_tokens: 1024,
            policy: Policy::default(),
            cost_model: StepCostModel::default(),
            sit_out_margin: DEFAULT_SIT_OUT_MARGIN,
            sit_out_min_target_steps: DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
        }
    }
}

/// A draft tree for one request: parents-first `parents` and path probabilities `probs`.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    pub request: u64,
    pub parents: &'a [i32],
    pub probs: &'a [f64],
}

/// Counters over the scheduler's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub steps: u64,
    pub preemptions: u64,
    pub finished: u64,
    pub aborted: u64,
    /// Request-steps sat out (AdaServe's sit-outs).
    pub sit_outs: u64,
}

/// One request of the step in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Row of the request in the step's plan.
    row: usize,
    chunk: u32,
    tree_len: u32,
    /// The step ends the request's known tokens, so it yields a new token.
    emits: bool,
    committed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Scheduled {
    id: u64,
    chunk: u32,
    prefill: bool,
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    requests: FxHashMap<u64, RequestState>,
    waiting: Vec<u64>,
    running: Vec<u64>,
    preempted: Vec<u64>,
    in_flight: FxHashMap<u64, InFlight>,
    uncommitted: usize,
    next_seq: u64,
    /// Verify tokens of the last step: the step-time estimate of the next one starts there.
    last_verify: usize,
    stats: SchedulerStats,
    selector: Selector,
    /// Scratch of `max_depth` while building candidates.
    depth_scratch: Vec<u32>,
    /// `now` of the last `schedule` call: the time since then is the last step as it took.
    last_scheduled_at: Option<f64>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, SchedulerError> {
        let pool = BlockPool::new(config.num_blocks, config.block_size)?;
        for (name, value) in [
            ("max_tokens_per_step", config.max_tokens_per_step),
            ("max_prefill_tokens_per_step", config.max_prefill_tokens_per_step),
            ("max_running", config.max_running),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if let Policy::Uniform { draft_tokens: 0 } = config.policy {
            return Err(invalid("draft_tokens", "uniform speculation needs at least 1 draft token"));
        }
        check_sit_out_margin(config.sit_out_margin)?;
        if !(config.sit_out_min_target_steps.is_finite() && config.sit_out_min_target_steps >= 0.0) {
            return Err(invalid(
                "sit_out_min_target_steps",
                format!("must be finite and >= 0, got {}", config.sit_out_min_target_steps),
            ));
        }
        if config.max_running > config.max_tokens_per_step {
            // Otherwise some running requests could wait forever for a decode token.
            return Err(invalid(
                "max_running",
                format!(
                    "must not exceed max_tokens_per_step ({}), got {}",
                    config.max_tokens_per_step, config.max_running
                ),
            ));
        }
        Ok(Self {
            config,
            pool,
            requests: FxHashMap::default(),
            waiting: Vec::new(),
            running: Vec::new(),
            preempted: Vec::new(),
            in_flight: FxHashMap::default(),
            uncommitted: 0,
            next_seq: 0,
            last_verify: 0,
            stats: SchedulerStats::default(),
            selector: Selector::default(),
            depth_scratch: Vec::new(),
            last_scheduled_at: None,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }
    pub fn request(&self, id: u64) -> Option<&RequestState> {
        self.requests.get(&id)
    }
    pub fn waiting(&self) -> &[u64] {
        &self.waiting
    }
    pub fn running(&self) -> &[u64] {
        &self.running
    }
    pub fn preempted(&self) -> &[u64] {
        &self.preempted
    }
    pub fn num_requests(&self) -> usize {
        self.requests.len()
    }
    /// Whether a scheduled step still waits for `commit` of some request.
    pub fn step_in_flight(&self) -> bool {
        self.uncommitted > 0
    }

    /// Running requests whose next step is a decode step (one pending token): the ones
    /// worth drafting for before `schedule`.
    pub fn decode_ready(&self) -> Vec<u64> {
        self.running.iter().copied().filter(|id| self.requests[id].pending() == 1).collect()
    }

    /// Changes the policy (baselines are selectable per run).
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), SchedulerError> {
        if let Policy::Uniform { draft_tokens: 0 } = policy {
            return Err(invalid("draft_tokens", "uniform speculation needs at least 1 draft token"));
        }
        self.config.policy = policy;
        Ok(())
    }

    pub fn set_cost_model(&mut self, model: StepCostModel) {
        self.config.cost_model = model;
    }

    /// Changes [`SchedulerConfig::sit_out_margin`] (`f64::INFINITY`: no sit-outs).
    pub fn set_sit_out_margin(&mut self, margin: f64) -> Result<(), SchedulerError> {
        check_sit_out_margin(margin)?;
        self.config.sit_out_margin = margin;
        Ok(())
    }

    pub fn add_request(&mut self, id: u64, spec: RequestSpec) -> Result<(), SchedulerError> {
        spec.validate()?;
        if self.requests.contains_key(&id) {
            return Err(SchedulerError::DuplicateRequest(id));
        }
        if self.pool.blocks_for(spec.max_len) > self.pool.num_blocks() {
            return Err(invalid(
                "max_len",
                format!(
                    "{} tokens need {} KV blocks, the pool has {}",
                    spec.max_len,
                    self.pool.blocks_for(spec.max_len),
                    self.pool.num_blocks()
                ),
            ));
        }
        self.requests.insert(id, RequestState::new(spec, self.next_seq));
        self.next_seq += 1;
        self.waiting.push(id);
        Ok(())
    }

    /// Ends a request normally (stop token, length); frees its blocks.
    pub fn finish(&mut self, id: u64) -> Result<(), SchedulerError> {
        self.remove(id)?;
        self.stats.finished += 1;
        Ok(())
    }

    /// Ends a request at any time (also mid-step); frees its blocks.
    pub fn abort(&mut self, id: u64) -> Result<(), SchedulerError> {
        self.remove(id)?;
        self.stats.aborted += 1;
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<(), SchedulerError> {
        let state = self.requests.remove(&id).ok_or(SchedulerError::UnknownRequest(id))?;
        let queue = match state.phase {
            Phase::Waiting => &mut self.waiting,
            Phase::Running => &mut self.running,
            Phase::Preempted => &mut self.preempted,
        };
        queue.retain(|&r| r != id);
        self.pool.release(id);
        if let Some(f) = self.in_flight.remove(&id) {
            if !f.committed {
                self.uncommitted -= 1;
            }
        }
        Ok(())
    }

    /// `ids` sorted most important first: priority, then earlier deadline, then earlier arrival.
    fn by_rank(&self, ids: &[u64]) -> Vec<u64> {
        let mut keyed: Vec<(i32, f64, u64, u64)> = ids
            .iter()
            .map(|&id| {
                let r = &self.requests[&id];
                (r.spec.priority, r.deadline(), r.seq, id)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        keyed.into_iter().map(|k| k.3).collect()
    }

    fn preempt(&mut self, id: u64) {
        self.pool.release(id);
        self.running.retain(|&r| r != id);
        self.preempted.push(id);
        let state = self.requests.get_mut(&id).expect("running requests are live");
        state.phase = Phase::Preempted;
        state.computed = 0;
        state.preemptions += 1;
        self.stats.preemptions += 1;
    }

    /// An upper estimate of the coming step's time, from the queues before it is planned: one
    /// token per running decoding request (and per queued one-token prompt), the prefill tokens
    /// the budgets allow (running, preempted and waiting requests' pending tokens), and the
    /// last step's verify tokens; with a non-decreasing cost model never below the selection's
    /// estimate (`StepPlan::step_time_estimate`, the same terms once the step is planned).
    /// Sit-outs are decided with the larger of it and the last step's real time;
    /// over-estimating only makes them rarer.
    pub fn step_time_bound(&self) -> f64 {
        // One-token requests (decoding, or a one-token prompt) are fed outside the prefill budget.
        let (mut single, mut prefill) = (0u64, 0u64);
        for id in self.running.iter().chain(&self.waiting).chain(&self.preempted) {
            match self.requests[id].pending() {
                1 => single += 1,
                pending => prefill += u64::from(pending),
            }
        }
        let budget = u64::from(self.config.max_tokens_per_step);
        let prefill = prefill
            .min(u64::from(self.config.max_prefill_tokens_per_step))
            .min(budget.saturating_sub(single));
        // Not capped by the token budget: never below the selection's estimate.
        let tokens = single + prefill + self.last_verify as u64;
        self.config.cost_model.step_time(tokens as usize)
    }

    /// The requests that sit out a step planned at `now` (module docs), given the step time
    /// `tau` they are decided with: empty unless the policy is AdaServe and some SLO request
    /// is behind.
    fn sit_outs(&self, now: f64, tau: f64) -> FxHashSet<u64> {
        let (margin, min_steps) = (self.config.sit_out_margin, self.config.sit_out_min_target_steps);
        let mut ahead = FxHashSet::default();
        if self.config.policy != Policy::AdaServe || !margin.is_finite() {
            return ahead;
        }
        let mut behind = false;
        for &id in &self.running {
            let r = &self.requests[&id];
            let (Some(tpot), Some(t0)) = (r.spec.slo.tpot, r.first_token_at) else { continue };
            if r.pending() != 1 {
                continue;
            }
            let required = required_tokens(now, t0, tau, tpot, r.outputs.saturating_sub(1));
            if required > 1.0 {
                behind = true;
            } else if required <= -margin * tau / tpot && tpot >= min_steps * tau {
                ahead.insert(id);
            }
        }
        if !behind {
            ahead.clear();
        }
        ahead
    }

    /// Plans one step. `drafts` are draft trees of decoding requests (others are ignored);
    /// `now` is the engine's clock in seconds. Every planned request must be committed (or
    /// finished / aborted) before the next call.
    pub fn schedule(&mut self, now: f64, drafts: &[Draft<'_>]) -> Result<StepPlan, SchedulerError> {
        if self.uncommitted > 0 {
            return Err(SchedulerError::StepOrder(format!(
                "{} request(s) of the previous step are not committed: commit, finish or abort them first",
                self.uncommitted
            )));
        }
        if !now.is_finite() {
            return Err(invalid("now", "must be finite"));
        }
        let mut draft_of: FxHashMap<u64, usize> = FxHashMap::default();
        for (i, d) in drafts.iter().enumerate() {
            if !self.requests.contains_key(&d.request) {
                return Err(SchedulerError::UnknownRequest(d.request));
            }
            validate_tree(d.parents, d.probs)
                .map_err(|reason| SchedulerError::InvalidTree { request: d.request, reason })?;
            if draft_of.insert(d.request, i).is_some() {
                return Err(SchedulerError::InvalidTree { request: d.request, reason: "two drafts".into() });
            }
        }
        self.in_flight.clear();

        let mut budget = self.config.max_tokens_per_step;
        let mut prefill_left = self.config.max_prefill_tokens_per_step;
        let mut scheduled: Vec<Scheduled> = Vec::with_capacity(self.running.len());
        let mut preempted_now: Vec<u64> = Vec::new();

        // 0. Sit-outs (AdaServe): requests far ahead of their pace skip this step, decided with
        // the larger of the step-time bound and the last step as it took (model errors must not
        // let a sitting-out request fall behind).
        let last_step = self.last_scheduled_at.map_or(0.0, |t| (now - t).max(0.0));
        let step_time_bound = self.step_time_bound().max(last_step);
        let sitting = self.sit_outs(now, step_time_bound);

        // 1. Running requests: decoding ones first (each needs one token; with max_running <=
        // max_tokens_per_step none is ever left out), then prefilling ones, each group most
        // important first; sitting-out ones last, never served but still possible victims. A
        // victim is the least important request not yet served this step.
        let ranked = self.by_rank(&self.running);
        // (rank, id): decoding requests, then prefilling ones, each in rank order.
        let mut order: Vec<(usize, u64)> = ranked.iter().copied().enumerate().collect();
        order.sort_by_key(|&(rank, id)| (sitting.contains(&id), self.requests[&id].pending() > 1, rank));
        let mut gone = vec![false; order.len()];
        let mut sat_out: Vec<u64> = Vec::with_capacity(sitting.len());
        for i in 0..order.len() {
            if gone[i] {
                continue;
            }
            let id = order[i].1;
            if sitting.contains(&id) {
                sat_out.push(id); // KV kept, still running; not fed this step
                continue;
            }
            let state = &self.requests[&id];
            let (pending, computed) = (state.pending(), state.computed);
            let prefill = pending > 1;
            let chunk = if prefill { pending.min(budget).min(prefill_left) } else { pending.min(budget) };
            if chunk == 0 {
                continue;
            }
            loop {
                if self.pool.reserve(id, computed + chunk).is_ok() {
                    scheduled.push(Scheduled { id, chunk, prefill });
                    budget -= chunk;
                    if prefill {
                        prefill_left -= chunk;
                    }
                    break;
                }
                // The least important (largest rank) of this request and those not served yet.
                let k = (i..order.len()).filter(|&k| !gone[k]).max_by_key(|&k| order[k].0).unwrap_or(i);
                gone[k] = true;
                self.preempt(order[k].1);
                preempted_now.push(order[k].1);
                if k == i {
                    break;
                }
            }
        }

        // 2. Admission: preempted and waiting requests by priority, then FCFS.
        let mut queue: Vec<u64> = self
            .preempted
            .iter()
            .chain(&self.waiting)
            .copied()
            .filter(|id| !preempted_now.contains(id))
            .collect();
        queue.sort_by_key(|id| {
            let r = &self.requests[id];
            (std::cmp::Reverse(r.spec.priority), r.seq)
        });
        for id in queue {
            if self.running.len() >= self.config.max_running as usize || budget == 0 {
                break;
            }
            let state = &self.requests[&id];
            let (pending, priority) = (state.pending(), state.spec.priority);
            let prefill = pending > 1;
            let chunk = if prefill { pending.min(budget).min(prefill_left) } else { 1 };
            if chunk == 0 {
                break;
            }
            let needed = self.pool.blocks_needed(id, chunk);
            if needed > self.pool.num_free() {
                // Preempt strictly less important running requests, least important first,
                // but only when that frees enough.
                let lower: Vec<u64> = self
                    .running
                    .iter()
                    .copied()
                    .filter(|v| self.requests[v].spec.priority < priority)
                    .collect();
                let victims: Vec<u64> = self.by_rank(&lower).into_iter().rev().collect();
                let reclaimable: u32 = victims.iter().map(|&v| self.pool.table(v).len() as u32).sum();
                if self.pool.num_free() + reclaimable < needed {
                    break;
                }
                for victim in victims {
                    if self.pool.num_free() >= needed {
                        break;
                    }
                    if let Some(k) = scheduled.iter().position(|s| s.id == victim) {
                        let s = scheduled.remove(k);
                        budget += s.chunk;
                        if s.prefill {
                            prefill_left += s.chunk;
                        }
                    }
                    self.preempt(victim);
                    preempted_now.push(victim);
                }
            }
            // Chunk sizes may have grown back through refunds; the budgets still bound them.
            if self.pool.reserve(id, chunk).is_err() {
                break;
            }
            budget -= chunk;
            if prefill {
                prefill_left -= chunk;
            }
            let state = self.requests.get_mut(&id).expect("queued requests are live");
            let queue = if state.phase == Phase::Waiting { &mut self.waiting } else { &mut self.preempted };
            queue.retain(|&r| r != id);
            state.phase = Phase::Running;
            self.running.push(id);
            scheduled.push(Scheduled { id, chunk, prefill });
        }

        // A sitting-out request that admission preempted is no longer running.
        sat_out.retain(|id| !preempted_now.contains(id));

        // 3. Trees for decoding requests with drafts.
        let base_tokens: usize = scheduled.iter().map(|s| s.chunk as usize).sum();
        let step_time = self.config.cost_model.step_time(base_tokens + self.last_verify);
        let empty_parents: &[i32] = &[];
        let empty_probs: &[f64] = &[];
        let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(scheduled.len());
        let mut emitting = 0usize;
        for s in &scheduled {
            let state = &self.requests[&s.id];
            let emits = s.chunk == state.pending();
            emitting += usize::from(emits);
            let decoding = !s.prefill && emits;
            let candidate = match draft_of.get(&s.id).filter(|_| decoding) {
                Some(&d) => {
                    let required = match (state.spec.slo.tpot, state.first_token_at) {
                        (Some(tpot), Some(t0)) if self.config.policy == Policy::AdaServe => {
                            Some(required_tokens(now, t0, step_time, tpot, state.outputs.saturating_sub(1)))
                        }
                        _ => None,
                    };
                    // Room for the accepted nodes plus the bonus token within max_len. A tree no
                    // deeper than that room (the engine fits depths to it) cannot overrun it with
                    // any accepted path, so it may keep all its nodes, side branches included;
                    // a deeper one is capped by count, which bounds every path too.
                    let room = state.spec.max_len.saturating_sub(state.computed + s.chunk + 1);
                    let parents = drafts[d].parents;
                    let max_nodes = if max_depth(parents, &mut self.depth_scratch) <= room {
                        u32::try_from(parents.len()).unwrap_or(u32::MAX)
                    } else {
                        room
                    };
                    Candidate { parents: drafts[d].parents, probs: drafts[d].probs, required, max_nodes }
                }
                None => {
                    Candidate { parents: empty_parents, probs: empty_probs, required: None, max_nodes: 0 }
                }
            };
            candidates.push(candidate);
        }
        let verify_budget = (self.config.max_verify_tokens.min(budget)) as usize;
        // KV for tree nodes: first the spare slots of each request's last block, then free
        // blocks, counted here and reserved once the cut below is known.
        let block_size = self.pool.block_size();
        let mut spare: Vec<u32> = scheduled
            .iter()
            .map(|s| self.pool.capacity(s.id) - (self.requests[&s.id].computed + s.chunk))
            .collect();
        let mut free_blocks = self.pool.num_free();
        let picks = self.selector.select(self.config.policy, &candidates, verify_budget, &mut |r| {
            if spare[r] == 0 {
                if free_blocks == 0 {
                    return false;
                }
                free_blocks -= 1;
                spare[r] = block_size;
            }
            spare[r] -= 1;
            true
        });
        let keep = if self.config.policy.uses_cost_model() {
            let gains: Vec<f64> = picks.order.iter().map(|p| p.prob).collect();
            best_budget(&self.config.cost_model, base_tokens, emitting as f64, &gains, picks.slo_picks)
        } else {
            picks.order.len()
        };
        let trees = picks.trees(&candidates, keep);

        // 4. The plan.
        let mut plan = StepPlan::with_capacity(scheduled.len());
        for (r, s) in scheduled.iter().enumerate() {
            let state = &self.requests[&s.id];
            let tree_len = trees.len_of(r) as u32;
            let query = s.chunk + tree_len;
            // Cannot fail: selection counted these blocks against the free ones.
            self.pool.reserve(s.id, state.computed + query)?;
            let emits = s.chunk == state.pending();
            plan.push(s.id, state.computed, s.chunk, tree_len, emits);
            self.pool.write_slot_mapping(s.id, state.computed, query, &mut plan.slot_mapping)?;
            self.in_flight
                .insert(s.id, InFlight { row: r, chunk: s.chunk, tree_len, emits, committed: false });
        }
        let pool = &self.pool;
        plan.set_block_tables(scheduled.iter().map(|s| pool.table(s.id)));
        plan.finish(trees, preempted_now, step_time, keep);
        self.stats.sit_outs += sat_out.len() as u64;
        plan.sat_out = sat_out;
        plan.step_time_bound = step_time_bound;
        self.last_scheduled_at = Some(now);
        self.uncommitted = scheduled.len();
        self.last_verify = keep;
        self.stats.steps += 1;
        Ok(plan)
    }

    /// Reports the step's results: `(request, accepted tree nodes)` for planned requests.
    /// A request whose step emits gains `accepted + 1` tokens (accepted nodes plus the bonus
    /// token); its K/V keeps `context + chunk + accepted` slots and surplus blocks return to
    /// the pool. All or nothing: a bad entry changes nothing.
    pub fn commit(&mut self, now: f64, results: &[(u64, u32)]) -> Result<(), SchedulerError> {
        if !now.is_finite() {
            return Err(invalid("now", "must be finite"));
        }
        let mut seen = vec![false; self.in_flight.values().map(|f| f.row + 1).max().unwrap_or(0)];
        for &(id, accepted) in results {
            let f = self.in_flight.get(&id).filter(|f| !f.committed).ok_or_else(|| {
                SchedulerError::StepOrder(format!("request {id} is not awaiting a commit in this step"))
            })?;
            if std::mem::replace(&mut seen[f.row], true) {
                return Err(SchedulerError::StepOrder(format!("request {id} is committed twice")));
            }
            if accepted > f.tree_len {
                return Err(invalid(
                    "accepted",
                    format!("request {id} accepted {accepted} nodes of a {}-node tree", f.tree_len),
                ));
            }
            let state = &self.requests[&id];
            if f.emits && state.known + accepted + 1 > state.spec.max_len {
                return Err(invalid(
                    "accepted",
                    format!(
                        "request {id} would exceed its max_len {}: finish it instead",
                        state.spec.max_len
                    ),
                ));
            }
        }
        for &(id, accepted) in results {
            let f = self.in_flight.get_mut(&id).expect("checked above");
            f.committed = true;
            let state = self.requests.get_mut(&id).expect("in-flight requests are live");
            state.computed += f.chunk + accepted;
            if f.emits {
                state.known += accepted + 1;
                state.outputs += accepted + 1;
                state.first_token_at.get_or_insert(now);
            }
            self.pool.truncate(id, state.computed);
            self.uncommitted -= 1;
        }
        Ok(())
    }

    /// Checks the pool and the queues against each other (tests and debugging).
    pub fn check_integrity(&self) -> Result<(), String> {
        self.pool.check_integrity()?;
        let queued = self.waiting.len() + self.running.len() + self.preempted.len();
        if queued != self.requests.len() {
            return Err(format!("{queued} queued requests but {} live ones", self.requests.len()));
        }
        for (queue, phase) in [
            (&self.waiting, Phase::Waiting),
            (&self.running, Phase::Running),
            (&self.preempted, Phase::Preempted),
        ] {
            for id in queue {
                match self.requests.get(id) {
                    Some(r) if r.phase == phase => {}
                    _ => return Err(format!("request {id} is queued as {phase:?} but is not")),
                }
            }
        }
        for owner in self.pool.requests() {
            let r = self.requests.get(&owner).ok_or(format!("blocks owned by dead request {owner}"))?;
            if r.phase != Phase::Running {
                return Err(format!("{:?} request {owner} holds blocks", r.phase));
            }
        }
        Ok(())
    }
}

fn check_sit_out_margin(margin: f64) -> Result<(), SchedulerError> {
    if margin.is_nan() || margin < 0.0 {
        return Err(invalid("sit_out_margin", format!("must be >= 0 steps (infinity: never), got {margin}")));
    }
    Ok(())
}
