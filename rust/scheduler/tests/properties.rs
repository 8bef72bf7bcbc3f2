//! Property tests of the pool, the selection and the scheduler driven by a simulated engine.
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use suffixspec_scheduler::{
    required_tokens, select, BlockPool, Candidate, Draft, Phase, Policy, RequestSpec, Scheduler,
    SchedulerConfig, SchedulerError, Slo, StepCostModel,
};

/// A draft tree: parents-first, path probabilities (a child never more probable than its
/// parent, like the suffix cache's), some zero.
fn tree(max_len: usize) -> impl Strategy<Value = (Vec<i32>, Vec<f64>)> {
    prop::collection::vec((any::<u32>(), 0.0f64..=1.0, 0u8..10), 0..max_len).prop_map(|nodes| {
        let mut parents = Vec::with_capacity(nodes.len());
        let mut probs: Vec<f64> = Vec::with_capacity(nodes.len());
        for (i, (pick, factor, zero)) in nodes.into_iter().enumerate() {
            let parent = if i == 0 || pick % 4 == 0 { -1 } else { (pick as usize % i) as i32 };
            let base = if parent < 0 { 1.0 } else { probs[parent as usize] };
            parents.push(parent);
            probs.push(if zero == 0 { 0.0 } else { base * factor });
        }
        (parents, probs)
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::NoSpeculation),
        (1u32..6).prop_map(|k| Policy::Uniform { draft_tokens: k }),
        Just(Policy::ProbabilityGreedy),
        Just(Policy::AdaServe),
    ]
}

