use rustc_hash::FxHashMap;

use crate::{TokenTree, ROOT};

/// Trie union of `trees`: a node whose (merged parent, token) pair already exists is folded
/// into the existing node (probability = the maximum), so no two siblings share a token and
/// every root-to-node path of every input is a path of the result, and vice versa.
///
/// Nodes appear in first-seen order (inputs in order, each in index order), which is
/// parents-first and deterministic.
pub fn merge<'a>(trees: impl IntoIterator<Item = &'a TokenTree>) -> TokenTree {
    let mut tokens = Vec::new();
    let mut parents = Vec::new();
    let mut probs: Vec<f64> = Vec::new();
    let mut index_of: FxHashMap<(i32, i32), i32> = FxHashMap::default();
    let mut remap: Vec<i32> = Vec::new();
    for tree in trees {
        remap.clear();
        for ((&parent, &token), &prob) in tree.parents().iter().zip(tree.tokens()).zip(tree.probs()) {
            let merged_parent = if parent == ROOT { ROOT } else { remap[parent as usize] };
            let merged = *index_of.entry((merged_parent, token)).or_insert_with(|| {
                tokens.push(token);
                parents.push(merged_parent);
                probs.push(prob);
                (tokens.len() - 1) as i32
            });
            let slot = &mut probs[merged as usize];
            *slot = slot.max(prob);
            remap.push(merged);
        }
    }
    TokenTree::from_valid(tokens, parents, probs)
}

impl TokenTree {
    /// This tree with repeated siblings folded together (a one-tree [`merge`]).
    pub fn dedup(&self) -> TokenTree {
        merge([self])
    }
}
