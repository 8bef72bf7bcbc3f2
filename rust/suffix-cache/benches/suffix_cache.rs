//! Criterion benches: prompt-tree build, append per token and speculate per call, on a
//! repetitive and a random synthetic token stream. Also prints memory per token.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use suffixspec_cache::{Drafter, SpecParams, SuffixTree, TokenId};

const DEPTH: usize = 64;
const VOCAB: u64 = 32_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Uniform tokens over a 32k vocabulary.
fn random_stream(n: usize, seed: u64) -> Vec<TokenId> {
    let mut rng = Rng(seed);
    (0..n).map(|_| (rng.next() % VOCAB) as TokenId).collect()
}

/// Text stitched from a small pool of 20..60-token "phrases" with occasional random tokens,
/// like agentic / code outputs that repeat themselves.
fn repetitive_stream(n: usize, seed: u64) -> Vec<TokenId> {
    let mut rng = Rng(seed);
    let phrases: Vec<Vec<TokenId>> =
        (0..64).map(|i| random_stream(20 + (rng.next() % 40) as usize, 1000 + i)).collect();
    let mut out = Vec::with_capacity(n + 64);
    while out.len() < n {
        out.extend(&phrases[(rng.next() % phrases.len() as u64) as usize]);
        if rng.next() % 4 == 0 {
            out.push((rng.next() % VOCAB) as TokenId);
        }
    }
    out.truncate(n);
    out
}

/// Makes `n` tokens of a stream from a seed.
type Stream = fn(usize, u64) -> Vec<TokenId>;

fn streams() -> [(&'static str, Stream); 2] {
    [("repetitive", repetitive_stream), ("random", random_stream)]
}

/// A global-style tree: `seqs` responses of `len` tokens.
fn history(stream: Stream, seqs: u64, len: usize) -> SuffixTree {
    let mut tree = SuffixTree::new(DEPTH).unwrap();
    for seq in 0..seqs {
        tree.extend(seq, &stream(len, 7 + seq)).unwrap();
    }
    tree
}

fn report_memory() {
    for (name, stream) in streams() {
        let tree = history(stream, 64, 1024);
        let per_token = tree.memory_bytes() as f64 / tree.num_tokens() as f64;
        let nodes = tree.num_nodes() as f64 / tree.num_tokens() as f64;
        eprintln!(
            "memory {name}: {per_token:.1} bytes/token, {nodes:.2} nodes/token ({} tokens)",
            tree.num_tokens()
        );
    }
}

fn build_prompt(c: &mut Criterion) {
    report_memory();
    let mut group = c.benchmark_group("build_prompt");
    for (name, stream) in streams() {
        let prompt = stream(4096, 3);
        group.throughput(Throughput::Elements(prompt.len() as u64));
        group.bench_function(BenchmarkId::new(name, prompt.len()), |b| {
            b.iter(|| {
                let mut tree = SuffixTree::new(DEPTH).unwrap();
                tree.extend(0, black_box(&prompt)).unwrap();
                tree
            })
        });
    }
    group.finish();
}

fn append_token(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_token");
    group.throughput(Throughput::Elements(1));
    for (name, stream) in streams() {
        let response = stream(1024, 99);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut tree = history(stream, 32, 1024);
                let mut elapsed = Duration::ZERO;
                let mut seq = 1000;
                let mut done = 0;
                while done < iters {
                    let start = Instant::now();
                    for &token in response.iter().take((iters - done) as usize) {
                        tree.extend(seq, black_box(&[token])).unwrap();
                        done += 1;
                    }
                    elapsed += start.elapsed();
                    tree.remove(seq).unwrap();
                    seq += 1;
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn speculate(c: &mut Criterion) {
    let mut group = c.benchmark_group("speculate");
    for (name, stream) in streams() {
        let tree = history(stream, 64, 1024);
        // Contexts: tails of a stream the tree has seen plus a fresh one (few matches).
        let seen = stream(1024, 7);
        let mut contexts: Vec<&[TokenId]> = (1..64).map(|i| &seen[i * 16 - 16..i * 16]).collect();
        let unseen = stream(4096, 12345);
        contexts.extend((1..64).map(|i| &unseen[i * 64 - 64..i * 64]));
        for (tree_mode, drafter) in
            [false, true].into_iter().flat_map(|tree| [(tree, Drafter::Arctic), (tree, Drafter::Suffixspec)])
        {
            let params = SpecParams {
                max_spec_tokens: 32,
                max_spec_factor: 1.0,
                max_spec_offset: 0.0,
                min_token_prob: 0.1,
                use_tree_spec: tree_mode,
                drafter,
            };
            let mode = match (tree_mode, drafter) {
                (false, Drafter::Arctic) => "path",
                (true, Drafter::Arctic) => "tree",
                (false, Drafter::Suffixspec) => "path-suffixspec-drafter",
                (true, Drafter::Suffixspec) => "tree-suffixspec-drafter",
            };
            group.throughput(Throughput::Elements(contexts.len() as u64));
            group.bench_function(BenchmarkId::new(name, mode), |b| {
                b.iter(|| {
                    for context in &contexts {
                        black_box(tree.speculate(black_box(context), &params).unwrap());
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = build_prompt, append_token, speculate
}
criterion_main!(benches);
