use crate::tree::check_prefix_len;
use crate::{TokenTree, TreeError, ROOT};

/// The padded verification block of a batch, as flat row-major buffers ready to become numpy
/// arrays. Row `b` holds request `b`; column 0 is the root (the last context token), column
/// `i + 1` is tree node `i`, and columns from `lengths[b]` to `width` are padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationBatch {
    pub batch: usize,
    /// `1 + ` the largest tree.
    pub width: usize,
    /// `[batch, width]`: root token, tree tokens, then 0.
    pub token_ids: Vec<i64>,
    /// `[batch, width]`: `prefix_len` for the root, `prefix_len + depth` for nodes; padding
    /// continues the count after the deepest node (`prefix_len + max_depth + 1`, `+ 2`, ...).
    pub position_ids: Vec<i64>,
    /// `[batch, width, width]`: row `r` sees column `c` iff `c` is `r`, an ancestor of `r` or
    /// the root. Padding rows see only the root and themselves, and no real row sees padding.
    pub mask: Vec<bool>,
    /// `[batch]`: `1 + len(tree)`.
    pub lengths: Vec<i64>,
}

/// Builds the verification block of `trees`, each verified after `prefix_lens[b]` cached
/// tokens with `root_tokens[b]` as its root.
pub fn build_verification_batch(
    trees: &[&TokenTree],
    prefix_lens: &[i64],
    root_tokens: &[i32],
) -> Result<VerificationBatch, TreeError> {
    let batch = trees.len();
    if prefix_lens.len() != batch {
        return Err(TreeError::LengthMismatch {
            what: "prefix_lens",
            expected: batch,
            got: prefix_lens.len(),
        });
    }
    if root_tokens.len() != batch {
        return Err(TreeError::LengthMismatch {
            what: "root_token_ids",
            expected: batch,
            got: root_tokens.len(),
        });
    }
    if let Some(index) = root_tokens.iter().position(|t| *t < 0) {
        return Err(TreeError::InvalidToken { index, token: i64::from(root_tokens[index]) });
    }
    let width = 1 + trees.iter().map(|t| t.len()).max().unwrap_or(0);
    for (tree, &prefix_len) in trees.iter().zip(prefix_lens) {
        check_prefix_len(prefix_len, i64::from(tree.max_depth()) + width as i64)?;
    }

    let mut out = VerificationBatch {
        batch,
        width,
        token_ids: vec![0; batch * width],
        position_ids: vec![0; batch * width],
        mask: vec![false; batch * width * width],
        lengths: Vec::with_capacity(batch),
    };
    let blocks = out
        .token_ids
        .chunks_exact_mut(width)
        .zip(out.position_ids.chunks_exact_mut(width))
        .zip(out.mask.chunks_exact_mut(width * width));
    for (b, ((tokens, positions), mask)) in blocks.enumerate() {
        let tree = trees[b];
        let prefix_len = prefix_lens[b];
        let len = 1 + tree.len();
        out.lengths.push(len as i64);

        tokens[0] = i64::from(root_tokens[b]);
        positions[0] = prefix_len;
        for (i, (&token, &depth)) in tree.tokens().iter().zip(tree.depths()).enumerate() {
            tokens[i + 1] = i64::from(token);
            positions[i + 1] = prefix_len + i64::from(depth);
        }
        let pad_base = prefix_len + i64::from(tree.max_depth());
        for (k, position) in positions[len..].iter_mut().enumerate() {
            *position = pad_base + 1 + k as i64;
        }

        fill_mask(tree, mask, width);
    }
    Ok(out)
}

/// One request's `[width, width]` mask: each node's row is its parent's row plus itself
/// (the root's row holds only the root), a row copy per node.
fn fill_mask(tree: &TokenTree, mask: &mut [bool], width: usize) {
    mask[0] = true;
    for (i, &parent) in tree.parents().iter().enumerate() {
        let row = i + 1;
        let parent_row = if parent == ROOT { 0 } else { parent as usize + 1 };
        let (done, rest) = mask.split_at_mut(row * width);
        // The parent's row has nothing beyond column `parent_row`.
        rest[..=parent_row].copy_from_slice(&done[parent_row * width..=parent_row * width + parent_row]);
        rest[row] = true;
    }
    for row in 1 + tree.len()..width {
        mask[row * width] = true;
        mask[row * width + row] = true;
    }
}
