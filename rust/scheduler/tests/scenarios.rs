//! Hand-checked scenarios: chunked prefill beside decoding, preemption order, priority
//! admission, aborts mid-step, atomic errors, AdaServe through the scheduler.
use suffixspec_scheduler::{
    Draft, Phase, Policy, RequestSpec, Scheduler, SchedulerConfig, SchedulerError, Slo, StepCostModel,
    DEFAULT_SIT_OUT_MARGIN, DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
};

fn spec(prompt_len: u32, max_len: u32, priority: i32) -> RequestSpec {
    RequestSpec { prompt_len, max_len, priority, slo: Slo::default(), arrival: 0.0 }
}

/// The sit-out margin of these scenarios (sit-outs are off by default).
const MARGIN: f64 = 1.0;

fn config(num_blocks: u32) -> SchedulerConfig {
    SchedulerConfig {
        num_blocks,
        block_size: 8,
        max_tokens_per_step: 64,
        max_prefill_tokens_per_step: 32,
        max_running: 16,
        max_verify_tokens: 32,
        policy: Policy::AdaServe,
        cost_model: StepCostModel::linear(0.010, 0.0001).unwrap(),
        sit_out_margin: MARGIN,
        sit_out_min_target_steps: DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
    }
}

/// Commits every planned request with no accepted nodes.
fn commit_all(s: &mut Scheduler, now: f64, plan: &suffixspec_scheduler::StepPlan) {
    let results: Vec<(u64, u32)> = plan.request_ids.iter().map(|&id| (id, 0)).collect();
    s.commit(now, &results).unwrap();
}

