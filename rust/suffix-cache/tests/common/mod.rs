//! Naive reference model: substring counts from the raw sequences and drafts computed
//! straight from the spec on `SpecParams` (no early stopping, no tree).

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use suffixspec_cache::{Draft, Drafter, SpecParams, TokenId};

pub type Counts = HashMap<Vec<TokenId>, u64>;

/// Occurrences of every substring of length `1..=max_depth` over `seqs`.
pub fn substring_counts<'a>(seqs: impl IntoIterator<Item = &'a [TokenId]>, max_depth: usize) -> Counts {
    let mut counts = Counts::new();
    for seq in seqs {
        for start in 0..seq.len() {
            for end in start + 1..=(start + max_depth).min(seq.len()) {
                *counts.entry(seq[start..end].to_vec()).or_default() += 1;
            }
        }
    }
    counts
}

fn budget(match_len: usize, params: &SpecParams) -> usize {
    let limit = match_len as f64 * params.max_spec_factor + params.max_spec_offset + 1e-6;
    if limit < 0.0 {
        0
    } else {
        (limit.floor() as usize).min(params.max_spec_tokens)
    }
}

/// Continuations of `s` with their counts, ascending by token.
fn children(
    counts: &Counts,
    alphabet: &BTreeSet<TokenId>,
    s: &[TokenId],
    max_depth: usize,
) -> Vec<(TokenId, u64)> {
    if s.len() >= max_depth {
        return Vec::new();
    }
    let mut longer = s.to_vec();
    longer.push(0);
    alphabet
        .iter()
        .filter_map(|&t| {
            *longer.last_mut().unwrap() = t;
            counts.get(&longer).map(|&c| (t, c))
        })
        .collect()
}

fn push(draft: &mut Draft, token: TokenId, parent: i32, prob: f64) {
    draft.token_ids.push(token);
    draft.parents.push(parent);
    draft.probs.push(prob);
    draft.score += prob;
}

fn path(
    counts: &Counts,
    alphabet: &BTreeSet<TokenId>,
    s: &[TokenId],
    d: usize,
    budget: usize,
    min: f64,
) -> Draft {
    let mut draft = Draft::default();
    let (mut cur, mut count, mut prob) = (s.to_vec(), counts[s], 1.0);
    while draft.token_ids.len() < budget {
        let mut best: Option<(TokenId, u64)> = None;
        for (t, c) in children(counts, alphabet, &cur, d) {
            if best.map_or(true, |(_, bc)| c > bc) {
                best = Some((t, c));
            }
        }
        let Some((t, c)) = best else { break };
        let p = prob * (c as f64 / count as f64);
        if p < min {
            break;
        }
        let parent = draft.token_ids.len() as i32 - 1;
        push(&mut draft, t, parent, p);
        cur.push(t);
        (count, prob) = (c, p);
    }
    draft
}

/// Frontier entry of the naive tree draft: (prob, string, count, parent index).
type Frontier = (f64, Vec<TokenId>, u64, i32);

fn tree(
    counts: &Counts,
    alphabet: &BTreeSet<TokenId>,
    s: &[TokenId],
    d: usize,
    budget: usize,
    min: f64,
) -> Draft {
    // Vec order = push order; taken entries become None.
    let mut frontier: Vec<Option<Frontier>> = Vec::new();
    let expand = |frontier: &mut Vec<_>, s: &[TokenId], count: u64, prob: f64, parent: i32| {
        for (t, c) in children(counts, alphabet, s, d) {
            let p = prob * (c as f64 / count as f64);
            if p >= min {
                let mut longer = s.to_vec();
                longer.push(t);
                frontier.push(Some((p, longer, c, parent)));
            }
        }
    };
    let mut draft = Draft::default();
    if budget == 0 {
        return draft;
    }
    expand(&mut frontier, s, counts[s], 1.0, -1);
    while draft.token_ids.len() < budget {
        let mut pick: Option<usize> = None;
        for (i, entry) in frontier.iter().enumerate() {
            if let Some((p, ..)) = entry {
                if pick.map_or(true, |j| *p > frontier[j].as_ref().unwrap().0) {
                    pick = Some(i);
                }
            }
        }
        let Some(i) = pick else { break };
        let (p, string, c, parent) = frontier[i].take().unwrap();
        let index = draft.token_ids.len() as i32;
        push(&mut draft, *string.last().unwrap(), parent, p);
        expand(&mut frontier, &string, c, p, index);
    }
    draft
}

/// The draft the spec prescribes for `context` over a tree with these counts.
pub fn naive_draft(counts: &Counts, max_depth: usize, context: &[TokenId], params: &SpecParams) -> Draft {
    let alphabet: BTreeSet<TokenId> = counts.keys().filter(|k| k.len() == 1).map(|k| k[0]).collect();
    let usable = context.len().min(max_depth);
    let context = &context[context.len() - usable..];
    let mut best = Draft::default();
    for m in (1..=usable).rev() {
        let s = &context[usable - m..];
        if !counts.contains_key(s) {
            continue;
        }
        let b = budget(m, params);
        let draft = if params.use_tree_spec {
            tree(counts, &alphabet, s, max_depth, b, params.min_token_prob)
        } else {
            path(counts, &alphabet, s, max_depth, b, params.min_token_prob)
        };
        if !draft.token_ids.is_empty() && draft.score > best.score {
            best = Draft { match_len: m, ..draft };
        }
    }
    best
}

/// Random but valid speculation parameters (small budgets, thresholds that bite).
pub fn spec_params() -> impl Strategy<Value = SpecParams> {
    (
        0usize..8,
        prop::sample::select(vec![0.0, 0.5, 1.0, 1.5, 3.0]),
        prop::sample::select(vec![-2.0, 0.0, 0.7, 1.0, 4.0]),
        prop::sample::select(vec![0.0, 0.1, 0.25, 0.5, 1.0]),
        any::<bool>(),
    )
        .prop_map(
            |(max_spec_tokens, max_spec_factor, max_spec_offset, min_token_prob, use_tree_spec)| SpecParams {
                max_spec_tokens,
                max_spec_factor,
                max_spec_offset,
                min_token_prob,
                use_tree_spec,
                drafter: Drafter::Arctic,
            },
        )
}
