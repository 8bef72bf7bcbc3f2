//! Validation of [`SpecParams`] and the per-match-length token budget.

use crate::{CacheError, SpecParams};

impl SpecParams {
    /// Checks ranges: factor and offset finite, factor >= 0, min_token_prob in [0, 1].
    pub fn validate(&self) -> Result<(), CacheError> {
        let invalid =
            |name, reason: &str| Err(CacheError::InvalidParameter { name, reason: reason.to_owned() });
        if !self.max_spec_factor.is_finite() || self.max_spec_factor < 0.0 {
            return invalid("max_spec_factor", "must be finite and >= 0");
        }
        if !self.max_spec_offset.is_finite() {
            return invalid("max_spec_offset", "must be finite");
        }
        if !(0.0..=1.0).contains(&self.min_token_prob) {
            return invalid("min_token_prob", "must be in [0, 1]");
        }
        Ok(())
    }

    /// Most draft tokens for a match of `match_len` context tokens:
    /// `min(max_spec_tokens, floor(match_len * factor + offset + 1e-6))`, clamped at 0.
    /// Non-decreasing in `match_len` (factor >= 0), which early stopping relies on.
    pub fn token_budget(&self, match_len: usize) -> usize {
        let limit = match_len as f64 * self.max_spec_factor + self.max_spec_offset + 1e-6;
        if limit < 0.0 {
            return 0;
        }
        // Truncation is the floor here (limit >= 0) and needs no libm call; `as` saturates.
        (limit as usize).min(self.max_spec_tokens)
    }
}
