//! Drafting: choose the best match length, then grow a path or a tree below the match.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::tree::{check_tokens, Position, SuffixTree, NIL};
use crate::{CacheError, Draft, Drafter, SpecParams, TokenId};

/// Per-thread buffers reused across calls, so that drafting allocates only the draft itself.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Node matched by the context suffix of each length (None: not located yet).
    matched: Vec<Option<u32>>,
    /// Running score after each token of the path being evaluated.
    pub(crate) scores: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl SuffixTree {
    /// Draft for `context` (see [`SpecParams`]); only the last `max_depth` tokens matter.
    pub fn speculate(&self, context: &[TokenId], params: &SpecParams) -> Result<Draft, CacheError> {
        self.speculate_after(None, context, params)
    }

    /// Like [`Self::speculate`] when `context` continues sequence `own` of this tree (a
    /// request's own prompt + response): [`crate::Drafter::Suffixspec`] then leaves the
    /// context's own occurrence out of the continuation frequencies. Arctic drafts ignore it.
    pub fn speculate_after(
        &self,
        own: Option<u64>,
        context: &[TokenId],
        params: &SpecParams,
    ) -> Result<Draft, CacheError> {
        self.speculate_from(own, false, None, context, params)
    }

    /// [`Self::speculate_after`] in the cache's global tree of earlier responses (`shared`),
    /// whose continuations [`crate::Drafter::Suffixspec`] trusts more than a prompt's;
    /// `recent` is the request's prompt tree, holding its recent tokens, where
    /// [`crate::Drafter::Suffixspec`] reads what last followed the draft's previous token.
    pub(crate) fn speculate_from(
        &self,
        own: Option<u64>,
        shared: bool,
        recent: Option<&SuffixTree>,
        context: &[TokenId],
        params: &SpecParams,
    ) -> Result<Draft, CacheError> {
        params.validate()?;
        check_tokens(context)?;
        Ok(best_draft(self, context, params, own, shared, recent))
    }
}

/// Best draft over all match lengths (see [`SpecParams`]); `context` is already validated.
/// `own` is the tree's sequence that the context is the continuation of, if any (the
/// request's own prompt + response) and `shared` whether the tree is the cache's global one:
/// only [`Drafter::Suffixspec`] uses them, and `recent` (see [`SuffixTree::speculate_from`]).
pub(crate) fn best_draft(
    tree: &SuffixTree,
    context: &[TokenId],
    params: &SpecParams,
    own: Option<u64>,
    shared: bool,
    recent: Option<&SuffixTree>,
) -> Draft {
    let usable = context.len().min(tree.max_depth());
    let context = &context[context.len() - usable..];
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => draft_with(tree, context, params, (own, shared, recent), &mut scratch),
        Err(_) => draft_with(tree, context, params, (own, shared, recent), &mut Scratch::default()),
    })
}

fn draft_with(
    tree: &SuffixTree,
    context: &[TokenId],
    params: &SpecParams,
    (own, shared, recent): (Option<u64>, bool, Option<&SuffixTree>),
    scratch: &mut Scratch,
) -> Draft {
    let Scratch { matched, scores } = scratch;
    matched.clear();
    matched.resize(context.len() + 1, None);
    let mut suffixes = Suffixes { tree, context, matched };
    let longest = suffixes.longest();
    match (params.drafter, params.use_tree_spec) {
        (Drafter::Arctic, true) => best_tree_draft(&mut suffixes, longest, params),
        (Drafter::Arctic, false) => best_path_draft(&mut suffixes, longest, params, scores),
        (Drafter::Suffixspec, tree_spec) => {
            let own_suffix = own.map_or(0, |seq| tree.common_suffix(seq, context));
            let last = context.last().copied();
            let source = crate::expected::Source { own_suffix, shared, recent, last };
            crate::expected::best_draft(&mut suffixes, longest, params, source, tree_spec)
        }
    }
}

/// The suffixes of the context and where they end in the tree, located at most once each.
pub(crate) struct Suffixes<'a> {
    pub(crate) tree: &'a SuffixTree,
    context: &'a [TokenId],
    matched: &'a mut Vec<Option<u32>>,
}

