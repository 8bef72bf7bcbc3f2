"""Host-side state of the requests of one `generate` call (the ragged batch)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from suffixspec.generation.stats import RequestStats


@dataclass
class Request:
    """One prompt and what was generated for it so far."""

    req_id: Hashable
    prompt_len: int
    max_new_tokens: int
    tokens: np.ndarray  # int32 buffer: prompt, then generated tokens, `length` of them filled
    length: int
    stats: RequestStats = field(init=False)
    done: bool = False

    def __post_init__(self) -> None:
        self.stats = RequestStats(prompt_len=self.prompt_len)

    @classmethod
    def new(cls, req_id: Hashable, prompt: np.ndarray, max_new_tokens: int) -> Request:
        tokens = np.zeros(prompt.size + max_new_tokens, dtype=np.int32)
        tokens[: prompt.size] = prompt
        return cls(req_id, int(prompt.size), max_new_tokens, tokens, int(prompt.size))

    @property
    def generated(self) -> np.ndarray:
        return self.tokens[self.prompt_len : self.length]

    @property
    def context(self) -> np.ndarray:
        """Prompt and generated tokens (a view)."""
        return self.tokens[: self.length]

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - (self.length - self.prompt_len)

    @property
    def last_token(self) -> int:
        return int(self.tokens[self.length - 1])

    def emit(self, tokens: np.ndarray, eos_ids: Sequence[int]) -> np.ndarray:
        """Appends `tokens`, cut after the first EOS or at the token budget; returns what was kept
        and marks the request done when it stops."""
        keep = tokens[: self.remaining]
        if eos_ids:
            hits = np.nonzero(np.isin(keep, eos_ids))[0]
            if hits.size:
                keep = keep[: hits[0] + 1]
                self.done, self.stats.finish_reason = True, "eos"
        self.tokens[self.length : self.length + keep.size] = keep
        self.length += keep.size
        self.stats.new_tokens += int(keep.size)
        if not self.done and self.remaining == 0:
            self.done, self.stats.finish_reason = True, "length"
        return keep


def left_pad(rows: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """`[B, L]` ids with each row right-aligned, and the matching 0/1 attention mask."""
    width = max(r.size for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, width - row.size :] = row
        mask[b, width - row.size :] = 1
    return ids, mask
