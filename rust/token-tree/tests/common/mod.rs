//! Random trees and naive reference implementations shared by the property tests.
#![allow(dead_code)]

use proptest::prelude::*;
use suffixspec_tree::{TokenTree, ROOT};

/// Random valid trees of up to `max_len` nodes over a small alphabet (so siblings and
/// drafts often share tokens).
pub fn tree(max_len: usize, alphabet: i32) -> impl Strategy<Value = TokenTree> {
    prop::collection::vec((any::<u32>(), 0..alphabet, 0.0f64..=1.0), 0..=max_len).prop_map(|nodes| {
        let mut tokens = Vec::new();
        let mut parents = Vec::new();
        let mut probs = Vec::new();
        for (i, (pick, token, prob)) in nodes.into_iter().enumerate() {
            parents.push((pick as usize % (i + 1)) as i32 - 1);
            tokens.push(token);
            probs.push(prob);
        }
        TokenTree::new(tokens, parents, Some(probs)).expect("generated trees are valid")
    })
}

/// Random trees whose probabilities never increase from parent to child.
pub fn monotone_tree(max_len: usize, alphabet: i32) -> impl Strategy<Value = TokenTree> {
    tree(max_len, alphabet).prop_map(|t| {
        let mut probs: Vec<f64> = Vec::with_capacity(t.len());
        for (&parent, &prob) in t.parents().iter().zip(t.probs()) {
            probs.push(if parent == ROOT { prob } else { prob * probs[parent as usize] });
        }
        TokenTree::new(t.tokens().to_vec(), t.parents().to_vec(), Some(probs)).unwrap()
    })
}

/// Ancestors of `i` (including `i`) by walking parent links.
pub fn naive_ancestors(t: &TokenTree, i: usize) -> Vec<usize> {
    let mut out = vec![i];
    let mut current = t.parents()[i];
    while current != ROOT {
        out.push(current as usize);
        current = t.parents()[current as usize];
    }
    out
}

/// Token sequence from the root's child down to `i`.
pub fn token_path(t: &TokenTree, i: usize) -> Vec<i32> {
    let mut path: Vec<i32> = naive_ancestors(t, i).iter().map(|&a| t.tokens()[a]).collect();
    path.reverse();
    path
}

/// Greedy acceptance by an explicit walk over children lists.
pub fn naive_accept(t: &TokenTree, targets: &[i32]) -> (Vec<usize>, i32) {
    let mut accepted = Vec::new();
    let mut tip = ROOT;
    loop {
        let wanted = targets[(tip + 1) as usize];
        let next = (0..t.len()).find(|&c| t.parents()[c] == tip && t.tokens()[c] == wanted);
        match next {
            Some(c) => {
                accepted.push(c);
                tip = c as i32;
            }
            None => return (accepted, wanted),
        }
    }
}