impl Suffixes<'_> {
    fn suffix(&self, len: usize) -> &[TokenId] {
        &self.context[self.context.len() - len..]
    }

    /// Whether the suffix of `len` tokens occurs (remembering where).
    fn occurs(&mut self, len: usize) -> bool {
        if self.matched[len].is_some() {
            return true;
        }
        let found = self.tree.locate(self.suffix(len));
        self.matched[len] = found.map(|pos| pos.node);
        found.is_some()
    }

    /// Longest occurring suffix. Occurrence is monotone in the length (a suffix of an
    /// occurring string occurs too), so binary search needs O(log n) walks; the whole context
    /// is tried first because it usually occurs (the local tree holds the context itself).
    fn longest(&mut self) -> usize {
        let (mut lo, mut hi) = (0, self.context.len());
        if hi == 0 || self.occurs(hi) {
            return hi;
        }
        hi -= 1;
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.occurs(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Where the suffix of `len` tokens ends; it must be no longer than the longest match,
    /// so its edges need no token comparisons.
    pub(crate) fn position(&mut self, len: usize) -> Option<Position> {
        let node = match self.matched[len] {
            Some(node) => node,
            None => {
                let node = self.tree.locate_known(self.suffix(len))?.node;
                self.matched[len] = Some(node);
                node
            }
        };
        Some(Position { node, depth: len as u32 })
    }

    fn count(&mut self, len: usize) -> Option<u32> {
        self.position(len).map(|pos| self.tree.node(pos.node).count)
    }

    /// Shortest length in `floor..=len` whose suffix has the same count as that of `len`.
    /// Counts never increase with the length, so the lengths sharing a count form a range:
    /// gallop down to its end, then bisect.
    pub(crate) fn same_count_from(&mut self, len: usize, floor: usize) -> usize {
        let count = self.count(len);
        let (mut same, mut differs, mut step) = (len, floor - 1, 1);
        while same > floor {
            let probe = same.saturating_sub(step).max(floor);
            if self.count(probe) != count {
                differs = probe;
                break;
            }
            same = probe;
            step *= 2;
        }
        while same - differs > 1 {
            let mid = differs + (same - differs) / 2;
            if self.count(mid) == count {
                same = mid;
            } else {
                differs = mid;
            }
        }
        same
    }
}

/// Path mode. Suffixes of the context with the same count have the same occurrences (each
/// occurrence of the shorter one extends to one of the longer one), hence the same
/// continuations with the same counts down to the depth limit of the longer one: their drafts
/// are prefixes of one greedy path, of `min(budget, max_depth - len, path length)` tokens. So
/// one walk per such range of lengths suffices, from its shortest length (the deepest room).
fn best_path_draft(
    suffixes: &mut Suffixes<'_>,
    longest: usize,
    params: &SpecParams,
    scores: &mut Vec<f64>,
) -> Draft {
    let tree = suffixes.tree;
    let max_depth = tree.max_depth();
    // (match length, tokens, where the walk of its range started).
    let mut best: Option<(usize, usize, Position)> = None;
    let mut best_score = 0.0;
    let mut len = longest;
    // A draft of `k` tokens scores at most `k` and budgets never grow as lengths shrink, so
    // lengths whose budget cannot beat the best score (ties go to the longer match) are out.
    while len > 0 && params.token_budget(len) as f64 > best_score {
        let floor = lowest_length_beating(params, len, best_score);
        let shortest = suffixes.same_count_from(len, floor);
        let Some(start) = suffixes.position(shortest) else { break };
        let most = most_room(params, max_depth, shortest, len);
        if most as f64 > best_score {
            let walked = path_scores(tree, start, most, params.min_token_prob, scores);
            // The longest draft of the range, ties going to the longer match: the longest
            // length with both the budget and the depth left for it (its budget is enough,
            // as the one of a shorter length reaching `tokens` is).
            let tokens = most.min(walked);
            if tokens > 0 && scores[tokens - 1] > best_score {
                best_score = scores[tokens - 1];
                best = Some((len.min(max_depth - tokens), tokens, start));
            }
        }
        len = shortest - 1;
    }
    match best {
        Some((match_len, tokens, start)) => {
            Draft { match_len, ..path_draft(tree, start, tokens, params.min_token_prob) }
        }
        None => Draft::default(),
    }
}

/// Lowest length in `1..=len` whose budget exceeds `score` (`len`'s does).
fn lowest_length_beating(params: &SpecParams, len: usize, score: f64) -> usize {
    let (mut lo, mut hi) = (1, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if params.token_budget(mid) as f64 > score {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Most tokens a length in `lo..=hi` may draft: `min(budget, max_depth - len)`. The budget
/// grows with the length and the depth left shrinks, so the maximum is where they cross.
fn most_room(params: &SpecParams, max_depth: usize, lo: usize, hi: usize) -> usize {
    let depth_bound = |len: usize| params.token_budget(len) >= max_depth - len;
    if !depth_bound(hi) {
        return params.token_budget(hi);
    }
    if depth_bound(lo) {
        return max_depth - lo;
    }
    // Shortest depth-bound length, in lo + 1..=hi.
    let (mut below, mut at) = (lo, hi);
    while at - below > 1 {
        let mid = below + (at - below) / 2;
        if depth_bound(mid) {
            at = mid;
        } else {
            below = mid;
        }
    }
    (max_depth - at).max(params.token_budget(at - 1))
}

/// Tree mode: every match length drafts on its own (early stopping as in path mode).
fn best_tree_draft(suffixes: &mut Suffixes<'_>, longest: usize, params: &SpecParams) -> Draft {
    let tree = suffixes.tree;
    let mut best = Draft::default();
    // Count of the previous (one longer) match and whether its draft was free of nodes at
    // max_depth: then an equal count means the same continuations with the same counts, so
    // this shorter match's draft would be a prefix of that one and cannot win.
    let mut previous: Option<(u32, bool)> = None;
    for match_len in (1..=longest).rev() {
        let budget = params.token_budget(match_len);
        if budget as f64 <= best.score {
            break;
        }
        let Some(pos) = suffixes.position(match_len) else { break };
        let count = tree.node(pos.node).count;
        if previous == Some((count, true)) {
            continue;
        }
        let (draft, deepest) = tree_draft(tree, pos, budget, params.min_token_prob);
        previous = Some((count, deepest < tree.max_depth() as u32));
        if !draft.token_ids.is_empty() && draft.score > best.score {
            best = Draft { match_len, ..draft };
        }
    }
    best
}

/// One step below a position: the child position, its token and its count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) pos: Position,
    pub(crate) token: TokenId,
    pub(crate) count: u32,
}

/// Inside an edge the only continuation is the next label token (same count).
pub(crate) fn edge_step(tree: &SuffixTree, pos: Position) -> Option<Step> {
    let node = tree.node(pos.node);
    (pos.depth < node.depth).then(|| Step {
        pos: Position { node: pos.node, depth: pos.depth + 1 },
        token: tree.label_token(pos.node, pos.depth),
        count: node.count,
    })
}

pub(crate) fn child_step(tree: &SuffixTree, child: u32) -> Step {
    let c = tree.node(child);
    let depth = tree.node(c.parent).depth + 1;
    Step { pos: Position { node: child, depth }, token: c.token, count: c.count }
}

#[inline]
pub(crate) fn child_prob(parent_prob: f64, child_count: u32, parent_count: u32) -> f64 {
    parent_prob * (f64::from(child_count) / f64::from(parent_count))
}

/// Greedy path: follow the most frequent continuation while it stays likely enough, at most
/// `limit` tokens; `visit` gets each token and its prob. Returns the tokens walked.
fn walk_path(
    tree: &SuffixTree,
    start: Position,
    limit: usize,
    min_prob: f64,
    mut visit: impl FnMut(TokenId, f64),
) -> usize {
    let (mut pos, mut count, mut prob) = (start, tree.node(start.node).count, 1.0);
    let mut walked = 0;
    while walked < limit {
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
        visit(step.token, next_prob);
        walked += 1;
        (pos, count, prob) = (step.pos, step.count, next_prob);
    }
    walked
}

/// The greedy path's first `tokens` tokens as a draft (fewer if the walk stops earlier).
fn path_draft(tree: &SuffixTree, start: Position, tokens: usize, min_prob: f64) -> Draft {
    let mut draft = Draft {
        token_ids: Vec::with_capacity(tokens),
        parents: Vec::with_capacity(tokens),
        probs: Vec::with_capacity(tokens),
        ..Draft::default()
    };
    walk_path(tree, start, tokens, min_prob, |token, prob| {
        draft.parents.push(draft.token_ids.len() as i32 - 1);
        draft.token_ids.push(token);
        draft.probs.push(prob);
        draft.score += prob;
    });
    draft
}

/// Running scores of the greedy path's first `limit` tokens into `scores` (as a draft sums
/// them). Returns the tokens walked.
fn path_scores(
    tree: &SuffixTree,
    start: Position,
    limit: usize,
    min_prob: f64,
    scores: &mut Vec<f64>,
) -> usize {
    scores.clear();
    let mut score = 0.0;
    walk_path(tree, start, limit, min_prob, |_, prob| {
        score += prob;
        scores.push(score);
    })
}

/// Frontier entry of a best-first tree expansion: highest `score` first, then first pushed
/// (`order`), so ties expand in push order. Both drafters' best-first trees rank their
/// frontiers with it.
#[derive(Debug)]
pub(crate) struct Ranked<T> {
    pub score: f64,
    pub order: u64,
    pub item: T,
}

impl<T> Ord for Ranked<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.order.cmp(&self.order))
    }
}
impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Ranked<T> {}

/// Best-first token tree: repeatedly take the most likely frontier node. Returns the draft
/// and the deepest tree depth it reached.
fn tree_draft(tree: &SuffixTree, start: Position, budget: usize, min_prob: f64) -> (Draft, u32) {
    let mut draft = Draft::default();
    let mut deepest = start.depth;
    let mut frontier = BinaryHeap::new();
    let mut order = 0u64;
    let mut scratch = Vec::new();
    let mut expand = |frontier: &mut BinaryHeap<Ranked<(Step, i32)>>,
                      pos: Position,
                      count: u32,
                      prob: f64,
                      parent: i32| {
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
            frontier.push(Ranked { score: child_prob(prob, step.count, count), order, item: (step, parent) });
            order += 1;
        }
    };
    if budget > 0 {
        expand(&mut frontier, start, tree.node(start.node).count, 1.0, -1);
    }
    while draft.token_ids.len() < budget {
        let Some(Ranked { score: prob, item: (step, parent), .. }) = frontier.pop() else { break };
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
