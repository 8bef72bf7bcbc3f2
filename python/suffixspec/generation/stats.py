"""Per-request and aggregate statistics of speculative generation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class RequestStats:
    """What speculation did for one request.

    A *step* is one verification forward pass the request took part in (a plain decode step
    when it had no draft). Times are wall-clock seconds of the batched steps the request took
    part in, so requests of one batch share them.
    """

    prompt_len: int
    new_tokens: int = 0
    steps: int = 0
    accepted_per_step: list[int] = field(default_factory=list)
    draft_sizes: list[int] = field(default_factory=list)
    prefill_time_s: float = 0.0
    propose_time_s: float = 0.0
    verify_time_s: float = 0.0
    finish_reason: str = ""  # "eos", "length" or "time" (max_time)

    @property
    def accepted_tokens(self) -> int:
        """Draft tokens accepted over all steps."""
        return sum(self.accepted_per_step)

    @property
    def drafted_tokens(self) -> int:
        """Draft tokens verified over all steps."""
        return sum(self.draft_sizes)

    @property
    def tokens_per_step(self) -> float:
        """Tokens emitted per verification step (1.0 for plain decoding; the prefill token excluded)."""
        return (self.new_tokens - 1) / self.steps if self.steps else 1.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens (0.0 when nothing was drafted)."""
        drafted = self.drafted_tokens
        return self.accepted_tokens / drafted if drafted else 0.0


@dataclass
class BatchStats:
    """Figures of one `generate` call as a whole, or of a :class:`suffixspec.Engine`'s steps
    (``Engine.step_stats``; its phase names: ``docs/decoding_loops.md``)."""

    forward_passes: int = 0
    prefill_time_s: float = 0.0
    propose_time_s: float = 0.0
    verify_time_s: float = 0.0
    forward_time_s: float = 0.0  # inside the model's forward calls (prefill included)
    total_time_s: float = 0.0
    new_tokens: int = 0
    #: Seconds per phase: "prefill_forward" and "forward" (the model's forward passes of the prefill
    #: and of the verification steps), "tree" (building each step's block), "compact" (KV
    #: compaction). Synchronized per phase only with the loop's `sync_phases`.
    phases: dict[str, float] = field(default_factory=dict)

    def add_phase(self, name: str, seconds: float) -> None:
        """Adds `seconds` to `phases[name]`."""
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str, sync: Callable[[], None] | None = None) -> Iterator[None]:
        """Adds the wall time of the block to `phases[name]`; `sync` (e.g. a CUDA synchronize)
        runs before the clock stops, so that queued device work counts."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if sync is not None:
                sync()
            self.add_phase(name, time.perf_counter() - t0)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.total_time_s if self.total_time_s > 0 else 0.0

    @property
    def outside_model_share(self) -> float:
        """Share of the wall time spent outside the model's forward calls (the loop's overhead)."""
        return 1.0 - self.forward_time_s / self.total_time_s if self.total_time_s > 0 else 0.0
