//! Which draft-tree nodes each decoding request verifies this step, one call for the whole
//! batch: AdaServe's SLO-customized selection and the baselines.
//!
//! A draft tree comes in parents-first order (`parents[i]` is `-1` for a child of the root,
//! else an earlier node) with each node's path probability (the suffix cache's estimate that
//! the target accepts the path up to it). Nodes are ranked by *value*: the path-min
//! probability (the smallest probability from the root's child down to the node), which is
//! the probability itself for path probabilities. Values never grow along a path and a parent
//! has a smaller index than its children, so in the order "larger value first, then earlier
//! request, then earlier node" every parent precedes its children: taking nodes in that order
//! (per request or globally) is exactly the greedy frontier walk, every chosen set is
//! parent-closed, and so is every prefix of the pick order (which lets the step-cost model
//! cut it anywhere).

/// How a step spends its verify budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Plain decoding: no tree nodes.
    NoSpeculation,
    /// `draft_tokens` nodes per decoding request (the most probable, parent-closed), in
    /// scheduling order while the verify budget lasts (vLLM-style uniform speculation).
    Uniform { draft_tokens: u32 },
    /// The globally most probable nodes of all trees, ignoring SLOs (SpecInfer-style).
    ProbabilityGreedy,
    /// AdaServe: first each SLO request's required expected accepted tokens, most urgent
    /// first; then the globally most probable nodes.
    #[default]
    AdaServe,
}

impl Policy {
    /// Whether the step-cost model may cut the verify budget (the probability-driven policies).
    pub fn uses_cost_model(self) -> bool {
        matches!(self, Policy::ProbabilityGreedy | Policy::AdaServe)
    }
}

/// One decoding request's tree as selection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub parents: &'a [i32],
    pub probs: &'a [f64],
    /// AdaServe's required expected accepted tokens this step (see [`required_tokens`];
    /// capped at the tree's depth + 1 here); `None` for a best-effort request.
    pub required: Option<f64>,
    /// The most nodes this request may take (its context-length limit).
    pub max_nodes: u32,
}

/// One chosen node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub request: u32,
    pub node: u32,
    pub prob: f64,
}

/// The chosen nodes in pick order; the first `slo_picks` serve SLO targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Picks {
    pub order: Vec<Pick>,
    pub slo_picks: usize,
}

/// Chosen subtrees in compressed rows: request `r`'s nodes (ascending draft indices) are
/// `nodes[offsets[r]..offsets[r + 1]]`, and `parents` gives each one's parent as a position in
/// that same row (`-1` = root): a ready-to-verify tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChosenTrees {
    pub offsets: Vec<usize>,
    pub nodes: Vec<u32>,
    pub parents: Vec<i32>,
}

impl ChosenTrees {
    pub fn len_of(&self, request: usize) -> usize {
        self.offsets[request + 1] - self.offsets[request]
    }
    pub fn nodes_of(&self, request: usize) -> &[u32] {
        &self.nodes[self.offsets[request]..self.offsets[request + 1]]
    }
    pub fn parents_of(&self, request: usize) -> &[i32] {
        &self.parents[self.offsets[request]..self.offsets[request + 1]]
    }
}

/// Checks a draft tree: equal lengths, parents-first order, probabilities finite in `[0, 1]`.
pub fn validate_tree(parents: &[i32], probs: &[f64]) -> Result<(), String> {
    if parents.len() != probs.len() {
        return Err(format!("{} parents but {} probabilities", parents.len(), probs.len()));
    }
    // One comparison per parent: `parent + 1` must be in `0..=i` (as u32, -2 and below wrap high).
    let parents_ok =
        parents.iter().enumerate().fold(true, |ok, (i, &p)| ok & ((p.wrapping_add(1) as u32 as usize) <= i));
    if !parents_ok {
        let i =
            parents.iter().enumerate().position(|(i, &p)| p.wrapping_add(1) as u32 as usize > i).unwrap_or(0);
        return Err(format!("node {i} has parent {}: parents must be -1 or an earlier node", parents[i]));
    }
    // `contains` is false for NaN and infinities.
    if !probs.iter().fold(true, |ok, p| ok & (0.0..=1.0).contains(p)) {
        let i = probs.iter().position(|p| !(0.0..=1.0).contains(p)).unwrap_or(0);
        return Err(format!("node {i} has probability {}: must be finite and in [0, 1]", probs[i]));
    }
    Ok(())
}

