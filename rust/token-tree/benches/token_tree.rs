//! Verification-block construction for realistic tree sizes (64-128 nodes, batches of 16).
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use suffixspec_tree::{build_verification_batch, merge, TokenTree};

/// A deterministic bushy tree of `len` nodes (each node's parent is some earlier node or the
/// root), with probabilities shrinking along paths like a suffix-tree draft.
fn bushy_tree(len: usize, seed: u64) -> TokenTree {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut parents = Vec::with_capacity(len);
    let mut probs: Vec<f64> = Vec::with_capacity(len);
    for i in 0..len {
        // Mostly extend a recent node: long chains with some branching.
        let parent = if i == 0 || next() % 8 == 0 { -1 } else { (i - 1 - next() % i.min(4)) as i32 };
        let base = if parent < 0 { 1.0 } else { probs[parent as usize] };
        parents.push(parent);
        probs.push(base * 0.9);
    }
    let tokens = (0..len).map(|_| (next() % 32_000) as i32).collect();
    TokenTree::new(tokens, parents, Some(probs)).expect("valid tree")
}

fn bench_masks(c: &mut Criterion) {
    let mut group = c.benchmark_group("ancestor_mask");
    for len in [64usize, 128] {
        let tree = bushy_tree(len, 1);
        group.bench_with_input(BenchmarkId::new("bits", len), &tree, |b, t| {
            b.iter(|| black_box(t).ancestor_mask())
        });
        group.bench_with_input(BenchmarkId::new("bools", len), &tree, |b, t| {
            b.iter(|| black_box(t).ancestor_mask().to_bools())
        });
    }
    group.finish();
}

fn bench_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("verification_batch_16");
    for len in [64usize, 128] {
        let trees: Vec<TokenTree> = (0..16).map(|b| bushy_tree(len - b as usize, b)).collect();
        let refs: Vec<&TokenTree> = trees.iter().collect();
        let prefix_lens: Vec<i64> = (0..16).map(|b| 1000 + 37 * b).collect();
        let roots: Vec<i32> = (0..16).collect();
        group.bench_with_input(BenchmarkId::from_parameter(len), &refs, |b, refs| {
            b.iter(|| build_verification_batch(black_box(refs), &prefix_lens, &roots).expect("valid batch"))
        });
    }
    group.finish();
}

fn bench_merge_prune(c: &mut Criterion) {
    let drafts: Vec<TokenTree> = (0..4).map(|s| bushy_tree(64, s % 2)).collect();
    c.bench_function("merge_4x64_then_prune_64", |b| b.iter(|| merge(black_box(&drafts)).prune(64)));
}

criterion_group!(benches, bench_masks, bench_batch, bench_merge_prune);
criterion_main!(benches);
