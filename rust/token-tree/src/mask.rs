use crate::{TokenTree, ROOT};

/// The "self or ancestor" relation of a tree, bit-packed: bit `j` of row `i` is set iff node
/// `j` is node `i` or one of its ancestors. Rows are `words_per_row` little-endian `u64` words
/// (bit `j` lives in word `j / 64`, bit `j % 64`), stored row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorMask {
    len: usize,
    words_per_row: usize,
    bits: Vec<u64>,
}

impl AncestorMask {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    pub fn row(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words_per_row..(i + 1) * self.words_per_row]
    }

    /// Whether node `j` is node `i` or an ancestor of it.
    pub fn contains(&self, i: usize, j: usize) -> bool {
        self.row(i)[j / 64] >> (j % 64) & 1 == 1
    }

    /// The packed words, `len * words_per_row`, row-major.
    pub fn into_bits(self) -> Vec<u64> {
        self.bits
    }

    /// Row-major `len * len` booleans.
    pub fn to_bools(&self) -> Vec<bool> {
        let mut out = vec![false; self.len * self.len];
        for (i, row) in out.chunks_exact_mut(self.len.max(1)).enumerate().take(self.len) {
            // Ancestors precede their descendants, so only columns 0..=i can be set.
            for (j, cell) in row.iter_mut().enumerate().take(i + 1) {
                *cell = self.contains(i, j);
            }
        }
        out
    }
}

impl TokenTree {
    /// Builds the mask row by row from the parent's row (parents come first): O(N²/64).
    pub fn ancestor_mask(&self) -> AncestorMask {
        let len = self.len();
        let words_per_row = len.div_ceil(64);
        let mut bits = vec![0u64; len * words_per_row];
        for (i, &parent) in self.parents().iter().enumerate() {
            let (done, rest) = bits.split_at_mut(i * words_per_row);
            let row = &mut rest[..words_per_row];
            if parent != ROOT {
                let parent = parent as usize;
                // The parent's row has no bit beyond `parent`, so later words stay zero.
                let used = parent / 64 + 1;
                row[..used].copy_from_slice(&done[parent * words_per_row..parent * words_per_row + used]);
            }
            row[i / 64] |= 1u64 << (i % 64);
        }
        AncestorMask { len, words_per_row, bits }
    }
}
