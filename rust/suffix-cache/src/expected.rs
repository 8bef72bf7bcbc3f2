//! suffixspec's own drafter ([`Drafter::Suffixspec`](crate::Drafter::Suffixspec)): drafts
//! sized and chosen by their expected accepted tokens per verified token.
//!
//! arctic scores a draft by the sum of its nodes' continuation frequencies and caps its length
//! at `max_spec_factor` tokens per matched token. Two estimates lose tokens on repetitive
//! (agentic) text, and are replaced here:
//!
//! * The request's own sequence ends with the context, so every suffix of the context occurs
//!   there once more, with no continuation yet: a span seen once before gets frequency 1/2 in
//!   the prompt tree (and 1 in the global tree, where the rest of the context may not be), so
//!   the prompt tree loses ties it should win. Here that occurrence is left out.
//! * A frequency of `c` out of `n` occurrences is trusted the more, the more occurrences back
//!   it and the longer the match they follow: each step below the match is estimated as
//!   `c / (n + EVIDENCE_PRIOR * (1 + DEPTH_DOUBT * j) / m)` for a match of `m` tokens, `j`
//!   tokens below it (a prior pseudo-occurrence that continues differently, worth less after
//!   a longer match and more the further the draft has gone from it: a text that followed an
//!   earlier one for a while is ever more likely to part from it). A continuation seen once
//!   after a 3-token match then decays fast (0.67, then 0.59 per token), one seen once after a
//!   30-token match slowly (0.95, then 0.93), and one seen 50 times hardly at all. The global
//!   tree's continuations get half that prior ([`SHARED_EVIDENCE_PRIOR`]): they are the
//!   model's own earlier outputs, which it repeats more faithfully than the prompt's text
//!   (tool output, files, user turns) that the prompt tree holds. A node is worth verifying
//!   while its estimate exceeds [`NODE_COST`] ([`TREE_NODE_COST`] in a tree), so copies draft
//!   long (up to `max_spec_tokens`) and guesses draft little, whatever `max_spec_factor` says.
//! * Counts treat every earlier occurrence alike, but agents copy the latest version of what
//!   they re-read (a file after an edit, the latest form of a tool call). Where a node
//!   branches, the child holding the most recent occurrence (the tree's recency stamps,
//!   `crate::tree::recency`) counts as if it had [`RECENCY_WEIGHT`] times the parent's
//!   occurrences more, out of as many more occurrences: the newest continuation wins against
//!   a few older ones, and when it is also the most frequent one its estimate rises.
//! * Agents copy names, paths and values from what they just read, which the global tree of
//!   earlier responses knows nothing of. Where a node of the global tree branches, the child
//!   whose token is the one that last followed the draft's previous token in the request's
//!   own tokens (its prompt tree's recency stamps: that pair ended at most
//!   [`CONTEXT_WINDOW`] tokens ago) counts [`CONTEXT_WEIGHT`] times the node's occurrences
//!   more, out of as many more, as the newest child does. At the global tree's branching
//!   nodes of the agentic traces the true child had followed the previous token within the
//!   last 1024 tokens 3.2-3.4 times as often as the others (`benches/README.md`), also when
//!   it is rarer and older there, where counts and recency miss it. The prompt tree gets no
//!   such bonus: there the recent follower is mostly its newest child already (both together
//!   measured +0.1% more tokens, and overturned clear majorities within a prompt).
//!
//! Among match lengths (and the two trees of a request) the draft with the highest gain, the
//! sum over its nodes of estimate minus node cost, wins; ties go to the longer match and to the
//! prompt tree. The constants were tuned on half of the sessions of each shared trace (one
//! value for all traces) and reported on the other half (`benches/README.md`), under two
//! bounds on the train halves: drafts within 1.1x arctic's drafted tokens per step on the
//! agentic traces, and tokens per step at least arctic's on every trace.

use std::collections::BinaryHeap;

use crate::speculate::{child_step, edge_step, Ranked, Step, Suffixes};
use crate::tree::{Position, SuffixTree, NIL};
use crate::{Draft, SpecParams, TokenId};

/// Acceptance probability below which a draft node costs more to verify than it brings: the
/// price of one verified node, in accepted tokens.
pub(crate) const NODE_COST: f64 = 0.2525;

