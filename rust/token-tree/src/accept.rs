use crate::{TokenTree, TreeError, ROOT};

/// Outcome of verifying one tree: the accepted nodes (root-first, each the child of the
/// previous one) and the token the model emits after them (the "bonus" token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub nodes: Vec<usize>,
    pub bonus: i32,
}

impl TokenTree {
    /// Greedy acceptance. `targets[0]` is the model's token after the root and
    /// `targets[i + 1]` its token after node `i` (so `targets.len() == len() + 1`). Starting at
    /// the root, repeatedly move to the child whose token equals the model's token after the
    /// current node (the lowest-index such child if siblings repeat a token).
    ///
    /// One pass in index order suffices: children follow their parent, and once the walk has
    /// moved on, later children of an earlier node can no longer match.
    pub fn accept_greedy(&self, targets: &[i32]) -> Result<Acceptance, TreeError> {
        if targets.len() != self.len() + 1 {
            return Err(TreeError::LengthMismatch {
                what: "target_ids",
                expected: self.len() + 1,
                got: targets.len(),
            });
        }
        if let Some(index) = targets.iter().position(|t| *t < 0) {
            return Err(TreeError::InvalidToken { index, token: i64::from(targets[index]) });
        }
        let mut nodes = Vec::new();
        let mut tip = ROOT;
        let mut wanted = targets[0];
        for (i, (&parent, &token)) in self.parents().iter().zip(self.tokens()).enumerate() {
            if parent == tip && token == wanted {
                nodes.push(i);
                tip = i as i32;
                wanted = targets[i + 1];
            }
        }
        Ok(Acceptance { nodes, bonus: wanted })
    }
}

/// [`TokenTree::accept_greedy`] for a batch: `targets` is row-major `[trees.len(), width]`
/// (e.g. the argmax over a verification block of [`crate::build_verification_batch`]); row `b`
/// uses its first `1 + trees[b].len()` columns and ignores the padding after them.
pub fn accept_greedy_batch(
    trees: &[&TokenTree],
    targets: &[i32],
    width: usize,
) -> Result<Vec<Acceptance>, TreeError> {
    let needed = 1 + trees.iter().map(|t| t.len()).max().unwrap_or(0);
    if width < needed {
        return Err(TreeError::LengthMismatch { what: "target_ids rows", expected: needed, got: width });
    }
    if targets.len() != trees.len() * width {
        return Err(TreeError::LengthMismatch {
            what: "target_ids",
            expected: trees.len() * width,
            got: targets.len(),
        });
    }
    if let Some(index) = targets.iter().position(|t| *t < 0) {
        return Err(TreeError::InvalidToken { index, token: i64::from(targets[index]) });
    }
    trees
        .iter()
        .zip(targets.chunks_exact(width))
        .map(|(tree, row)| tree.accept_greedy(&row[..tree.len() + 1]))
        .collect()
}
