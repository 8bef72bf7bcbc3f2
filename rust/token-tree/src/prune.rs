use crate::{TokenTree, ROOT};

impl TokenTree {
    /// The score `prune` ranks by: the smallest probability on the path from the root's child
    /// down to each node. It never exceeds the parent's score, so ranking by it cannot prefer
    /// a child over its parent even when a caller gives the child the higher probability.
    pub fn path_min_probs(&self) -> Vec<f64> {
        let mut scores: Vec<f64> = Vec::with_capacity(self.len());
        for (&parent, &prob) in self.parents().iter().zip(self.probs()) {
            let score = if parent == ROOT { prob } else { prob.min(scores[parent as usize]) };
            scores.push(score);
        }
        scores
    }

    /// Keeps the `min(max_nodes, len)` best nodes ranked by ([`Self::path_min_probs`]
    /// descending, index ascending).
    ///
    /// Guarantees: the kept set is parent-closed (a parent ranks at least as high as its
    /// child: same or higher score, lower index); no dropped node has a higher score than
    /// any kept node, so when probabilities do not increase along paths (as in suffix-tree
    /// drafts) no dropped node is more probable than a kept one; kept nodes keep their
    /// relative order, tokens and probabilities.
    pub fn prune(&self, max_nodes: usize) -> TokenTree {
        if max_nodes >= self.len() {
            return self.clone();
        }
        self.select(&self.prune_selection(max_nodes))
    }

    /// The original indices (ascending) of the nodes [`Self::prune`] keeps.
    pub fn prune_selection(&self, max_nodes: usize) -> Vec<usize> {
        let mut ranked: Vec<usize> = (0..self.len()).collect();
        if max_nodes < self.len() {
            let scores = self.path_min_probs();
            // Stable sort: equal scores keep index order.
            ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
            ranked.truncate(max_nodes);
            ranked.sort_unstable();
        }
        ranked
    }

    /// The sub-tree of the `kept` nodes (ascending and parent-closed), re-indexed.
    fn select(&self, kept: &[usize]) -> TokenTree {
        let mut new_index = vec![ROOT; self.len()];
        let mut tokens = Vec::with_capacity(kept.len());
        let mut parents = Vec::with_capacity(kept.len());
        let mut probs = Vec::with_capacity(kept.len());
        for &i in kept {
            new_index[i] = tokens.len() as i32;
            tokens.push(self.tokens()[i]);
            let parent = self.parents()[i];
            parents.push(if parent == ROOT { ROOT } else { new_index[parent as usize] });
            probs.push(self.probs()[i]);
        }
        TokenTree::from_valid(tokens, parents, probs)
    }
}