/// The same for the nodes of a draft tree. Tree drafts add sibling nodes, of which at most one
/// per depth can be accepted, so at the path cost they draft more nodes for the accepted tokens
/// they add than paths do: tuned separately (on the train halves, under the same bounds: at
/// most 1.1x arctic's drafted nodes on the agentic traces, at least its tokens per step on
/// every trace).
pub(crate) const TREE_NODE_COST: f64 = 0.2725;

/// The node cost of a path (`tree_spec` false) or tree draft.
#[inline]
pub(crate) fn node_cost(tree_spec: bool) -> f64 {
    if tree_spec {
        TREE_NODE_COST
    } else {
        NODE_COST
    }
}

/// Weight of the prior "continues differently" occurrence, per matched token, in a request's
/// prompt tree (and in a standalone tree).
const EVIDENCE_PRIOR: f64 = 1.5;

/// The same in the global tree of earlier responses (see the module docs).
const SHARED_EVIDENCE_PRIOR: f64 = 0.75;

/// Growth of the prior per draft token below the match (see the module docs): it keeps long
/// drafts after long matches from costing more than they bring, while short drafts keep their
/// estimates.
const DEPTH_DOUBT: f64 = 0.4;

/// Extra occurrences the newest child of a branching node counts, per occurrence of the node
/// (see the module docs): tuned on the train halves with the node costs, under the same bounds.
const RECENCY_WEIGHT: f64 = 0.2;

/// Extra occurrences the child that follows the draft's previous token in the request's recent
/// tokens counts, per occurrence of the node (see the module docs).
const CONTEXT_WEIGHT: f64 = 0.5;

/// How recent (in the request's tokens) the occurrence of the previous token and its follower
/// must be for [`CONTEXT_WEIGHT`].
const CONTEXT_WINDOW: u32 = 1024;

/// Where a draft comes from: how many context tokens end the tree's own sequence
/// (`own_suffix`, 0 when none: suffixes that long or shorter occur there without
/// continuation), whether the tree is the global tree of earlier responses (`shared`), the tree
/// of the request's own recent tokens when drafting from the global tree (`recent`) and the
/// context's last token (`last`).
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) own_suffix: usize,
    pub(crate) shared: bool,
    pub(crate) recent: Option<&'a SuffixTree>,
    pub(crate) last: Option<TokenId>,
}

/// The token that last followed `previous` in `recent` (see the module docs), if that
/// occurrence ended within [`CONTEXT_WINDOW`] tokens of its clock.
#[inline]
fn recent_follower(recent: &SuffixTree, previous: TokenId) -> Option<TokenId> {
    let pos = recent.locate(&[previous])?;
    let (token, start) = match edge_step(recent, pos) {
        Some(step) => (step.token, recent.node(pos.node).recent),
        None => {
            let child = newest_child(recent, pos.node);
            if child == NIL {
                return None;
            }
            let c = recent.node(child);
            (c.token, c.recent)
        }
    };
    // The pair ends 2 tokens after its start; stamps lie before the clock.
    let age = recent.clock().saturating_sub(start.saturating_add(2));
    (age <= CONTEXT_WINDOW).then_some(token)
}

/// The child of branching `node` that the recent tokens point to (NIL when none).
#[inline]
fn context_child(
    tree: &SuffixTree,
    node: u32,
    recent: Option<&SuffixTree>,
    previous: Option<TokenId>,
) -> u32 {
    match (recent, previous) {
        (Some(recent), Some(previous)) => {
            recent_follower(recent, previous).map_or(NIL, |token| tree.child(node, token))
        }
        _ => NIL,
    }
}

/// The bonuses at a branching node (see the module docs): which child gets the recency bonus
/// (`newest`) and which the context bonus (`from_context`; NIL: none), and the occurrences
/// each adds. One value for the path walk and the tree expansion, so both estimate alike.
#[derive(Clone, Copy)]
struct Bonuses {
    newest: u32,
    recency: f64,
    from_context: u32,
    context: f64,
}

impl Bonuses {
    /// No bonus: inside an edge or below an only child.
    const NONE: Self = Self { newest: NIL, recency: 0.0, from_context: NIL, context: 0.0 };

    /// At branching `node` with `count` occurrences; `previous` is the token before it (for
    /// the context bonus, read in `recent`).
    #[inline]
    fn at(
        tree: &SuffixTree,
        node: u32,
        count: u32,
        recent: Option<&SuffixTree>,
        previous: Option<TokenId>,
    ) -> Self {
        let newest = newest_child(tree, node);
        let from_context = context_child(tree, node, recent, previous);
        Self {
            newest,
            recency: if newest == NIL { 0.0 } else { RECENCY_WEIGHT * f64::from(count) },
            from_context,
            context: if from_context == NIL { 0.0 } else { CONTEXT_WEIGHT * f64::from(count) },
        }
    }

