//! The serving engine's scheduler: a block-paged KV pool, continuous-batching queues with
//! chunked prefill and preemption, and AdaServe's SLO-customized tree selection, one native
//! call per step.
//!
//! - [`BlockPool`]: the paged KV layout of `docs/paged_kv.md` (fixed-size blocks, a free list,
//!   int32 block tables and slot mappings).
//! - [`Scheduler`]: waiting / running / preempted queues; [`Scheduler::schedule`] plans a step
//!   under the token, prefill, KV and running-count budgets and picks each decoding request's
//!   draft-tree nodes ([`select`]); under AdaServe, optionally, SLO requests far ahead of their
//!   pace sit a step out while others are behind; [`Scheduler::commit`] applies the verified
//!   results.
//! - [`StepCostModel`]: step time against tokens, used to pick the verify budget.
//!
//! The engine drives it like this, once per step:
//!
//! ```
//! use suffixspec_scheduler::{Draft, RequestSpec, Scheduler, SchedulerConfig, Slo};
//! let mut s = Scheduler::new(SchedulerConfig { num_blocks: 64, ..Default::default() }).unwrap();
//! let spec = RequestSpec { prompt_len: 5, max_len: 64, priority: 0, slo: Slo::default(), arrival: 0.0 };
//! s.add_request(1, spec).unwrap();
//! let plan = s.schedule(0.0, &[]).unwrap(); // prefill: 5 prompt tokens, then the first token
//! assert_eq!((plan.query_lens[0], plan.emits[0]), (5, true));
//! s.commit(0.01, &[(1, 0)]).unwrap();
//! // Draft for the decode-ready requests, then schedule with the drafts.
//! let (parents, probs) = (vec![-1, 0], vec![0.9, 0.8]);
//! let plan = s.schedule(0.02, &[Draft { request: 1, parents: &parents, probs: &probs }]).unwrap();
//! assert_eq!(plan.context_lens[0], 5); // the first output token is the tree root
//! s.commit(0.03, &[(1, plan.tree_lens[0] as u32)]).unwrap(); // every node accepted
//! s.finish(1).unwrap();
//! assert_eq!(s.pool().num_free(), 64); // all blocks are back
//! ```
//!
//! Pure Rust; the Python bindings live in `suffixspec-python`.

mod cost;
mod error;
mod plan;
mod pool;
mod request;
mod scheduler;
mod selection;

pub use cost::{best_budget, StepCostModel};
pub use error::SchedulerError;
pub use plan::StepPlan;
pub use pool::{BlockPool, BLOCK_SIZES, DEFAULT_BLOCK_SIZE};
pub use request::{Phase, RequestSpec, RequestState, Slo};
pub use scheduler::{
    Draft, Scheduler, SchedulerConfig, SchedulerStats, DEFAULT_SIT_OUT_MARGIN,
    DEFAULT_SIT_OUT_MIN_TARGET_STEPS,
};
pub use selection::{
    required_tokens, select, validate_tree, Candidate, ChosenTrees, Pick, Picks, Policy, Selector,
};
