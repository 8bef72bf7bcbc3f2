use crate::TreeError;

/// Parent index of the root's children: the root is the last context token, not a tree node.
pub const ROOT: i32 = -1;

/// Draft nodes in parents-first order (`parents[i]` is [`ROOT`] or an index below `i`).
///
/// The fields are private so that every tree in existence satisfies the invariants checked by
/// [`TokenTree::new`]; depths are derived once at construction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenTree {
    tokens: Vec<i32>,
    parents: Vec<i32>,
    depths: Vec<u32>,
    probs: Vec<f64>,
}

/// Children lists of every node in compressed sparse rows. Row 0 is the root, row `i + 1` is
/// node `i`; the children of row `r` are `indices[offsets[r]..offsets[r + 1]]`, in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildrenCsr {
    pub offsets: Vec<usize>,
    pub indices: Vec<u32>,
}

impl ChildrenCsr {
    /// Children of row `row` (0 = root, `i + 1` = node `i`).
    pub fn row(&self, row: usize) -> &[u32] {
        &self.indices[self.offsets[row]..self.offsets[row + 1]]
    }
}

impl TokenTree {
    /// Validates and builds a tree. `probs = None` gives every node probability 1.
    pub fn new(tokens: Vec<i32>, parents: Vec<i32>, probs: Option<Vec<f64>>) -> Result<Self, TreeError> {
        let n = tokens.len();
        if parents.len() != n {
            return Err(TreeError::LengthMismatch { what: "parents", expected: n, got: parents.len() });
        }
        let probs = probs.unwrap_or_else(|| vec![1.0; n]);
        if probs.len() != n {
            return Err(TreeError::LengthMismatch { what: "probs", expected: n, got: probs.len() });
        }
        if let Some(index) = tokens.iter().position(|t| *t < 0) {
            return Err(TreeError::InvalidToken { index, token: i64::from(tokens[index]) });
        }
        if let Some(index) = probs.iter().position(|p| !(p.is_finite() && (0.0..=1.0).contains(p))) {
            return Err(TreeError::InvalidProb { index, prob: probs[index] });
        }
        for (index, &parent) in parents.iter().enumerate() {
            // `parent as usize` is exact: the first test rules out negatives other than ROOT.
            if parent < ROOT || (parent != ROOT && parent as usize >= index) {
                return Err(TreeError::InvalidParent { index, parent: i64::from(parent) });
            }
        }
        Ok(Self::from_valid(tokens, parents, probs))
    }

    /// Builds a tree from parts already known to satisfy the invariants (merge, prune).
    pub(crate) fn from_valid(tokens: Vec<i32>, parents: Vec<i32>, probs: Vec<f64>) -> Self {
        let mut depths: Vec<u32> = Vec::with_capacity(parents.len());
        for &parent in &parents {
            let depth = if parent == ROOT { 1 } else { depths[parent as usize] + 1 };
            depths.push(depth);
        }
        Self { tokens, parents, depths, probs }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[i32] {
        &self.tokens
    }

    pub fn parents(&self) -> &[i32] {
        &self.parents
    }

    /// Depth of each node: 1 for children of the root.
    pub fn depths(&self) -> &[u32] {
        &self.depths
    }

    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// Largest depth (0 for an empty tree).
    pub fn max_depth(&self) -> u32 {
        self.depths.iter().copied().max().unwrap_or(0)
    }

    /// `prefix_len + depth` per node: the root (last context token) sits at `prefix_len`.
    pub fn position_ids(&self, prefix_len: i64) -> Result<Vec<i64>, TreeError> {
        check_prefix_len(prefix_len, i64::from(self.max_depth()))?;
        Ok(self.depths.iter().map(|d| prefix_len + i64::from(*d)).collect())
    }

    /// Children of every node (root = row 0), by a counting sort over the parents.
    pub fn children_csr(&self) -> ChildrenCsr {
        let mut offsets = vec![0usize; self.len() + 2];
        for &parent in &self.parents {
            offsets[(parent + 2) as usize] += 1;
        }
        for row in 1..offsets.len() {
            offsets[row] += offsets[row - 1];
        }
        let mut next = offsets.clone();
        let mut indices = vec![0u32; self.len()];
        for (node, &parent) in self.parents.iter().enumerate() {
            let slot = &mut next[(parent + 1) as usize];
            indices[*slot] = node as u32;
            *slot += 1;
        }
        ChildrenCsr { offsets, indices }
    }

    /// Children of `node` (-1 = the root), in index order.
    pub fn children(&self, node: i64) -> Result<Vec<u32>, TreeError> {
        let parent = if node == i64::from(ROOT) { ROOT } else { self.node_index(node)? as i32 };
        Ok((0..self.len() as u32).filter(|&i| self.parents[i as usize] == parent).collect())
    }

    /// Node indices from the root's child down to `node` (inclusive).
    pub fn path_to(&self, node: i64) -> Result<Vec<usize>, TreeError> {
        let mut current = self.node_index(node)?;
        let mut path = Vec::with_capacity(self.depths[current] as usize);
        loop {
            path.push(current);
            match self.parents[current] {
                ROOT => break,
                parent => current = parent as usize,
            }
        }
        path.reverse();
        Ok(path)
    }

    fn node_index(&self, node: i64) -> Result<usize, TreeError> {
        usize::try_from(node)
            .ok()
            .filter(|&i| i < self.len())
            .ok_or(TreeError::NodeOutOfRange { node, len: self.len() })
    }
}

/// A prefix length must be non-negative and leave room for `span` positions after it.
pub(crate) fn check_prefix_len(prefix_len: i64, span: i64) -> Result<(), TreeError> {
    if prefix_len < 0 {
        return Err(TreeError::InvalidParameter {
            name: "prefix_len",
            reason: format!("must be non-negative, got {prefix_len}"),
        });
    }
    if prefix_len.checked_add(span).is_none() {
        return Err(TreeError::InvalidParameter {
            name: "prefix_len",
            reason: format!("{prefix_len} overflows the position ids"),
        });
    }
    Ok(())
}