    /// `child`'s occurrences (`count`) with its bonuses.
    #[inline]
    fn child(&self, child: u32, count: u32) -> f64 {
        f64::from(count)
            + if child == self.newest { self.recency } else { 0.0 }
            + if child == self.from_context { self.context } else { 0.0 }
    }

    /// The node's occurrences (`count`) with the bonuses its children got.
    #[inline]
    fn parent(&self, count: u32) -> f64 {
        f64::from(count) + self.recency + self.context
    }
}

/// Estimated probability of a step that `child` of the `parent` occurrences took, `below`
/// tokens under a match whose prior weight is `doubt` (the evidence prior over the match
/// length); both counts include the recency and context bonuses.
#[inline]
fn step_estimate(child: f64, parent: f64, doubt: f64, below: usize) -> f64 {
    child / (parent + doubt * (1.0 + DEPTH_DOUBT * below as f64))
}

/// The child of `node` holding its most recent occurrence (NIL when it has none; the tree
/// keeps it, see `crate::tree::recency`).
#[inline]
fn newest_child(tree: &SuffixTree, node: u32) -> u32 {
    tree.node(node).newest_child
}

/// The continuation a path follows from `pos` (`count` occurrences), with its count and its
/// parent's, both with the recency and context bonuses: inside an edge or below an only child
/// the one continuation; at a branching node the child with the highest count after the
/// bonuses (ties to the smallest token); `previous` is the token before `pos` (for the
/// context bonus, read in `recent`).
#[inline]
fn path_step(
    tree: &SuffixTree,
    pos: Position,
    count: u32,
    recent: Option<&SuffixTree>,
    previous: Option<TokenId>,
) -> Option<(Step, f64, f64)> {
    if let Some(step) = edge_step(tree, pos) {
        return Some((step, f64::from(step.count), f64::from(count)));
    }
    let node = tree.node(pos.node);
    let best = node.best_child;
    if best == NIL {
        return None;
    }
    if node.first_child == best && tree.node(best).next_sib == NIL {
        let step = child_step(tree, best);
        return Some((step, f64::from(step.count), f64::from(count)));
    }
    let bonuses = Bonuses::at(tree, pos.node, count, recent, previous);
    let boosted = |child: u32| bonuses.child(child, tree.node(child).count);
    let mut chosen = (best, boosted(best));
    for child in [bonuses.newest, bonuses.from_context] {
        if child == NIL || child == chosen.0 {
            continue;
        }
        let score = boosted(child);
        if score > chosen.1 || (score == chosen.1 && tree.node(child).token < tree.node(chosen.0).token) {
            chosen = (child, score);
        }
    }
    Some((child_step(tree, chosen.0), chosen.1, bonuses.parent(count)))
}

/// What a draft brings net of its verification cost (comparable across trees).
pub(crate) fn gain(draft: &Draft, tree_spec: bool) -> f64 {
    draft.score - node_cost(tree_spec) * draft.token_ids.len() as f64
}

/// A range of match lengths sharing their occurrences: drafts start at `start` (the shortest
/// length, which leaves the most depth), `doubt` is the prior weight of its estimates (from the
/// longest length of the range), `base` the occurrences that can continue, `nodes` the most
/// nodes and `depth` the deepest node allowed.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: Position,
    doubt: f64,
    base: u32,
    nodes: usize,
    depth: usize,
}