/// Every prefix of the pick order is parent-closed.
fn assert_parent_closed(
    cands: &[Candidate<'_>],
    picks: &suffixspec_scheduler::Picks,
) -> Result<(), TestCaseError> {
    let mut chosen: BTreeSet<(u32, u32)> = BTreeSet::new();
    for p in &picks.order {
        let parent = cands[p.request as usize].parents[p.node as usize];
        prop_assert!(parent < 0 || chosen.contains(&(p.request, parent as u32)), "orphan pick {:?}", p);
        prop_assert!(chosen.insert((p.request, p.node)), "node picked twice");
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum PoolOp {
    Reserve(u64, u32),
    Truncate(u64, u32),
    Release(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pool_never_leaks_and_slots_are_exclusive(
        ops in prop::collection::vec(prop_oneof![
            (0u64..6, 0u32..200).prop_map(|(r, s)| PoolOp::Reserve(r, s)),
            (0u64..6, 0u32..200).prop_map(|(r, s)| PoolOp::Truncate(r, s)),
            (0u64..6).prop_map(PoolOp::Release),
        ], 0..60),
        block_size in prop::sample::select(vec![8u32, 16, 32]),
        num_blocks in 1u32..24,
    ) {
        let mut pool = BlockPool::new(num_blocks, block_size).unwrap();
        let mut model: BTreeMap<u64, u32> = BTreeMap::new(); // blocks held
        for op in ops {
            match op {
                PoolOp::Reserve(r, slots) => {
                    let held = model.get(&r).copied().unwrap_or(0);
                    let want = slots.div_ceil(block_size).max(held);
                    let free = num_blocks - model.values().sum::<u32>();
                    let result = pool.reserve(r, slots);
                    if want - held <= free {
                        prop_assert!(result.is_ok());
                        if want > 0 { model.insert(r, want); }
                    } else {
                        prop_assert_eq!(result, Err(SchedulerError::OutOfBlocks { needed: want - held, free }));
                    }
                }
                PoolOp::Truncate(r, slots) => {
                    pool.truncate(r, slots);
                    if let Some(held) = model.get_mut(&r) {
                        *held = (*held).min(slots.div_ceil(block_size));
                        if *held == 0 { model.remove(&r); }
                    }
                }
                PoolOp::Release(r) => {
                    prop_assert_eq!(pool.release(r), model.remove(&r).unwrap_or(0));
                }
            }
            pool.check_integrity().map_err(TestCaseError::fail)?;
            prop_assert_eq!(pool.num_used(), model.values().sum::<u32>());
            let mut all_slots = BTreeSet::new();
            for (&r, &held) in &model {
                prop_assert_eq!(pool.table(r).len() as u32, held);
                let mut slots = Vec::new();
                pool.write_slot_mapping(r, 0, held * block_size, &mut slots).unwrap();
                for (s, &flat) in slots.iter().enumerate() {
                    let block = pool.table(r)[s / block_size as usize] as i32;
                    prop_assert_eq!(flat, block * block_size as i32 + (s % block_size as usize) as i32);
                    prop_assert!(all_slots.insert(flat), "slot {} shared", flat);
                }
            }
        }
        for r in 0..6 { pool.release(r); }
        prop_assert_eq!(pool.num_free(), num_blocks);
    }

    #[test]
    fn selection_is_parent_closed_bounded_and_serves_slos_first(
        trees in prop::collection::vec((tree(40), prop::option::of(0.5f64..12.0), 0u32..50), 1..12),
        budget in 0usize..200,
        policy in policy(),
        scramble in prop::option::of(any::<u64>()),
    ) {
        // Also trees whose probabilities grow along paths (not path probabilities).
        let mut trees = trees;
        if let Some(seed) = scramble {
            for (k, ((_, probs), _, _)) in trees.iter_mut().enumerate() {
                for (i, p) in probs.iter_mut().enumerate() {
                    *p = ((seed >> ((i + k) % 48)) % 1000) as f64 / 999.0;
                }
            }
        }
        let cands: Vec<Candidate<'_>> = trees
            .iter()
            .map(|((parents, probs), required, max_nodes)| Candidate {
                parents, probs, required: *required, max_nodes: *max_nodes,
            })
            .collect();
        let picks = select(policy, &cands, budget, &mut |_| true);
        assert_parent_closed(&cands, &picks)?;
        prop_assert!(picks.order.len() <= budget);
        let mut per_request = vec![0u32; cands.len()];
        let mut expected = vec![1.0f64; cands.len()];
        for p in &picks.order {
            per_request[p.request as usize] += 1;
            expected[p.request as usize] += p.prob;
            // A pick's value is its path-min probability.
            let c = &cands[p.request as usize];
            let (mut value, mut at) = (f64::INFINITY, p.node as i32);
            while at >= 0 {
                value = value.min(c.probs[at as usize]);
                at = c.parents[at as usize];
            }
            prop_assert_eq!(p.prob, value);
            if policy.uses_cost_model() { prop_assert!(p.prob > 0.0, "zero-probability pick"); }
        }
        for (r, c) in cands.iter().enumerate() {
            prop_assert!(per_request[r] <= c.max_nodes);
            if let Policy::Uniform { draft_tokens } = policy { prop_assert!(per_request[r] <= draft_tokens); }
        }
        match policy {
            Policy::NoSpeculation => prop_assert!(picks.order.is_empty()),
            Policy::AdaServe => {
                // Throughput picks only once every feasible target is met.
                if picks.order.len() > picks.slo_picks {
                    for (r, c) in cands.iter().enumerate() {
                        let Some(required) = c.required else { continue };
                        // Capped at depth + 1: more tokens than that cannot come from one step.
                        let mut depths = vec![0u32; c.parents.len()];
                        for (i, &p) in c.parents.iter().enumerate() {
                            depths[i] = if p < 0 { 1 } else { depths[p as usize] + 1 };
                        }
                        let required = required.min(f64::from(depths.iter().copied().max().unwrap_or(0)) + 1.0);
                        let values: f64 = (0..c.parents.len())
                            .map(|mut at| {
                                let mut v = f64::INFINITY;
                                while at != usize::MAX {
                                    v = v.min(c.probs[at]);
                                    at = if c.parents[at] < 0 { usize::MAX } else { c.parents[at] as usize };
                                }
                                v
                            })
                            .sum();
                        let reachable = 1.0 + values >= required;
                        if reachable && (c.max_nodes as usize) >= c.parents.len() {
                            prop_assert!(expected[r] >= required - 1e-9,
                                "request {} expects {} < required {}", r, expected[r], required);
                        }
                    }
                }
                // The SLO phase spends on SLO requests only.
                for p in &picks.order[..picks.slo_picks] {
                    prop_assert!(cands[p.request as usize].required.is_some());
                }
            }
            _ => prop_assert_eq!(picks.slo_picks, 0),
        }
        // Any prefix renders as valid renumbered subtrees.
        let keep = picks.order.len() / 2;
        let trees_out = picks.trees(&cands, keep);
        prop_assert_eq!(trees_out.nodes.len(), keep);
        for (r, c) in cands.iter().enumerate() {
            let (nodes, parents) = (trees_out.nodes_of(r), trees_out.parents_of(r));
            prop_assert!(nodes.windows(2).all(|w| w[0] < w[1]));
            for (k, (&node, &parent)) in nodes.iter().zip(parents).enumerate() {
                let original = c.parents[node as usize];
                if original < 0 {
                    prop_assert_eq!(parent, -1);
                } else {
                    prop_assert!(parent >= 0 && (parent as usize) < k);
                    prop_assert_eq!(nodes[parent as usize] as i32, original);
                }
            }
        }
    }
}

/// One simulated request arrival.
#[derive(Debug, Clone)]
struct Arrival {
    step: usize,
    prompt_len: u32,
    new_tokens: u32,
    priority: i32,
    tpot: Option<f64>,
}

/// No target, or one that a step every 10 ms keeps or misses (tight), or one far slower (loose:
/// such requests get ahead of their pace and may sit out while tight ones are behind).
fn tpot() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![Just(None), (0.001f64..0.012).prop_map(Some), (0.012f64..0.5).prop_map(Some)]
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    prop::collection::vec(
        (0usize..30, 1u32..120, 1u32..60, 0i32..3, tpot()).prop_map(
            |(step, prompt_len, new_tokens, priority, tpot)| Arrival {
                step,
                prompt_len,
                new_tokens,
                priority,
                tpot,
            },
        ),
        1..14,
    )
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    let margin = prop_oneof![Just(f64::INFINITY), Just(1.0), 0.0f64..3.0];
    (
        prop::sample::select(vec![8u32, 16]),
        12u32..40,
        1u32..160,
        1u32..100,
        1u32..12,
        0u32..64,
        prop_oneof![1 => policy(), 2 => Just(Policy::AdaServe)],
        (margin, prop_oneof![Just(0.0), Just(2.0), 0.0f64..4.0]),
    )
        .prop_map(
            |(block_size, num_blocks, tokens, prefill, running, verify, policy, (margin, min_steps))| {
                SchedulerConfig {
                    num_blocks,
                    block_size,
                    max_tokens_per_step: tokens,
                    max_prefill_tokens_per_step: prefill,
                    max_running: running.min(tokens),
                    max_verify_tokens: verify,
                    policy,
                    cost_model: StepCostModel::linear(0.005, 0.0001).unwrap(),
                    sit_out_margin: margin,
                    sit_out_min_target_steps: min_steps,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// A simulated engine: requests arrive over time, drafts every step, random acceptance,
    /// random aborts; after the last arrival everything must finish, and the pool be full.
    #[test]
    fn scheduler_respects_budgets_finishes_everything_and_never_leaks(
        config in config(),
        arrivals in arrivals(),
        draft in tree(24),
        seed in any::<u64>(),
        abort_every in prop::option::of(3usize..20),
    ) {
        let mut rng = seed | 1;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut s = Scheduler::new(config.clone()).unwrap();
        let capacity = config.num_blocks * config.block_size;
        let mut admitted_order: Vec<u64> = Vec::new();
        let mut ended: BTreeSet<u64> = BTreeSet::new();
        let mut live: BTreeSet<u64> = BTreeSet::new();
        let (parents, probs) = draft;
        let last_arrival = arrivals.iter().map(|a| a.step).max().unwrap_or(0);
        let mut step = 0usize;
        let mut sit_outs = 0usize;
        while step <= last_arrival || !live.is_empty() {
            prop_assert!(step < 20_000, "requests never finished: {:?}", live);
            let now = step as f64 * 0.01;
            for (id, a) in arrivals.iter().enumerate().filter(|(_, a)| a.step == step) {
                let spec = RequestSpec {
                    prompt_len: a.prompt_len,
                    max_len: (a.prompt_len + a.new_tokens).min(capacity),
                    priority: a.priority,
                    slo: Slo { tpot: a.tpot, ttft: None },
                    arrival: now,
                };
                match s.add_request(id as u64, spec) {
                    Ok(()) => { live.insert(id as u64); }
                    Err(SchedulerError::InvalidParameter { .. }) => prop_assert!(spec.max_len <= spec.prompt_len),
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
            let ready = s.decode_ready();
            let drafts: Vec<Draft<'_>> = ready.iter().map(|&request| Draft { request, parents: &parents, probs: &probs }).collect();
            // AdaServe's requirement of each decode-ready SLO request with a first token, as a
            // function of the step-time estimate (the states before the step).
            let pace: Vec<(u64, f64, f64, u32)> = ready
                .iter()
                .filter_map(|&id| {
                    let r = s.request(id).unwrap();
                    Some((id, r.spec.slo.tpot?, r.first_token_at?, r.outputs.saturating_sub(1)))
                })
                .collect();
            let plan = s.schedule(now, &drafts).unwrap();
            sit_outs += plan.sat_out.len();

            // No decoding request is left out (max_running <= max_tokens_per_step) unless it
            // sits out.
            for id in &ready {
                prop_assert!(
                    plan.request_ids.contains(id)
                        || plan.preempted.contains(id)
                        || plan.sat_out.contains(id),
                    "{} starved", id
                );
            }
            // Sit-outs: AdaServe only, only while an SLO request is behind (A > 1), exactly the
            // SLO requests with A <= -margin * tau / t and t >= min_steps * tau (tau = the
            // step-time bound: never below the selection's estimate nor the last step's real
            // time): every other one, including any about to fall behind its pace, is
            // scheduled. Best-effort requests and those without a first token never sit out.
            let tau = plan.step_time_bound;
            prop_assert!(tau >= plan.step_time_estimate - 1e-12);
            if step > 0 {
                prop_assert!(tau >= 0.01 - 1e-9, "the last step took 10 ms, the bound says {}", tau);
            }
            let required = |&(_, tpot, t0, emitted): &(u64, f64, f64, u32)| {
                required_tokens(now, t0, tau, tpot, emitted)
            };
            let behind = pace.iter().any(|p| required(p) > 1.0);
            let sit_out_rule =
                config.policy == Policy::AdaServe && config.sit_out_margin.is_finite() && behind;
            let (margin, min_steps) = (config.sit_out_margin, config.sit_out_min_target_steps);
            for id in &plan.sat_out {
                prop_assert!(!plan.request_ids.contains(id) && !plan.preempted.contains(id));
                let state = s.request(*id).unwrap();
                prop_assert_eq!(state.phase, Phase::Running, "a sitting-out request keeps running");
                let slots = s.pool().table(*id).len() as u32 * config.block_size;
                prop_assert!(slots >= state.computed, "and keeps its KV");
                let p = pace.iter().find(|p| p.0 == *id);
                prop_assert!(p.is_some(), "request {} without a TPOT target or first token sat out", id);
            }
            for p in &pace {
                let a = required(p);
                let sits = plan.sat_out.contains(&p.0);
                if sits {
                    // On pace through this step without a token, with the margin to spare.
                    prop_assert!(sit_out_rule && a <= -margin * tau / p.1 + 1e-9, "{} at A = {}", p.0, a);
                    prop_assert!(a <= 0.0);
                    prop_assert!(p.1 >= min_steps * tau * (1.0 - 1e-9), "a tight target sat out");
                } else if sit_out_rule
                    && a <= -margin * tau / p.1 - 1e-9
                    && p.1 >= min_steps * tau * (1.0 + 1e-9)
                {
                    prop_assert!(plan.preempted.contains(&p.0), "{} at A = {} should sit out", p.0, a);
                }
            }
            if !sit_out_rule {
                prop_assert!(plan.sat_out.is_empty());
            }
            // Budgets.
            prop_assert!(plan.num_tokens() <= config.max_tokens_per_step as usize);
            prop_assert!(plan.verify_tokens <= config.max_verify_tokens as usize);
            prop_assert!(s.running().len() <= config.max_running as usize);
            let mut prefill_tokens = 0;
            let mut slots_seen = BTreeSet::new();
            let mut offset = 0usize;
            for b in 0..plan.batch_size() {
                let id = plan.request_ids[b];
                let state = s.request(id).unwrap();
                prop_assert_eq!(state.phase, Phase::Running);
                if !admitted_order.contains(&id) { admitted_order.push(id); }
                let (context, query) = (plan.context_lens[b] as u32, plan.query_lens[b] as usize);
                prop_assert_eq!(context, state.computed);
                prop_assert_eq!(query, (plan.chunk_lens[b] + plan.tree_lens[b]) as usize);
                prop_assert!(plan.chunk_lens[b] >= 1 && plan.chunk_lens[b] as u32 <= state.pending());
                if state.pending() > 1 { prefill_tokens += plan.chunk_lens[b]; }
                prop_assert!(plan.tree_lens[b] == 0 || state.pending() == 1);
                prop_assert_eq!(plan.emits[b], plan.chunk_lens[b] as u32 == state.pending());
                // Block table row = the pool's table, zero padded; slots follow the layout.
                let table = s.pool().table(id);
                let row = &plan.block_tables[b * plan.max_blocks..(b + 1) * plan.max_blocks];
                prop_assert_eq!(&row[..table.len()], &table.iter().map(|&x| x as i32).collect::<Vec<_>>()[..]);
                prop_assert!(row[table.len()..].iter().all(|&x| x == 0));
                for k in 0..query {
                    let slot = context + k as u32;
                    let flat = plan.slot_mapping[offset + k];
                    prop_assert_eq!(Some(flat), s.pool().slot(id, slot));
                    prop_assert!(slots_seen.insert(flat));
                }
                offset += query;
                // The chosen tree is a parent-closed subtree of the draft.
                let (nodes, tparents) = (plan.trees.nodes_of(b), plan.trees.parents_of(b));
                prop_assert_eq!(nodes.len(), plan.tree_lens[b] as usize);
                for (k, (&node, &p)) in nodes.iter().zip(tparents).enumerate() {
                    let original = parents[node as usize];
                    let renumbered = if original < 0 {
                        p == -1
                    } else {
                        p >= 0 && (p as usize) < k && nodes[p as usize] as i32 == original
                    };
                    prop_assert!(renumbered, "node {} of request {}", node, id);
                }
            }
            prop_assert!(prefill_tokens as u32 <= config.max_prefill_tokens_per_step);
            s.check_integrity().map_err(TestCaseError::fail)?;

            // A premature schedule is refused and changes nothing.
            if plan.batch_size() > 0 {
                let free = s.pool().num_free();
                prop_assert!(matches!(s.schedule(now, &[]), Err(SchedulerError::StepOrder(_))));
                prop_assert_eq!(s.pool().num_free(), free);
            }

            // The engine: random acceptance, finish at max_len, random aborts.
            let mut results = Vec::new();
            for b in 0..plan.batch_size() {
                let id = plan.request_ids[b];
                // A verifier accepts one root-to-node path: at most the chosen tree's depth.
                let parents = plan.trees.parents_of(b);
                let mut depth = vec![0u32; parents.len()];
                for (i, &p) in parents.iter().enumerate() {
                    depth[i] = if p < 0 { 1 } else { depth[p as usize] + 1 };
                }
                let deepest = depth.iter().copied().max().unwrap_or(0);
                let accepted = if deepest > 0 { (next() % (u64::from(deepest) + 1)) as u32 } else { 0 };
                results.push((id, accepted));
            }
            if let Some(every) = abort_every {
                if step % every == 0 {
                    if let Some(&victim) = live.iter().nth((next() % live.len().max(1) as u64) as usize) {
                        s.abort(victim).unwrap();
                        live.remove(&victim);
                        ended.insert(victim);
                        results.retain(|&(id, _)| id != victim);
                    }
                }
            }
            s.commit(now + 0.005, &results).unwrap();
            for (id, _) in results {
                let state = s.request(id).unwrap();
                if state.known >= state.spec.max_len {
                    prop_assert_eq!(state.known, state.spec.max_len);
                    s.finish(id).unwrap();
                    live.remove(&id);
                    ended.insert(id);
                }
            }
            s.check_integrity().map_err(TestCaseError::fail)?;
            step += 1;
        }
        prop_assert_eq!(s.num_requests(), 0);
        prop_assert_eq!(s.pool().num_free(), config.num_blocks);
        let stats = s.stats();
        prop_assert_eq!(stats.finished + stats.aborted, ended.len() as u64);
        prop_assert_eq!(stats.sit_outs, sit_outs as u64);

        // FCFS among equals: first admissions of equal-priority requests follow arrival order.
        for (i, &a) in admitted_order.iter().enumerate() {
            for &b in &admitted_order[i + 1..] {
                let (ra, rb) = (&arrivals[a as usize], &arrivals[b as usize]);
                if ra.priority == rb.priority {
                    prop_assert!((ra.step, a) < (rb.step, b), "request {} admitted before the earlier equal {}", a, b);
                }
            }
        }
    }
}
