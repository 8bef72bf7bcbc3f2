//! Drafting: choose the best match length, then grow a path or a tree below the match.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::tree::{Position, SuffixTree, NIL};
use crate::{Draft, SpecParams, TokenId};

/// Best draft over all match lengths (see [`SpecParams`]); `context` is already validated.
pub(crate) fn best_draft(tree: &SuffixTree, context: &[TokenId], params: &SpecParams) -> Draft {
    let usable = context.len().min(tree.max_depth());
    let context = &context[context.len() - usable..];
    let longest = longest_match(tree, context);
    let mut best = Draft::default();
    // Count of the previous (one longer) match and whether its draft was free of nodes at
    // max_depth: then an equal count means the same continuations with the same counts, so
    // this shorter match's draft would be a prefix of that one and cannot win.
    let mut previous: Option<(u32, bool)> = None;
    for match_len in (1..=longest).rev() {
        let budget = params.token_budget(match_len);
        // A draft of `budget` tokens scores at most `budget`; shorter matches have smaller
        // budgets and lose ties, so nothing below can win any more.
        if budget as f64 <= best.score {
            break;
        }
        // Every suffix of the longest match occurs, so edges need no token comparisons.
        let Some(pos) = tree.locate_known(&context[usable - match_len..]) else { break };
        let count = tree.node(pos.node).count;
        if previous == Some((count, true)) {
            continue;
        }
        let limit = tree.max_depth() as u32;
        let (draft, deepest) = if params.use_tree_spec {
            tree_draft(tree, pos, budget, params.min_token_prob)
        } else {
            path_draft(tree, pos, budget, params.min_token_prob)
        };
        previous = Some((count, deepest < limit));
        if !draft.token_ids.is_empty() && draft.score > best.score {
            best = Draft { match_len, ..draft };
        }
    }
    best
}

/// Longest suffix of `context` occurring in the tree. Occurrence is monotone in the length
/// (a suffix of an occurring string occurs too), so binary search needs O(log n) walks.
fn longest_match(tree: &SuffixTree, context: &[TokenId]) -> usize {
    let (mut lo, mut hi) = (0, context.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if tree.locate(&context[context.len() - mid..]).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// One step below a position: the child position, its token and its count.
#[derive(Debug, Clone, Copy)]
struct Step {
    pos: Position,
    token: TokenId,
    count: u32,
}

/// Inside an edge the only continuation is the next label token (same count).
fn edge_step(tree: &SuffixTree, pos: Position) -> Option<Step> {
    let node = tree.node(pos.node);
    (pos.depth < node.depth).then(|| Step {
        pos: Position { node: pos.node, depth: pos.depth + 1 },
        token: tree.label_token(pos.node, pos.depth),
        count: node.count,
    })
}

fn child_step(tree: &SuffixTree, child: u32) -> Step {
    let c = tree.node(child);
    let depth = tree.node(c.parent).depth + 1;
    Step { pos: Position { node: child, depth }, token: c.token, count: c.count }
}

#[inline]
fn child_prob(parent_prob: f64, child_count: u32, parent_count: u32) -> f64 {
    parent_prob * (f64::from(child_count) / f64::from(parent_count))
}

/// Greedy path: follow the most frequent continuation while it stays likely enough.
/// Returns the draft and the deepest tree depth it reached.
fn path_draft(tree: &SuffixTree, start: Position, budget: usize, min_prob: f64) -> (Draft, u32) {
    let mut draft = Draft::default();
    let (mut pos, mut count, mut prob) = (start, tree.node(start.node).count, 1.0);
    while draft.token_ids.len() < budget {
        let step = match edge_step(tree, pos) {
            Some(step) => step,
            None => match tree.node(pos.node).best_child {
                NIL => break,
                best => child_step(tree, best),
            },
        };
        let next_prob = child_prob(prob, step.count, count);
        if next_prob < min_prob {
            break;
        }
        draft.parents.push(draft.token_ids.len() as i32 - 1);
        draft.token_ids.push(step.token);
        draft.probs.push(next_prob);
        draft.score += next_prob;
        (pos, count, prob) = (step.pos, step.count, next_prob);
    }
    (draft, pos.depth)
}

/// Frontier entry of the best-first tree expansion: highest prob first, then first pushed.
#[derive(Debug)]
struct Candidate {
    prob: f64,
    order: u64,
    step: Step,
    parent: i32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prob.total_cmp(&other.prob).then_with(|| other.order.cmp(&self.order))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

/// Best-first token tree: repeatedly take the most likely frontier node. Returns the draft
/// and the deepest tree depth it reached.
fn tree_draft(tree: &SuffixTree, start: Position, budget: usize, min_prob: f64) -> (Draft, u32) {
    let mut draft = Draft::default();
    let mut deepest = start.depth;
    let mut frontier = BinaryHeap::new();
    let mut order = 0u64;
    let mut scratch = Vec::new();
    let mut expand = |frontier: &mut BinaryHeap<Candidate>, pos: Position, count: u32, prob: f64, parent: i32| {
        scratch.clear();
        if let Some(step) = edge_step(tree, pos) {
            scratch.push(step);
        } else {
            // The best child is the most likely one: if it misses the threshold, all do.
            let best = tree.node(pos.node).best_child;
            if best == NIL || child_prob(prob, tree.node(best).count, count) < min_prob {
                return;
            }
            scratch.extend(tree.children_of(pos.node).map(|c| child_step(tree, c)));
        }
        scratch.retain(|step| child_prob(prob, step.count, count) >= min_prob);
        scratch.sort_unstable_by_key(|step| step.token);
        for &step in &scratch {
            frontier.push(Candidate { prob: child_prob(prob, step.count, count), order, step, parent });
            order += 1;
        }
    };
    if budget > 0 {
        expand(&mut frontier, start, tree.node(start.node).count, 1.0, -1);
    }
    while draft.token_ids.len() < budget {
        let Some(Candidate { prob, step, parent, .. }) = frontier.pop() else { break };
        let index = draft.token_ids.len() as i32;
        draft.parents.push(parent);
        draft.token_ids.push(step.token);
        draft.probs.push(prob);
        draft.score += prob;
        deepest = deepest.max(step.pos.depth);
        if draft.token_ids.len() < budget {
            expand(&mut frontier, step.pos, step.count, prob, index);
        }
    }
    (draft, deepest)
}