#[test]
fn long_prompt_enters_in_chunks_beside_decoding_requests() {
    let mut s = Scheduler::new(config(64)).unwrap();
    s.add_request(1, spec(4, 64, 0)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    commit_all(&mut s, 0.0, &plan);
    s.add_request(2, spec(80, 128, 0)).unwrap();
    let mut chunks = Vec::new();
    for step in 1..=3 {
        let plan = s.schedule(f64::from(step), &[]).unwrap();
        assert_eq!(plan.request_ids, vec![1, 2]);
        assert_eq!((plan.chunk_lens[0], plan.emits[0]), (1, true), "the decode keeps running");
        chunks.push((plan.context_lens[1], plan.chunk_lens[1], plan.emits[1]));
        commit_all(&mut s, f64::from(step), &plan);
    }
    assert_eq!(chunks, vec![(0, 32, false), (32, 32, false), (64, 16, true)]);
    assert_eq!(s.request(2).unwrap().known, 81);
}

#[test]
fn preemption_takes_lowest_priority_then_latest_deadline() {
    // 6 blocks of 8 slots; three 16-token prompts hold 2 blocks each once prefilled.
    let mut s = Scheduler::new(SchedulerConfig { max_prefill_tokens_per_step: 64, ..config(6) }).unwrap();
    let tight = Slo { tpot: Some(0.01), ttft: Some(1.0) };
    let loose = Slo { tpot: Some(1.0), ttft: Some(100.0) };
    s.add_request(1, RequestSpec { slo: loose, ..spec(16, 40, 0) }).unwrap();
    s.add_request(2, RequestSpec { slo: tight, ..spec(16, 40, 0) }).unwrap();
    s.add_request(3, spec(16, 40, 1)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    assert_eq!(plan.request_ids, vec![3, 1, 2], "higher priority first, then FCFS");
    commit_all(&mut s, 0.0, &plan);
    // Each holds 16 computed tokens in 2 blocks: the pool is full.
    assert_eq!(s.pool().num_free(), 0);
    // The next decode writes slot 16, a third block: someone must go. Among priority 0, the
    // loose deadline (request 1) goes first.
    let plan = s.schedule(0.1, &[]).unwrap();
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(plan.request_ids, vec![3, 2]);
    assert_eq!(s.request(1).unwrap().phase, Phase::Preempted);
    assert_eq!(s.request(1).unwrap().computed, 0);
    commit_all(&mut s, 0.1, &plan);
    s.check_integrity().unwrap();
}

#[test]
fn a_request_that_cannot_grow_preempts_itself_when_it_is_the_least_important() {
    let mut s = Scheduler::new(SchedulerConfig { max_prefill_tokens_per_step: 64, ..config(4) }).unwrap();
    s.add_request(1, spec(15, 32, 5)).unwrap();
    s.add_request(2, spec(16, 32, 0)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    commit_all(&mut s, 0.0, &plan);
    // 1's next root is slot 15 (its 2 blocks hold it); 2's is slot 16, a third block, and 2
    // is the least important running request: it preempts itself.
    let plan = s.schedule(0.1, &[]).unwrap();
    assert_eq!(plan.request_ids, vec![1]);
    assert_eq!(plan.preempted, vec![2]);
    commit_all(&mut s, 0.1, &plan);
    // Request 2 comes back when 1 finishes, recomputing its 17 known tokens.
    s.finish(1).unwrap();
    let plan = s.schedule(0.2, &[]).unwrap();
    assert_eq!((plan.request_ids[0], plan.context_lens[0], plan.chunk_lens[0]), (2, 0, 17));
    assert!(plan.emits[0]);
}

#[test]
fn important_arrivals_preempt_less_important_running_requests() {
    let mut s = Scheduler::new(config(4)).unwrap();
    s.add_request(1, spec(24, 32, 0)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    commit_all(&mut s, 0.0, &plan);
    s.add_request(2, spec(20, 32, 3)).unwrap();
    s.add_request(3, spec(20, 32, 0)).unwrap(); // an equal of 1: waits, never preempts it
    let plan = s.schedule(0.1, &[]).unwrap();
    assert_eq!(plan.request_ids, vec![2]);
    assert_eq!(plan.preempted, vec![1]);
    assert_eq!(s.waiting(), &[3]);
    commit_all(&mut s, 0.1, &plan);
}

#[test]
fn aborts_mid_step_free_blocks_and_release_the_commit() {
    let mut s = Scheduler::new(config(16)).unwrap();
    s.add_request(1, spec(20, 64, 0)).unwrap();
    s.add_request(2, spec(20, 64, 0)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    assert_eq!(plan.batch_size(), 2);
    s.abort(2).unwrap();
    assert!(matches!(s.commit(0.0, &[(2, 0)]), Err(SchedulerError::StepOrder(_))));
    assert!(s.step_in_flight());
    s.commit(0.0, &[(1, 0)]).unwrap();
    assert!(!s.step_in_flight());
    s.abort(1).unwrap();
    assert_eq!(s.pool().num_free(), 16);
    assert_eq!(s.abort(1), Err(SchedulerError::UnknownRequest(1)));
    assert_eq!(s.stats().aborted, 2);
}

#[test]
fn bad_input_changes_nothing() {
    let starving = SchedulerConfig { max_running: 65, ..config(16) };
    assert!(matches!(
        Scheduler::new(starving),
        Err(SchedulerError::InvalidParameter { name: "max_running", .. })
    ));
    let mut s = Scheduler::new(config(16)).unwrap();
    assert!(matches!(s.add_request(1, spec(0, 8, 0)), Err(SchedulerError::InvalidParameter { .. })));
    assert!(matches!(s.add_request(1, spec(8, 8, 0)), Err(SchedulerError::InvalidParameter { .. })));
    assert!(matches!(s.add_request(1, spec(8, 1000, 0)), Err(SchedulerError::InvalidParameter { .. })));
    s.add_request(1, spec(4, 16, 0)).unwrap();
    assert_eq!(s.add_request(1, spec(4, 16, 0)), Err(SchedulerError::DuplicateRequest(1)));
    let plan = s.schedule(0.0, &[]).unwrap();
    commit_all(&mut s, 0.0, &plan);
    let (parents, probs) = (vec![-1, 0, 5], vec![1.0, 1.0, 1.0]);
    let bad = Draft { request: 1, parents: &parents, probs: &probs };
    assert!(matches!(s.schedule(0.1, &[bad]), Err(SchedulerError::InvalidTree { request: 1, .. })));
    let unknown = Draft { request: 9, parents: &parents[..2], probs: &probs[..2] };
    assert_eq!(s.schedule(0.1, &[unknown]).unwrap_err(), SchedulerError::UnknownRequest(9));
    let good = Draft { request: 1, parents: &parents[..2], probs: &probs[..2] };
    let plan = s.schedule(0.1, &[good]).unwrap();
    assert_eq!(plan.tree_lens, vec![2]);
    let free = s.pool().num_free();
    // Too many accepted nodes, then a partly bad batch: nothing is applied.
    assert!(s.commit(0.2, &[(1, 3)]).is_err());
    assert!(s.commit(0.2, &[(1, 2), (1, 2)]).is_err());
    assert_eq!((s.request(1).unwrap().known, s.pool().num_free()), (5, free));
    s.commit(0.2, &[(1, 2)]).unwrap();
    assert_eq!((s.request(1).unwrap().known, s.request(1).unwrap().computed), (8, 7));
}

#[test]
fn adaserve_serves_the_late_request_and_baselines_do_not() {
    // Two decoding requests with identical drafts; request 2 has a tight TPOT and is late.
    let run = |policy: Policy| {
        let mut s = Scheduler::new(SchedulerConfig { policy, max_verify_tokens: 6, ..config(64) }).unwrap();
        s.add_request(1, spec(8, 128, 0)).unwrap();
        let slo = Slo { tpot: Some(0.010), ttft: None };
        s.add_request(2, RequestSpec { slo, ..spec(8, 128, 0) }).unwrap();
        let plan = s.schedule(0.0, &[]).unwrap();
        commit_all(&mut s, 0.0, &plan); // first tokens at t = 0
        let (parents, probs) = (vec![-1, 0, 1, 2, 3, 4], vec![0.9, 0.8, 0.7, 0.6, 0.5, 0.4]);
        let drafts: Vec<Draft<'_>> =
            [1, 2].iter().map(|&request| Draft { request, parents: &parents, probs: &probs }).collect();
        // At t = 0.03 (+ a 10.2 ms step) request 2 owes 4 tokens: A = 4.02 - 0 > 1 + 0.9 + 0.8 + 0.7.
        let plan = s.schedule(0.03, &drafts).unwrap();
        // Request 2 (a deadline) ranks before best-effort request 1.
        assert_eq!(plan.request_ids, vec![2, 1]);
        plan.tree_lens
    };
    // 1 + 0.9 + 0.8 + 0.7 + 0.6 = 4.0 < 4.02: five nodes, then the last one of the budget.
    assert_eq!(run(Policy::AdaServe), vec![5, 1], "AdaServe covers A = 4.02 first");
    assert_eq!(run(Policy::ProbabilityGreedy), vec![3, 3]);
    assert_eq!(run(Policy::Uniform { draft_tokens: 2 }), vec![2, 2]);
    assert_eq!(run(Policy::NoSpeculation), vec![0, 0]);
}

#[test]
fn near_max_len_a_shallow_branching_tree_keeps_its_side_branches_and_a_deep_one_is_capped() {
    let mut s = Scheduler::new(SchedulerConfig { policy: Policy::ProbabilityGreedy, ..config(16) }).unwrap();
    s.add_request(1, spec(4, 8, 0)).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    // 5 tokens known: room for 2 accepted nodes + the bonus token.
    commit_all(&mut s, 0.0, &plan);
    // Depth 2 with 4 nodes: no accepted path can pass max_len, so every node is verified.
    let (parents, probs) = ([-1, 0, -1, 2], [0.9, 0.8, 0.5, 0.4]);
    let plan = s.schedule(0.1, &[Draft { request: 1, parents: &parents, probs: &probs }]).unwrap();
    assert_eq!(plan.tree_lens[0], 4);
    s.commit(0.1, &[(1, 2)]).unwrap();
    assert_eq!(s.request(1).unwrap().known, 8);
    s.finish(1).unwrap();

    // Depth 3 exceeds the room of 2: the tree is cut to 2 nodes, so no path can overrun.
    s.add_request(2, spec(4, 8, 0)).unwrap();
    let plan = s.schedule(0.2, &[]).unwrap();
    commit_all(&mut s, 0.2, &plan);
    let (parents, probs) = ([-1, 0, 1, -1], [0.9, 0.8, 0.7, 0.5]);
    let plan = s.schedule(0.3, &[Draft { request: 2, parents: &parents, probs: &probs }]).unwrap();
    assert_eq!(plan.tree_lens[0], 2);
    s.check_integrity().unwrap();
}

#[test]
fn adaserve_lets_a_request_ahead_of_its_pace_sit_out_while_a_tight_one_is_behind() {
    // Request 1 cannot keep a 1 ms pace with 10 ms steps (always behind); request 2's 30 ms
    // pace lets it sit out most steps, and it is scheduled again before it falls behind.
    let run_with = |policy: Policy, sit_out_margin: f64, loose: f64, sit_out_min_target_steps: f64| {
        let config = SchedulerConfig { policy, sit_out_margin, sit_out_min_target_steps, ..config(64) };
        let mut s = Scheduler::new(config).unwrap();
        s.add_request(1, RequestSpec { slo: Slo { tpot: Some(0.001), ttft: None }, ..spec(8, 48, 0) })
            .unwrap();
        s.add_request(2, RequestSpec { slo: Slo { tpot: Some(loose), ttft: None }, ..spec(8, 48, 0) })
            .unwrap();
        let plan = s.schedule(0.0, &[]).unwrap();
        commit_all(&mut s, 0.0, &plan); // both first tokens at t = 0
        let (mut sat_out, mut resumed_after_sitting) = (0, 0);
        for step in 1..=30 {
            let now = f64::from(step) * 0.010;
            let blocks = s.pool().table(2).to_vec();
            let plan = s.schedule(now, &[]).unwrap();
            assert!(plan.request_ids.contains(&1), "the late request is always fed");
            if plan.sat_out.contains(&2) {
                assert!(!plan.request_ids.contains(&2));
                assert_eq!(s.pool().table(2), &blocks[..], "a sitting-out request keeps its KV");
                sat_out += 1;
            } else if sat_out > 0 {
                resumed_after_sitting += 1;
            }
            commit_all(&mut s, now, &plan);
            // On pace at every step's end: outputs after the first >= elapsed / target.
            let r = s.request(2).unwrap();
            assert!(f64::from(r.outputs - 1) >= now / loose - 1e-9, "step {step}: {} tokens", r.outputs);
        }
        s.check_integrity().unwrap();
        (sat_out, resumed_after_sitting, s.stats().sit_outs)
    };
    let run = |policy, margin, loose| run_with(policy, margin, loose, DEFAULT_SIT_OUT_MIN_TARGET_STEPS);
    let (sat_out, resumed, counted) = run(Policy::AdaServe, MARGIN, 0.030);
    // About 2 of every 3 steps sat out (a token per 30 ms at 10 ms steps).
    assert!((15..=22).contains(&sat_out), "{sat_out} sit-outs");
    assert!(resumed >= 5, "scheduled again between sit-outs");
    assert_eq!(counted, sat_out as u64);
    // Never under the baselines or with an infinite margin (the default).
    assert_eq!(run(Policy::ProbabilityGreedy, MARGIN, 0.030).0, 0);
    assert_eq!(run(Policy::Uniform { draft_tokens: 2 }, MARGIN, 0.030).0, 0);
    assert_eq!(run(Policy::AdaServe, f64::INFINITY, 0.030).0, 0);
    // A 15 ms target spans fewer than 2 steps of ~10 ms: such a request must emit about every
    // step, and it never sits out however far ahead it gets (1/3 token a step here)...
    assert_eq!(run(Policy::AdaServe, MARGIN, 0.015).0, 0);
    // ...unless the configuration lets any target sit out.
    assert!(run_with(Policy::AdaServe, MARGIN, 0.015, 0.0).0 > 0);
}

#[test]
fn nobody_sits_out_without_a_late_slo_request_and_best_effort_never_does() {
    let mut s = Scheduler::new(config(64)).unwrap();
    s.add_request(1, spec(8, 48, 0)).unwrap(); // best effort
    s.add_request(2, RequestSpec { slo: Slo { tpot: Some(1.0), ttft: None }, ..spec(8, 48, 0) }).unwrap();
    let plan = s.schedule(0.0, &[]).unwrap();
    commit_all(&mut s, 0.0, &plan);
    for step in 1..=5 {
        let plan = s.schedule(f64::from(step) * 0.01, &[]).unwrap();
        assert_eq!(plan.request_ids, vec![2, 1], "request 2 is far ahead, but nobody is behind");
        assert!(plan.sat_out.is_empty());
        commit_all(&mut s, f64::from(step) * 0.01, &plan);
    }
    // A late SLO request arrives: now request 2 sits out, best-effort request 1 still runs.
    s.add_request(3, RequestSpec { slo: Slo { tpot: Some(0.001), ttft: None }, ..spec(8, 48, 0) }).unwrap();
    let plan = s.schedule(0.06, &[]).unwrap();
    commit_all(&mut s, 0.06, &plan); // request 3's prefill: its first token
    let plan = s.schedule(0.07, &[]).unwrap();
    assert_eq!(plan.sat_out, vec![2]);
    assert_eq!(plan.request_ids, vec![3, 1]);
    commit_all(&mut s, 0.07, &plan);
    assert!(Scheduler::new(SchedulerConfig { sit_out_margin: -1.0, ..config(8) }).is_err());
    assert!(Scheduler::new(SchedulerConfig { sit_out_margin: f64::NAN, ..config(8) }).is_err());
    assert!(s.set_sit_out_margin(f64::NAN).is_err());
    assert_eq!(s.config().sit_out_margin, MARGIN);
    // Off unless configured.
    assert_eq!(SchedulerConfig::default().sit_out_margin, DEFAULT_SIT_OUT_MARGIN);
    assert!(DEFAULT_SIT_OUT_MARGIN.is_infinite());
}
