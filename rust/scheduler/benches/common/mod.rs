//! The bench fixture shared by `benches/scheduler.rs` and `examples/step_cost.rs`: 256
//! decoding requests with 64-node draft trees, and one engine step over them.
use std::hint::black_box;

use suffixspec_scheduler::{
    Draft, Policy, RequestSpec, Scheduler, SchedulerConfig, Slo, StepCostModel, DEFAULT_SIT_OUT_MARGIN,
    DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
};

pub const REQUESTS: u64 = 256;
pub const TREE: usize = 64;

/// A deterministic bushy draft with path probabilities shrinking along paths.
pub fn draft(seed: u64) -> (Vec<i32>, Vec<f64>) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let (mut parents, mut probs) = (Vec::with_capacity(TREE), Vec::<f64>::with_capacity(TREE));
    for i in 0..TREE {
        let parent = if i == 0 || next() % 8 == 0 { -1 } else { (i - 1 - next() % i.min(4)) as i32 };
        let base = if parent < 0 { 1.0 } else { probs[parent as usize] };
        parents.push(parent);
        probs.push(base * (0.5 + (next() % 50) as f64 / 100.0));
    }
    (parents, probs)
}

/// 256 decoding requests (60% tight TPOT, 20% middle, 20% none), past their first token.
pub fn decoding_scheduler(policy: Policy) -> Scheduler {
    let config = SchedulerConfig {
        num_blocks: 65_536,
        block_size: 16,
        max_tokens_per_step: 8192,
        max_prefill_tokens_per_step: 2048,
        max_running: 512,
        max_verify_tokens: 2048,
        policy,
        cost_model: StepCostModel::piecewise(&[(1, 0.012), (512, 0.015), (2048, 0.030), (8192, 0.100)])
            .unwrap(),
        sit_out_margin: DEFAULT_SIT_OUT_MARGIN,
        sit_out_min_target_steps: DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
    };
    let mut s = Scheduler::new(config).unwrap();
    for id in 0..REQUESTS {
        let tpot = match id % 5 {
            0..=2 => Some(0.008),
            3 => Some(0.030),
            _ => None,
        };
        let spec = RequestSpec {
            prompt_len: 500 + (id as u32 * 37) % 1500,
            max_len: 8192,
            priority: 0,
            slo: Slo { tpot, ttft: None },
            arrival: 0.0,
        };
        s.add_request(id, spec).unwrap();
    }
    // Prefill everything at t = 0: every first token at t = 0, so that a step at `now`
    // (see `step`) asks the tight class for (now + step time) / 8 ms - tokens so far.
    while s.decode_ready().len() < REQUESTS as usize {
        let plan = s.schedule(0.0, &[]).unwrap();
        let results: Vec<(u64, u32)> = plan.request_ids.iter().map(|&id| (id, 0)).collect();
        s.commit(0.0, &results).unwrap();
    }
    s
}

/// The 256 drafts, one per request id.
pub fn drafts() -> Vec<(Vec<i32>, Vec<f64>)> {
    (0..REQUESTS).map(draft).collect()
}

/// Seconds between steps: the tight class (8 ms TPOT) then owes about 2.5 tokens per step, a
/// requirement the drafts can meet, so AdaServe's SLO phase runs every step.
pub const STEP_SECONDS: f64 = 0.02;

/// Step `k` (from 1) after `decoding_scheduler`: `decode_ready`, `schedule` with a draft per
/// decode-ready request at `k * STEP_SECONDS`, `commit` with up to 2 accepted nodes per
/// request. Returns the step's verify tokens.
pub fn step(s: &mut Scheduler, trees: &[(Vec<i32>, Vec<f64>)], k: u64) -> usize {
    let now = k as f64 * STEP_SECONDS;
    let ids = s.decode_ready();
    let drafts: Vec<Draft<'_>> = ids
        .iter()
        .map(|&request| {
            let (parents, probs) = &trees[request as usize];
            Draft { request, parents, probs }
        })
        .collect();
    let plan = s.schedule(now, &drafts).unwrap();
    let results: Vec<(u64, u32)> =
        plan.request_ids.iter().zip(&plan.tree_lens).map(|(&id, &t)| (id, (t as u32).min(2))).collect();
    s.commit(now + STEP_SECONDS / 2.0, &results).unwrap();
    black_box(plan.num_tokens());
    plan.verify_tokens
}

/// The policies measured, by name.
pub const POLICIES: [(&str, Policy); 4] = [
    ("adaserve", Policy::AdaServe),
    ("greedy", Policy::ProbabilityGreedy),
    ("uniform4", Policy::Uniform { draft_tokens: 4 }),
    ("none", Policy::NoSpeculation),
];