/// Best draft (see the module docs) from `source`.
pub(crate) fn best_draft(
    suffixes: &mut Suffixes<'_>,
    longest: usize,
    params: &SpecParams,
    source: Source<'_>,
    tree_spec: bool,
) -> Draft {
    let Source { own_suffix, shared, .. } = source;
    let tree = suffixes.tree;
    let prior = if shared { SHARED_EVIDENCE_PRIOR } else { EVIDENCE_PRIOR };
    let max_depth = tree.max_depth();
    let mut best_draft = Draft::default();
    let mut best_gain = 0.0;
    // Path mode walks each range's path into `walked` once; the best one is kept by swapping
    // buffers, so the winner is not walked again.
    let mut walked = Draft::default();
    let mut len = longest;
    while len > 0 {
        let shortest = suffixes.same_count_from(len, 1);
        let Some(start) = suffixes.position(shortest) else { break };
        // Lengths of one range have the same occurrences, so the own one is in all or none.
        let own = u32::from(len <= own_suffix);
        let base = tree.node(start.node).count.saturating_sub(own);
        let depth = max_depth - shortest;
        if base > 0 && params.max_spec_tokens > 0 && depth > 0 {
            let doubt = prior / len as f64;
            let m = Match { start, doubt, base, nodes: params.max_spec_tokens, depth };
            if tree_spec {
                let draft = tree_draft(tree, m, params.min_token_prob, source);
                let g = gain(&draft, true);
                if !draft.token_ids.is_empty() && g > best_gain {
                    best_gain = g;
                    let deepest = deepest(&draft);
                    best_draft = Draft { match_len: len.min(max_depth - deepest), ..draft };
                }
            } else {
                let (tokens, g) = path_draft(tree, m, params.min_token_prob, source, &mut walked);
                if tokens > 0 && g > best_gain {
                    best_gain = g;
                    std::mem::swap(&mut best_draft, &mut walked);
                    best_draft.match_len = len.min(max_depth - tokens);
                }
            }
        }
        len = shortest - 1;
    }
    best_draft
}

/// Depth of the deepest node of a draft tree (parents come first).
fn deepest(draft: &Draft) -> usize {
    let mut depths: Vec<usize> = Vec::with_capacity(draft.parents.len());
    for &parent in &draft.parents {
        let depth = if parent < 0 { 1 } else { depths[parent as usize] + 1 };
        depths.push(depth);
    }
    depths.into_iter().max().unwrap_or(0)
}

/// Greedy path below `m.start` (most frequent continuation after the bonuses), at most
/// `limit` tokens, while nodes are worth their cost and their frequency is at least
/// `min_prob`: `visit` gets each token and its estimate. Returns the tokens walked and their
/// gain.
fn walk(
    tree: &SuffixTree,
    m: Match,
    limit: usize,
    min_prob: f64,
    source: Source<'_>,
    mut visit: impl FnMut(TokenId, f64),
) -> (usize, f64) {
    let (mut pos, mut count, mut freq, mut est) = (m.start, m.base, 1.0, 1.0);
    let (mut walked, mut gain, mut previous) = (0, 0.0, source.last);
    while walked < limit.min(m.nodes).min(m.depth) {
        let Some((step, child, parent)) = path_step(tree, pos, count, source.recent, previous) else { break };
        let next_freq = (freq * (f64::from(step.count) / f64::from(count))).min(1.0);
        let next_est = (est * step_estimate(child, parent, m.doubt, walked)).min(1.0);
        if next_freq < min_prob || next_est <= node_cost(false) {
            break;
        }
        visit(step.token, next_est);
        previous = Some(step.token);
        walked += 1;
        gain += next_est - node_cost(false);
        (pos, count, freq, est) = (step.pos, step.count, next_freq, next_est);
    }
    (walked, gain)
}

/// The path draft of `m` written into `draft` (cleared first; its buffers are reused): the
/// tokens walked and their gain.
fn path_draft(
    tree: &SuffixTree,
    m: Match,
    min_prob: f64,
    source: Source<'_>,
    draft: &mut Draft,
) -> (usize, f64) {
    draft.token_ids.clear();
    draft.parents.clear();
    draft.probs.clear();
    draft.score = 0.0;
    walk(tree, m, usize::MAX, min_prob, source, |token, prob| {
        draft.parents.push(draft.token_ids.len() as i32 - 1);
        draft.token_ids.push(token);
        draft.probs.push(prob);
        draft.score += prob;
    })
}

/// What the best-first tree keeps of a frontier node besides its estimate (the rank).
#[derive(Debug)]
struct Frontier {
    freq: f64,
    step: Step,
    depth: usize,
    parent: i32,
}

/// A node whose children the best-first tree weighs: where it is, its occurrences, its
/// frequency and estimate, its depth below the match, its index in the draft (-1: the match
/// itself) and its token (the context's last one for the match).
#[derive(Clone, Copy)]
struct Expanding {
    pos: Position,
    count: u32,
    freq: f64,
    est: f64,
    depth: usize,
    index: i32,
    previous: Option<TokenId>,
}

