//! The output of one `schedule` call: what the engine feeds to the model, as flat int32
//! arrays in the layout of `docs/paged_kv.md`.
use crate::selection::ChosenTrees;

/// One step's work. Row `b` is request `request_ids[b]`: it feeds `chunk_lens[b]` of its
/// known tokens, starting at token index `context_lens[b]` (a prefill chunk, or the one
/// pending token that roots its tree), followed by `tree_lens[b]` draft nodes. Its K/V goes
/// to `slot_mapping[offsets]` for `query_lens[b] = chunk_lens[b] + tree_lens[b]` tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan {
    pub request_ids: Vec<u64>,
    /// Tokens already in the KV cache (the verified prefix).
    pub context_lens: Vec<i32>,
    /// Tokens this step adds per request.
    pub query_lens: Vec<i32>,
    /// Known tokens fed (prefill chunk or 1 for a decode step's root).
    pub chunk_lens: Vec<i32>,
    /// Draft-tree nodes fed after the chunk.
    pub tree_lens: Vec<i32>,
    /// Whether the request's last known token is fed, so the step yields new tokens for it.
    pub emits: Vec<bool>,
    /// `[batch, max_blocks]` row-major, 0 past each request's last block.
    pub block_tables: Vec<i32>,
    pub max_blocks: usize,
    /// `[sum(query_lens)]`: `block * block_size + row` of each new token.
    pub slot_mapping: Vec<i32>,
    /// The chosen nodes of each request's draft (row `b` of the trees), with parents
    /// renumbered within the chosen subtree (`-1` = the root).
    pub trees: ChosenTrees,
    /// Requests preempted during this step (their K/V is gone; they will recompute).
    pub preempted: Vec<u64>,
    /// Running requests that sit this step out (AdaServe, far ahead of their TPOT pace): not
    /// fed, their K/V kept; nothing to commit for them.
    pub sat_out: Vec<u64>,
    /// The step time the sit-outs were decided with (seconds): the larger of the scheduler's
    /// upper estimate (`Scheduler::step_time_bound`) and the time since the last `schedule`.
    pub step_time_bound: f64,
    /// Step-time estimate used for the SLO requirements (seconds).
    pub step_time_estimate: f64,
    /// Tree nodes in the step.
    pub verify_tokens: usize,
}

impl StepPlan {
    pub(crate) fn with_capacity(batch: usize) -> Self {
        let mut plan = Self::default();
        plan.request_ids.reserve(batch);
        plan
    }

    pub fn batch_size(&self) -> usize {
        self.request_ids.len()
    }

    /// Total tokens fed.
    pub fn num_tokens(&self) -> usize {
        self.slot_mapping.len()
    }

    pub(crate) fn push(&mut self, id: u64, context: u32, chunk: u32, tree: u32, emits: bool) {
        // Counts fit int32: slot indices do (checked by the pool) and these never exceed them.
        self.request_ids.push(id);
        self.context_lens.push(context as i32);
        self.query_lens.push((chunk + tree) as i32);
        self.chunk_lens.push(chunk as i32);
        self.tree_lens.push(tree as i32);
        self.emits.push(emits);
    }

    /// Fills `block_tables` from each row's table, zero padded to the widest.
    pub(crate) fn set_block_tables<'t>(&mut self, tables: impl Iterator<Item = &'t [u32]> + Clone) {
        self.max_blocks = tables.clone().map(<[u32]>::len).max().unwrap_or(0);
        self.block_tables = vec![0; self.request_ids.len() * self.max_blocks];
        if self.max_blocks > 0 {
            for (row, table) in self.block_tables.chunks_mut(self.max_blocks).zip(tables) {
                for (out, &block) in row.iter_mut().zip(table) {
                    // Block ids fit int32 (the pool checked num_blocks * block_size).
                    *out = block as i32;
                }
            }
        }
    }

    pub(crate) fn finish(&mut self, trees: ChosenTrees, preempted: Vec<u64>, step_time: f64, verify: usize) {
        self.trees = trees;
        self.preempted = preempted;
        self.step_time_estimate = step_time;
        self.verify_tokens = verify;
    }
}
