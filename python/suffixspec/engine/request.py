"""One request's state inside the engine: its tokens, decoding settings and stop conditions."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from suffixspec.engine.params import RequestOutput, RequestParams, ServingStats
from suffixspec.errors import RequestFailedError
from suffixspec.generation.logits import TargetScorer


@dataclass
class EngineRequest:
    request_id: Hashable
    handle: int  # the scheduler's id
    prompt: list[int]
    params: RequestParams
    scorer: TargetScorer
    stop_token_ids: tuple[int, ...]
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # prompt + output
    stats: ServingStats = field(default_factory=ServingStats)
    finished: bool = False
    finish_reason: str | None = None
    text: str = ""
    reported: int = 0  # output tokens already returned by step()
    reported_text: int = 0
    error: RequestFailedError | None = None  # set when a failed step stage ended the request
    deadline: float | None = None  # engine-clock time after which it ends with "time"
    stop_checked: int = 0  # output tokens whose text holds no stop string

    # What an acceptance policy sees (suffixspec.generation.loop.AcceptanceRequest).
    @property
    def req_id(self) -> Hashable:
        return self.request_id

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def output(self) -> list[int]:
        return self.tokens[len(self.prompt) :]

    @property
    def remaining(self) -> int:
        return self.params.max_new_tokens - len(self.output)

    def mark(self) -> tuple[int, float | None]:
        """What :meth:`emit` changes, to :meth:`undo_emit` a step that failed after it."""
        return len(self.tokens), self.stats.first_token_time

    def undo_emit(self, mark: tuple[int, float | None]) -> None:
        length, self.stats.first_token_time = mark
        del self.tokens[length:]
        self.finished, self.finish_reason = False, None

    def emit(self, tokens: np.ndarray, now: float) -> None:
        """Appends the step's tokens, cut at a stop token or the token budget."""
        keep = [int(t) for t in tokens[: self.remaining]]
        for i, tok in enumerate(keep):
            if tok in self.stop_token_ids:
                keep = keep[: i + 1]
                self.finished, self.finish_reason = True, "stop"
                break
        if keep and self.stats.first_token_time is None:
            self.stats.first_token_time = now
        self.tokens.extend(keep)
        if not self.finished and self.remaining == 0:
            self.finished, self.finish_reason = True, "length"

    def past_deadline(self, now: float) -> bool:
        """Whether the request is still unfinished at ``now`` and its deadline has passed: then
        it ends with ``"time"`` (a stop token or string of the same step takes precedence)."""
        return not self.finished and self.deadline is not None and now >= self.deadline

    def update_text(self, tokenizer: Any) -> None:
        """Decodes the output; a stop string ends the request, the text cut before the earliest
        one it holds. Stop strings are checked as plain decoding meets them, one token at a
        time: the first token whose text holds one ends the output there (later tokens of the
        step are dropped), so the output does not depend on how many tokens a step accepted
        (with stops "#" and " # ", " # #" ends as " " after the token that completes "#")."""
        if tokenizer is None:
            return
        output = self.output
        self.text = tokenizer.decode(output, skip_special_tokens=True)
        if self._earliest_stop(self.text) is not None:  # only then is the step looked into
            for n in range(self.stop_checked + 1, len(output) + 1):
                text = (
                    self.text if n == len(output) else tokenizer.decode(output[:n], skip_special_tokens=True)
                )
                at = self._earliest_stop(text)
                if at is not None:
                    # The dropped tokens were already given to the proposer; they only feed drafts.
                    del self.tokens[len(self.prompt) + n :]
                    self.text = text[:at]
                    self.finished, self.finish_reason = True, "stop"
                    break
        self.stop_checked = len(self.output)

    def _earliest_stop(self, text: str) -> int | None:
        """Where the earliest stop string in ``text`` starts (None: none is there)."""
        found = [at for at in (text.find(stop) for stop in self.params.stop) if at >= 0]
        return min(found) if found else None

    def _stable_text(self) -> str:
        text = self.text.rstrip("\ufffd")
        hold = 0
        for stop in self.params.stop:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        return text[: len(text) - hold]

    def take_output(self) -> RequestOutput:
        """The output since the last call (what :meth:`Engine.step` returns for the request)."""
        new = self.output[self.reported :]
        self.reported = len(self.output)
        # Text still being decoded can change its last characters (an incomplete character, the
        # start of a stop string that a later token may complete): report those once final.
        stable = self.text if self.finished else self._stable_text()
        new_text = stable[self.reported_text :] if len(stable) >= self.reported_text else ""
        self.reported_text = max(self.reported_text, len(stable))
        return RequestOutput(
            request_id=self.request_id,
            prompt_token_ids=list(self.prompt),
            token_ids=list(self.output),
            new_token_ids=new,
            text=self.text,
            new_text=new_text,
            finished=self.finished,
            finish_reason=self.finish_reason,
            stats=self.stats,
            error=self.error,
        )
