//! One engine step of native work at 256 running requests with 64-node draft trees:
//! `schedule` (queues, KV, tree selection, plan arrays) plus `commit`. Target: <= 200 us.
//! `cargo run --release -p suffixspec-scheduler --example step_cost` measures the same step
//! as min / p10 / median over many steps (robust on a loaded machine).
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{decoding_scheduler, drafts, step, POLICIES, REQUESTS};
use criterion::{criterion_group, criterion_main, Criterion};
use suffixspec_scheduler::{Candidate, Policy, Selector};

/// Steady state: consecutive steps on one scheduler (its buffers warm, as in an engine),
/// restarted from the prepared state every `RESTART` steps (untimed) so requests stay
/// decoding with room to grow.
const RESTART: u64 = 100;

fn bench_step(c: &mut Criterion) {
    let trees = drafts();
    let mut group = c.benchmark_group("step_256x64");
    for (name, policy) in POLICIES {
        let base = decoding_scheduler(policy);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut s = base.clone();
                for i in 0..iters {
                    if i % RESTART == 0 {
                        s = base.clone();
                        step(&mut s, &trees, 1); // warms the buffers, untimed
                    }
                    let start = Instant::now();
                    step(&mut s, &trees, i % RESTART + 2);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_selection(c: &mut Criterion) {
    let trees = drafts();
    let cands: Vec<Candidate<'_>> = trees
        .iter()
        .enumerate()
        .map(|(i, (parents, probs))| Candidate {
            parents,
            probs,
            required: (i % 5 < 3).then_some(2.0 + (i % 7) as f64 * 0.5),
            max_nodes: 1000,
        })
        .collect();
    assert_eq!(cands.len(), REQUESTS as usize);
    let mut selector = Selector::default();
    c.bench_function("select_adaserve_256x64_budget_1024", |b| {
        b.iter(|| selector.select(Policy::AdaServe, black_box(&cands), 1024, &mut |_| true))
    });
}

criterion_group!(benches, bench_step, bench_selection);
criterion_main!(benches);