/// AdaServe's required expected accepted tokens this step for a request with TPOT target
/// `tpot` (seconds per token): `A = (now - first_token_at + step_time) / tpot - emitted`, where
/// `emitted` counts the output tokens after the first one (TTFT is not part of TPOT).
/// [`select`] caps it at the tree's depth + 1.
pub fn required_tokens(now: f64, first_token_at: f64, step_time: f64, tpot: f64, emitted: u32) -> f64 {
    (now - first_token_at + step_time) / tpot - f64::from(emitted)
}

/// Sort keys of nodes: ascending order = larger value first, then the earlier request, then
/// the earlier node; packed in a u64 (half the memory traffic of wider keys when sorting).
/// The value part is the value as an f32 (values are in [0, 1]: 30 bits, and float bits of
/// non-negative numbers order like the numbers), shortened only if the request and node
/// fields need more than 34 bits. Rounding can only tie values, never invert them, so parents
/// (value >= their children's, smaller index) still come first.
#[derive(Debug, Clone, Copy, Default)]
struct KeyCodec {
    node_bits: u32,
    request_bits: u32,
    value_bits: u32,
}

/// Bits that hold `0..n`.
fn bits_for(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

impl KeyCodec {
    fn new(requests: usize, max_nodes: usize) -> Self {
        let (request_bits, node_bits) = (bits_for(requests), bits_for(max_nodes));
        Self { node_bits, request_bits, value_bits: 64u32.saturating_sub(request_bits + node_bits).min(30) }
    }

    fn key(self, value: f64, request: usize, node: usize) -> u64 {
        let index = ((request as u64) << self.node_bits) | node as u64;
        if self.value_bits == 0 {
            return index;
        }
        // At most 0x3F80_0000 for 1.0: fits 30 bits.
        let code = u64::from((value as f32).to_bits()) >> (30 - self.value_bits);
        let inverted = !code & ((1u64 << self.value_bits) - 1);
        (inverted << (self.request_bits + self.node_bits)) | index
    }

    fn parts(self, key: u64) -> (usize, u32) {
        let node = key & ((1u64 << self.node_bits) - 1);
        let request = (key >> self.node_bits) & ((1u64 << self.request_bits) - 1);
        (request as usize, node as u32)
    }
}

/// Each node's value, flat over all candidates (request `r` owns `base[r]..base[r + 1]`).
#[derive(Debug, Clone, Default)]
struct Values {
    base: Vec<usize>,
    value: Vec<f64>,
    codec: KeyCodec,
}

/// Clears `v` and fills it with `n` copies of `x`, keeping its allocation.
fn refill<T: Clone>(v: &mut Vec<T>, n: usize, x: T) {
    v.clear();
    v.resize(n, x);
}

impl Values {
    /// Values of every node; with `keys`, also the keys of every positive-value node.
    fn rebuild(&mut self, candidates: &[Candidate<'_>], mut keys: Option<&mut Vec<u64>>) {
        self.base.clear();
        self.base.push(0);
        for c in candidates {
            self.base.push(self.base.last().copied().unwrap_or(0) + c.parents.len());
        }
        let largest = candidates.iter().map(|c| c.parents.len()).max().unwrap_or(0);
        self.codec = KeyCodec::new(candidates.len(), largest);
        let codec = self.codec;
        refill(&mut self.value, self.base.last().copied().unwrap_or(0), 0.0);
        if let Some(keys) = keys.as_deref_mut() {
            keys.clear();
        }
        for (r, c) in candidates.iter().enumerate() {
            let values = &mut self.value[self.base[r]..self.base[r + 1]];
            for i in 0..values.len() {
                // `> 0.0` also maps -0.0 to +0.0, which keeps the bit order of `key` right.
                let prob = if c.probs[i] > 0.0 { c.probs[i] } else { 0.0 };
                let p = c.parents[i];
                values[i] = if p >= 0 && values[p as usize] < prob { values[p as usize] } else { prob };
            }
            if let Some(keys) = keys.as_deref_mut() {
                let positive = values.iter().enumerate().filter(|(_, &v)| v > 0.0);
                keys.extend(positive.map(|(node, &v)| codec.key(v, r, node)));
            }
        }
    }

    fn of(&self, r: usize) -> &[f64] {
        &self.value[self.base[r]..self.base[r + 1]]
    }

    /// The `k` first keys (in taking order) of request `r`'s nodes, skipping zero values when
    /// `skip_zero`, sorted, in `out` (partial selection: linear in the tree size).
    fn top_keys(&self, r: usize, k: usize, skip_zero: bool, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            self.of(r)
                .iter()
                .enumerate()
                .filter(|(_, &v)| !(skip_zero && v <= 0.0))
                .map(|(node, &v)| self.codec.key(v, r, node)),
        );
        if k == 0 {
            out.clear();
        } else if k < out.len() {
            out.select_nth_unstable(k - 1);
            out.truncate(k);
        }
        out.sort_unstable();
    }
}

/// Depth of the deepest node of a parents-first tree.
pub(crate) fn max_depth(parents: &[i32], scratch: &mut Vec<u32>) -> u32 {
    scratch.clear();
    for &p in parents {
        let depth = if p < 0 { 1 } else { scratch[p as usize] + 1 };
        scratch.push(depth);
    }
    scratch.iter().copied().max().unwrap_or(0)
}

/// The picks so far and each request's limits.
struct Picker<'a, 'c> {
    candidates: &'c [Candidate<'c>],
    admit: &'a mut dyn FnMut(usize) -> bool,
    picks: Picks,
    taken: &'a mut Vec<u32>,
    blocked: &'a mut Vec<bool>,
}