/// Where the children of a node being expanded join the frontier.
struct Children<'a> {
    frontier: &'a mut BinaryHeap<Ranked<Frontier>>,
    order: &'a mut u64,
    node: Expanding,
}

impl Children<'_> {
    /// A child worth drafting, with its frequency and estimate (ties go to the earliest).
    #[inline]
    fn push(&mut self, step: Step, freq: f64, est: f64) {
        let item = Frontier { freq, step, depth: self.node.depth + 1, parent: self.node.index };
        self.frontier.push(Ranked { score: est, order: *self.order, item });
        *self.order += 1;
    }
}

/// Best-first token tree below `m.start`: the frontier node with the highest estimate next, at
/// most `m.nodes` nodes. `children` pushes the children of a node worth drafting.
fn best_first(
    m: Match,
    last: Option<TokenId>,
    mut children: impl FnMut(Expanding, &mut Children<'_>),
) -> Draft {
    let mut draft = Draft::default();
    let mut frontier = BinaryHeap::new();
    let mut order = 0u64;
    let mut expand = |frontier: &mut BinaryHeap<Ranked<Frontier>>, node: Expanding| {
        children(node, &mut Children { frontier, order: &mut order, node });
    };
    let root =
        Expanding { pos: m.start, count: m.base, freq: 1.0, est: 1.0, depth: 0, index: -1, previous: last };
    expand(&mut frontier, root);
    while draft.token_ids.len() < m.nodes {
        let Some(Ranked { score: est, item: c, .. }) = frontier.pop() else { break };
        let index = draft.token_ids.len() as i32;
        draft.parents.push(c.parent);
        draft.token_ids.push(c.step.token);
        draft.probs.push(est);
        draft.score += est;
        let (pos, count, freq, depth, previous) =
            (c.step.pos, c.step.count, c.freq, c.depth, Some(c.step.token));
        expand(&mut frontier, Expanding { pos, count, freq, est, depth, index, previous });
    }
    draft
}

/// Best-first token tree below `m.start` (see [`best_first`]) while nodes are worth their cost,
/// at most `m.depth` deep. A node's estimate is its parent's times a step estimate <= 1, so it
/// never exceeds its parent's.
fn tree_draft(tree: &SuffixTree, m: Match, min_prob: f64, source: Source<'_>) -> Draft {
    let mut children = Vec::new();
    best_first(m, source.last, |node, worthy| {
        let Expanding { pos, count, freq, est, depth, previous, .. } = node;
        if depth >= m.depth {
            return;
        }
        children.clear();
        let bonuses = match edge_step(tree, pos) {
            Some(step) => {
                children.push(step);
                Bonuses::NONE
            }
            None => {
                let node = tree.node(pos.node);
                if node.first_child == NIL {
                    return;
                }
                if tree.node(node.first_child).next_sib == NIL {
                    children.push(child_step(tree, node.first_child));
                    Bonuses::NONE
                } else {
                    // At a branching node the newest child gets the recency bonus and the child
                    // the recent tokens point to the context bonus, as in path_step.
                    Bonuses::at(tree, pos.node, count, source.recent, previous)
                }
            }
        };
        let parent_count = bonuses.parent(count);
        // A child's frequency and estimate, if both are worth a node.
        let worth = |child: u32, child_count: u32| {
            let child_freq = (freq * (f64::from(child_count) / f64::from(count))).min(1.0);
            let boosted = bonuses.child(child, child_count);
            let child_est = (est * step_estimate(boosted, parent_count, m.doubt, depth)).min(1.0);
            (child_freq >= min_prob && child_est > node_cost(true)).then_some((child_freq, child_est))
        };
        if children.is_empty() {
            // Every child without a bonus has at most the count, hence the frequency and the
            // estimate, of the most frequent child: when neither it nor the children with a
            // bonus are worth a node, none is, and the scan (thousands of children after the
            // short matches of free text) is skipped; else only the children worth a node are
            // kept and sorted.
            let node = tree.node(pos.node);
            let special = [node.best_child, bonuses.newest, bonuses.from_context];
            if special.iter().all(|&c| c == NIL || worth(c, tree.node(c).count).is_none()) {
                return;
            }
            children.extend(
                tree.children_of(pos.node)
                    .map(|c| child_step(tree, c))
                    .filter(|step| worth(step.pos.node, step.count).is_some()),
            );
        }
        children.sort_unstable_by_key(|step| step.token);
        for &step in &children {
            if let Some((child_freq, child_est)) = worth(step.pos.node, step.count) {
                worthy.push(step, child_freq, child_est);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Drafter;

    fn params(max_spec_tokens: usize, use_tree_spec: bool) -> SpecParams {
        SpecParams {
            max_spec_tokens,
            max_spec_factor: 1.0,
            max_spec_offset: 0.0,
            min_token_prob: 0.0,
            use_tree_spec,
            drafter: Drafter::Suffixspec,
        }
    }

    /// A global tree where `1 2` was followed by 6 twice, then by 5 three times: 5 is both the
    /// most frequent and the newest continuation.
    fn global() -> SuffixTree {
        let mut tree = SuffixTree::new(16).unwrap();
        for (seq, next) in [6, 6, 5, 5, 5].into_iter().enumerate() {
            tree.extend(seq as u64, &[1, 2, next, 9, 9]).unwrap();
        }
        tree
    }

    fn prompt(tokens: &[TokenId]) -> SuffixTree {
        let mut tree = SuffixTree::new(16).unwrap();
        tree.extend(0, tokens).unwrap();
        tree
    }

    fn first(tree: &SuffixTree, recent: Option<&SuffixTree>, tree_spec: bool) -> Draft {
        tree.speculate_from(None, true, recent, &[7, 1, 2], &params(8, tree_spec)).unwrap()
    }

    #[test]
    fn the_recent_follower_of_the_previous_token_wins_in_the_global_tree() {
        let tree = global();
        // The request just read `2 6`: 6 is drafted, in both modes, above 5.
        let read = prompt(&[3, 3, 2, 6, 4, 4, 7]);
        for tree_spec in [false, true] {
            let draft = first(&tree, Some(&read), tree_spec);
            assert_eq!(draft.token_ids[0], 6, "{draft:?}");
            if let Some(other) = draft.token_ids.iter().position(|&t| t == 5) {
                assert!(draft.probs[other] < draft.probs[0], "{draft:?}");
            }
            // Without it, or when it read `2 5`, the majority and newest continuation.
            assert_eq!(first(&tree, None, tree_spec).token_ids[0], 5);
            assert_eq!(first(&tree, Some(&prompt(&[3, 2, 5, 4])), tree_spec).token_ids[0], 5);
        }
        // Its estimate: (2 + 0.5 * 5) / (5 + 0.2 * 5 + 0.5 * 5 + the prior 0.75 / 2 matched).
        let draft = first(&tree, Some(&read), false);
        assert!((draft.probs[0] - 4.5 / 8.875).abs() < 1e-9, "{draft:?}");
        // Only the latest follower counts: `2 6` read before `2 8` does not.
        assert_eq!(first(&tree, Some(&prompt(&[2, 6, 4, 2, 8, 4])), false).token_ids[0], 5);
    }

    #[test]
    fn followers_read_long_ago_do_not_count() {
        let tree = global();
        let mut tokens = vec![3, 2, 6];
        let filler = |n: usize| (0..n).map(|i| 100 + (i % 50) as TokenId);
        tokens.extend(filler(CONTEXT_WINDOW as usize));
        // The pair `2 6` ended CONTEXT_WINDOW tokens before the end: still recent.
        assert_eq!(first(&tree, Some(&prompt(&tokens)), false).token_ids[0], 6);
        tokens.push(100);
        assert_eq!(first(&tree, Some(&prompt(&tokens)), false).token_ids[0], 5);
    }

    /// `tree_draft` as first written: every child of a node scanned and sorted, no pruning (the
    /// model the pruned scan must equal).
    fn tree_draft_scanning_all(tree: &SuffixTree, m: Match, min_prob: f64, source: Source<'_>) -> Draft {
        best_first(m, source.last, |node, worthy| {
            let Expanding { pos, count, freq, est, depth, previous, .. } = node;
            if depth >= m.depth {
                return;
            }
            let mut children: Vec<Step> = match edge_step(tree, pos) {
                Some(step) => vec![step],
                None => tree.children_of(pos.node).map(|c| child_step(tree, c)).collect(),
            };
            children.sort_unstable_by_key(|step| step.token);
            let bonuses = if children.len() > 1 {
                Bonuses::at(tree, pos.node, count, source.recent, previous)
            } else {
                Bonuses::NONE
            };
            for step in children {
                let child_freq = (freq * (f64::from(step.count) / f64::from(count))).min(1.0);
                let child = bonuses.child(step.pos.node, step.count);
                let child_est = (est * step_estimate(child, bonuses.parent(count), m.doubt, depth)).min(1.0);
                if child_freq >= min_prob && child_est > node_cost(true) {
                    worthy.push(step, child_freq, child_est);
                }
            }
        })
    }

    fn tokens(alphabet: TokenId, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<TokenId>> {
        prop::collection::vec(0..alphabet, len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the recent tokens say, global-tree drafts stay valid trees that continue
        /// the match in the tree, with estimates in (0, 1] that never grow along a path, within
        /// the budget; and recent tokens none of whose pairs occur in the tree change nothing.
        #[test]
        fn recent_tokens_keep_drafts_valid(
            seqs in prop::collection::vec(tokens(4, 1..40), 1..4),
            read in tokens(5, 0..80),
            context in tokens(4, 1..12),
            budget in 1usize..24,
            tree_spec in any::<bool>(),
        ) {
            let mut tree = SuffixTree::new(12).unwrap();
            for (seq, tokens) in seqs.iter().enumerate() {
                tree.extend(seq as u64, tokens).unwrap();
            }
            let recent = prompt(&read);
            let p = params(budget, tree_spec);
            let draft = tree.speculate_from(None, true, Some(&recent), &context, &p).unwrap();
            let n = draft.token_ids.len();
            prop_assert!(n <= budget);
            prop_assert_eq!(draft.parents.len(), n);
            let mut paths: Vec<Vec<TokenId>> = Vec::with_capacity(n);
            for i in 0..n {
                let parent = draft.parents[i];
                prop_assert!(parent >= -1 && parent < i as i32);
                prop_assert!(tree_spec || parent == i as i32 - 1);
                let prob = draft.probs[i];
                prop_assert!(prob > 0.0 && prob <= 1.0);
                let mut path = if parent < 0 { Vec::new() } else { paths[parent as usize].clone() };
                if parent >= 0 {
                    prop_assert!(prob <= draft.probs[parent as usize]);
                }
                path.push(draft.token_ids[i]);
                let matched = &context[context.len() - draft.match_len..];
                let string: Vec<TokenId> = matched.iter().copied().chain(path.iter().copied()).collect();
                prop_assert!(tree.count(&string) >= 1, "not a continuation: {:?}", string);
                paths.push(path);
            }
            // Token 4 never occurs in the tree: recent tokens made of it point nowhere.
            let elsewhere = prompt(&vec![4; read.len()]);
            prop_assert_eq!(
                tree.speculate_from(None, true, Some(&elsewhere), &context, &p).unwrap(),
                tree.speculate_from(None, true, None, &context, &p).unwrap()
            );
        }

        /// Tree drafts skip the scan of a node's children when neither its most frequent child
        /// nor its children with a bonus are worth a node, and sort only the children that are:
        /// the drafts equal those of scanning and sorting every child, at any frequency floor,
        /// match and budget (wide alphabets: nodes of many children).
        #[test]
        fn pruned_tree_scans_draft_as_full_scans(
            seqs in prop::collection::vec(tokens(12, 1..60), 1..6),
            read in tokens(12, 0..60),
            context in tokens(12, 1..6),
            budget in 1usize..40,
            min_prob in prop::sample::select(vec![0.0, 0.05, 0.1, 0.2, 0.4]),
            shared in any::<bool>(),
        ) {
            let mut tree = SuffixTree::new(12).unwrap();
            for (seq, tokens) in seqs.iter().enumerate() {
                tree.extend(seq as u64, tokens).unwrap();
            }
            let recent = prompt(&read);
            let source = Source {
                own_suffix: 0,
                shared,
                recent: shared.then_some(&recent),
                last: context.last().copied(),
            };
            for len in 1..=context.len() {
                let Some(start) = tree.locate(&context[context.len() - len..]) else { continue };
                let prior = if shared { SHARED_EVIDENCE_PRIOR } else { EVIDENCE_PRIOR };
                let base = tree.node(start.node).count;
                let depth = tree.max_depth() - len;
                let m = Match { start, doubt: prior / len as f64, base, nodes: budget, depth };
                prop_assert_eq!(
                    tree_draft(&tree, m, min_prob, source),
                    tree_draft_scanning_all(&tree, m, min_prob, source)
                );
            }
        }
    }
}
