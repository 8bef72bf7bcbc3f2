//! The step-cost model: the wall time of one engine step as a function of the tokens it
//! feeds, piecewise linear through measured (or supplied) points. The Python engine times its
//! own steps and refits the model as it runs, unless the caller supplies the points (tests
//! inject a fixed model); selection uses the model to pick the verify budget that maximises
//! expected tokens per second.
use crate::error::{invalid, SchedulerError};

#[derive(Debug, Clone, PartialEq)]
pub struct StepCostModel {
    /// `(tokens, seconds)`, tokens strictly increasing.
    points: Vec<(f64, f64)>,
}

impl StepCostModel {
    /// Through `points` (`(tokens in the step, seconds)`, any order, distinct token counts,
    /// finite non-negative values). One point gives a constant cost; outside the measured
    /// range the nearest segment is extended (never below zero).
    pub fn piecewise(points: &[(u32, f64)]) -> Result<Self, SchedulerError> {
        if points.is_empty() {
            return Err(invalid("cost_points", "at least one (tokens, seconds) point is needed"));
        }
        if let Some((_, t)) = points.iter().find(|(_, t)| !(t.is_finite() && *t >= 0.0)) {
            return Err(invalid("cost_points", format!("step times must be finite and >= 0, got {t}")));
        }
        let mut sorted: Vec<(f64, f64)> = points.iter().map(|&(n, t)| (f64::from(n), t)).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(invalid("cost_points", "token counts must be distinct"));
        }
        Ok(Self { points: sorted })
    }

    /// `fixed + per_token * tokens`.
    pub fn linear(fixed: f64, per_token: f64) -> Result<Self, SchedulerError> {
        if !(fixed.is_finite() && per_token.is_finite() && fixed >= 0.0 && per_token >= 0.0) {
            return Err(invalid("cost_points", "fixed and per-token costs must be finite and >= 0"));
        }
        Ok(Self { points: vec![(0.0, fixed), (1.0, fixed + per_token)] })
    }

    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// Estimated seconds of a step feeding `tokens` tokens.
    pub fn step_time(&self, tokens: usize) -> f64 {
        let x = tokens as f64;
        let p = &self.points;
        if p.len() == 1 {
            return p[0].1;
        }
        // The segment containing x, or the first / last one when x is outside.
        let i = p.partition_point(|&(n, _)| n <= x).clamp(1, p.len() - 1);
        let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
        (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).max(0.0)
    }
}

impl Default for StepCostModel {
    /// A placeholder until the engine has measured its steps: 10 ms plus 0.1 ms per token.
    fn default() -> Self {
        Self { points: vec![(0.0, 0.010), (1.0, 0.0101)] }
    }
}

/// How many of `gains` (the expected extra tokens of each picked node, in pick order) to keep
/// so that `(base_gain + kept gains) / step_time(base_tokens + kept)` is largest; never fewer
/// than `min_keep` (the nodes that SLO targets need). Ties keep fewer nodes.
pub fn best_budget(
    model: &StepCostModel,
    base_tokens: usize,
    base_gain: f64,
    gains: &[f64],
    min_keep: usize,
) -> usize {
    let min_keep = min_keep.min(gains.len());
    let mut gain = base_gain + gains[..min_keep].iter().sum::<f64>();
    let rate = |gain: f64, kept: usize| {
        let time = model.step_time(base_tokens + kept);
        if time > 0.0 {
            gain / time
        } else {
            f64::INFINITY
        }
    };
    let (mut best, mut best_rate) = (min_keep, rate(gain, min_keep));
    for (i, g) in gains.iter().enumerate().skip(min_keep) {
        gain += g;
        let r = rate(gain, i + 1);
        if r > best_rate {
            (best, best_rate) = (i + 1, r);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_extends() {
        let m = StepCostModel::piecewise(&[(64, 0.02), (1, 0.01), (256, 0.05)]).unwrap();
        assert!((m.step_time(1) - 0.01).abs() < 1e-12);
        assert!((m.step_time(160) - 0.035).abs() < 1e-12);
        assert!((m.step_time(512) - 0.09).abs() < 1e-12);
        assert!((m.step_time(0) - (0.01 - 0.01 / 63.0)).abs() < 1e-12);
        assert!(StepCostModel::piecewise(&[]).is_err());
        assert!(StepCostModel::piecewise(&[(1, 0.1), (1, 0.2)]).is_err());
        assert!(StepCostModel::piecewise(&[(1, f64::NAN)]).is_err());
    }

    #[test]
    fn budget_stops_where_marginal_gain_drops_below_the_rate() {
        // 10 ms + 1 ms per token; base step of 4 tokens, 4 bonus tokens.
        let m = StepCostModel::linear(0.010, 0.001).unwrap();
        let gains = [0.9, 0.8, 0.5, 0.2, 0.1, 0.01];
        let b = best_budget(&m, 4, 4.0, &gains, 0);
        // Rate at b: (4 + sum)/ (14 + b) ms. Keeping a node helps while its gain exceeds the rate per ms.
        let rate = |k: usize| (4.0 + gains[..k].iter().sum::<f64>()) / (0.014 + 0.001 * k as f64);
        assert!((0..=gains.len()).all(|k| rate(k) <= rate(b) + 1e-9));
        assert_eq!(best_budget(&m, 4, 4.0, &gains, 6), 6);
    }
}