impl Picker<'_, '_> {
    /// Picks node `node` of request `r` if its limits allow; false once `r` can take no more.
    fn take(&mut self, r: usize, node: u32, value: f64) -> bool {
        if self.blocked[r] || self.taken[r] >= self.candidates[r].max_nodes || !(self.admit)(r) {
            self.blocked[r] = true;
            return false;
        }
        self.taken[r] += 1;
        self.picks.order.push(Pick { request: r as u32, node, prob: value });
        true
    }
}

/// Scratch buffers of [`select`], kept between steps so that a step allocates (and
/// page-faults) nothing large.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    values: Values,
    taken: Vec<u32>,
    blocked: Vec<bool>,
    chosen: Vec<bool>,
    keys: Vec<u64>,
    local: Vec<u64>,
    depths: Vec<u32>,
}

/// [`Selector::select`] with fresh buffers.
pub fn select(
    policy: Policy,
    candidates: &[Candidate<'_>],
    budget: usize,
    admit: &mut dyn FnMut(usize) -> bool,
) -> Picks {
    Selector::default().select(policy, candidates, budget, admit)
}

impl Selector {
    /// Picks nodes for `candidates` (in scheduling order: earlier wins ties) under `budget` nodes.
    /// `admit(r)` is asked before each pick for request `r` (KV slots); once it says no, the
    /// request takes no more nodes. Nodes are ranked by value (path-min probability, see the
    /// module docs); probability-driven policies never pick zero-value nodes. `Pick::prob` is the
    /// node's value: its expected contribution to the accepted tokens.
    pub fn select(
        &mut self,
        policy: Policy,
        candidates: &[Candidate<'_>],
        budget: usize,
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Picks {
        if budget == 0 || candidates.is_empty() || policy == Policy::NoSpeculation {
            return Picks::default();
        }
        let Self { values, taken, blocked, chosen, keys, local, depths } = self;
        let uniform = matches!(policy, Policy::Uniform { .. });
        values.rebuild(candidates, if uniform { None } else { Some(keys) });
        refill(taken, candidates.len(), 0);
        refill(blocked, candidates.len(), false);
        let mut picker = Picker { candidates, admit, picks: Picks::default(), taken, blocked };

        if let Policy::Uniform { draft_tokens } = policy {
            for r in 0..candidates.len() {
                values.top_keys(r, draft_tokens as usize, false, local);
                for &k in local.iter() {
                    let node = values.codec.parts(k).1;
                    if picker.picks.order.len() >= budget
                        || !picker.take(r, node, values.of(r)[node as usize])
                    {
                        break;
                    }
                }
            }
            return picker.picks;
        }

        refill(chosen, values.value.len(), false);
        if policy == Policy::AdaServe {
            let mut urgent: Vec<(usize, f64)> = Vec::new();
            for (r, c) in candidates.iter().enumerate() {
                let Some(required) = c.required else { continue };
                if required <= 1.0 {
                    continue; // the bonus token alone meets it
                }
                let required = required.min(f64::from(max_depth(c.parents, depths)) + 1.0);
                // Infeasible targets get no SLO nodes: they would only take budget from others.
                if required > 1.0 && 1.0 + values.of(r).iter().sum::<f64>() >= required {
                    urgent.push((r, required));
                }
            }
            // Most urgent (largest requirement) first; the stable sort keeps scheduling order on ties.
            urgent.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (r, required) in urgent {
                // Each node adds at most 1: about `required` nodes usually suffice; if not, all.
                let guess = 2 * required.ceil() as usize + 2;
                let mut expected = 1.0;
                let mut used = 0;
                for k in [guess, usize::MAX] {
                    values.top_keys(r, k, true, local);
                    for &key in &local[used..] {
                        if expected >= required || picker.picks.order.len() >= budget {
                            break;
                        }
                        let node = values.codec.parts(key).1;
                        let value = values.of(r)[node as usize];
                        if !picker.take(r, node, value) {
                            break;
                        }
                        chosen[values.base[r] + node as usize] = true;
                        expected += value;
                        used += 1;
                    }
                    if expected >= required || used < local.len() || picker.picks.order.len() >= budget {
                        break;
                    }
                }
            }
            picker.picks.slo_picks = picker.picks.order.len();
        }

        // Throughput: the most valuable remaining nodes of all trees, in key order (parents
        // first); a request that stops taking nodes stops for its subtrees too. Only the top
        // keys are sorted (partial selection), in rounds in case blocked requests skip some.
        let mut rest: &mut [u64] = keys;
        // `keys` holds every positive node, the SLO picks among them (skipped below).
        while picker.picks.order.len() < budget && !rest.is_empty() {
            let want = (budget - picker.picks.order.len() + picker.picks.slo_picks).min(rest.len());
            if want < rest.len() {
                rest.select_nth_unstable(want - 1);
            }
            let (head, tail) = rest.split_at_mut(want);
            head.sort_unstable();
            for &k in head.iter() {
                if picker.picks.order.len() >= budget {
                    break;
                }
                let (r, node) = values.codec.parts(k);
                if !picker.blocked[r] && !chosen[values.base[r] + node as usize] {
                    picker.take(r, node, values.of(r)[node as usize]);
                }
            }
            rest = tail;
        }
        picker.picks
    }
}

impl Picks {
    /// The subtrees of the first `keep` picks (a parent-closed prefix), one row per candidate.
    pub fn trees(&self, candidates: &[Candidate<'_>], keep: usize) -> ChosenTrees {
        let kept = &self.order[..keep.min(self.order.len())];
        let mut offsets = vec![0usize; candidates.len() + 1];
        for p in kept {
            offsets[p.request as usize + 1] += 1;
        }
        for r in 0..candidates.len() {
            offsets[r + 1] += offsets[r];
        }
        let mut nodes = vec![0u32; kept.len()];
        let mut fill = offsets.clone();
        for p in kept {
            nodes[fill[p.request as usize]] = p.node;
            fill[p.request as usize] += 1;
        }
        let mut parents = vec![-1i32; kept.len()];
        let mut position: Vec<i32> = Vec::new();
        for (r, c) in candidates.iter().enumerate() {
            let row = offsets[r]..offsets[r + 1];
            if row.is_empty() {
                continue;
            }
            nodes[row.clone()].sort_unstable();
            position.clear();
            position.resize(c.parents.len(), -1);
            for (k, i) in row.enumerate() {
                let node = nodes[i] as usize;
                position[node] = k as i32;
                let parent = c.parents[node];
                // Parent-closed and ascending: a non-root parent already has its position.
                parents[i] = if parent < 0 { -1 } else { position[parent as usize] };
            }
        }
        ChosenTrees { offsets, nodes, parents }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(probs: &[f64]) -> Vec<i32> {
        (0..probs.len() as i32).map(|i| i - 1).collect()
    }

    #[test]
    fn adaserve_meets_the_urgent_target_before_throughput() {
        // Request 0: best effort, very probable chain. Request 1: needs 2.5 expected tokens.
        let (p0, p1) = ([0.99, 0.98, 0.97, 0.96], [0.8, 0.6, 0.4, 0.2]);
        let (a0, a1) = (chain(&p0), chain(&p1));
        let cands = [
            Candidate { parents: &a0, probs: &p0, required: None, max_nodes: 64 },
            Candidate { parents: &a1, probs: &p1, required: Some(2.5), max_nodes: 64 },
        ];
        let picks = select(Policy::AdaServe, &cands, 4, &mut |_| true);
        assert_eq!(picks.slo_picks, 3);
        let trees = picks.trees(&cands, 4);
        assert_eq!(trees.nodes_of(1), &[0, 1, 2]);
        assert_eq!(trees.parents_of(1), &[-1, 0, 1]);
        assert_eq!(trees.nodes_of(0), &[0]);
        // Probability-greedy spends everything on request 0 instead.
        let greedy = select(Policy::ProbabilityGreedy, &cands, 4, &mut |_| true).trees(&cands, 4);
        assert_eq!(greedy.nodes_of(0), &[0, 1, 2, 3]);
        assert_eq!(greedy.len_of(1), 0);
    }

    #[test]
    fn uniform_and_none() {
        let probs = [0.5, 0.9, 0.4, 0.3];
        let parents = [-1, -1, 1, 2];
        let c = Candidate { parents: &parents, probs: &probs, required: None, max_nodes: 64 };
        let cands = [c, c];
        let picks = select(Policy::Uniform { draft_tokens: 2 }, &cands, 3, &mut |_| true);
        let trees = picks.trees(&cands, 3);
        // 0.9 first, then the better of its child (0.4) and the other root child (0.5).
        assert_eq!(trees.nodes_of(0), &[0, 1]);
        assert_eq!(trees.parents_of(0), &[-1, -1]);
        assert_eq!(trees.nodes_of(1), &[1]);
        assert!(select(Policy::NoSpeculation, &cands, 10, &mut |_| true).order.is_empty());
    }

    #[test]
    fn admit_and_max_nodes_limit_a_request() {
        let probs = [0.9, 0.8, 0.7];
        let parents = [-1, 0, 1];
        let cands = [
            Candidate { parents: &parents, probs: &probs, required: None, max_nodes: 1 },
            Candidate { parents: &parents, probs: &probs, required: None, max_nodes: 3 },
        ];
        let mut calls = 0;
        let picks = select(Policy::ProbabilityGreedy, &cands, 10, &mut |r| {
            calls += 1;
            r == 0 || calls < 3
        });
        let trees = picks.trees(&cands, picks.order.len());
        assert_eq!(trees.len_of(0), 1);
        assert_eq!(trees.len_of(1), 1);
    }

    #[test]
    fn validates_trees_and_computes_requirements() {
        assert_eq!(validate_tree(&[-1, 0, 0, 2], &[1.0; 4]), Ok(()));
        assert!(validate_tree(&[0], &[1.0]).is_err());
        assert!(validate_tree(&[-1], &[1.5]).is_err());
        assert!(validate_tree(&[-1], &[]).is_err());
        // 0.1 s since the first token, 0.02 s step, 0.03 s per token, 2 emitted: 4 - 2 = 2.
        assert!((required_tokens(1.1, 1.0, 0.02, 0.03, 2) - 2.0).abs() < 1e-9);
    }
}
