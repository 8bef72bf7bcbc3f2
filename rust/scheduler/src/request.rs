//! What the scheduler knows about one request: token counts, SLO, priority and phase. It
//! never sees token ids: the engine keeps them and reports counts through `commit`.
use crate::error::{invalid, SchedulerError};

/// Latency targets in seconds; `None` = no target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Slo {
    /// Time per output token after the first.
    pub tpot: Option<f64>,
    /// Time to the first output token, from arrival.
    pub ttft: Option<f64>,
}

/// A new request as the engine submits it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestSpec {
    /// Prompt tokens (at least 1).
    pub prompt_len: u32,
    /// Most tokens the request can ever hold (prompt + output); it must fit the KV pool alone.
    pub max_len: u32,
    /// Larger is more important; preemption takes the lowest first.
    pub priority: i32,
    pub slo: Slo,
    /// Arrival time (seconds, the engine's clock), the origin of the TTFT target.
    pub arrival: f64,
}

impl RequestSpec {
    pub(crate) fn validate(&self) -> Result<(), SchedulerError> {
        if self.prompt_len == 0 {
            return Err(invalid("prompt_len", "a prompt needs at least one token"));
        }
        if self.max_len <= self.prompt_len {
            return Err(invalid(
                "max_len",
                format!(
                    "must exceed the prompt length {} (room for one output token), got {}",
                    self.prompt_len, self.max_len
                ),
            ));
        }
        if !self.arrival.is_finite() {
            return Err(invalid("arrival", "must be finite"));
        }
        for (name, target) in [("tpot", self.slo.tpot), ("ttft", self.slo.ttft)] {
            if let Some(t) = target {
                if !(t.is_finite() && t > 0.0) {
                    return Err(invalid(
                        name,
                        format!("SLO targets must be finite and > 0 seconds, got {t}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Never scheduled yet.
    Waiting,
    /// Holding KV blocks; scheduled every step the budgets allow.
    Running,
    /// Its blocks were taken back; it re-enters by recomputing its known tokens.
    Preempted,
}

/// The scheduler's view of a live request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestState {
    pub spec: RequestSpec,
    pub phase: Phase,
    /// Prompt plus output tokens the engine holds.
    pub known: u32,
    /// Tokens whose K/V is in the pool (`known - 1` while decoding: the last one is the next root).
    pub computed: u32,
    /// Output tokens emitted so far.
    pub outputs: u32,
    /// When the first output token was committed.
    pub first_token_at: Option<f64>,
    pub preemptions: u32,
    /// Submission order (FCFS among equals).
    pub(crate) seq: u64,
}

impl RequestState {
    pub(crate) fn new(spec: RequestSpec, seq: u64) -> Self {
        Self {
            spec,
            phase: Phase::Waiting,
            known: spec.prompt_len,
            computed: 0,
            outputs: 0,
            first_token_at: None,
            preemptions: 0,
            seq,
        }
    }

    /// Known tokens whose K/V is not in the pool yet.
    pub fn pending(&self) -> u32 {
        self.known - self.computed
    }

    /// When the next output token is due: arrival + TTFT before the first token, then
    /// first token + outputs * TPOT; infinity without a target.
    pub fn deadline(&self) -> f64 {
        let due = match self.first_token_at {
            None => self.spec.slo.ttft.map(|t| self.spec.arrival + t),
            Some(t0) => self.spec.slo.tpot.map(|t| t0 + f64::from(self.outputs) * t),
        };
        due.unwrap_or(f64::INFINITY)
    }
}
