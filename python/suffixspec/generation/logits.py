"""Target distributions: transformers' own logits processors, applied to every tree node at once.

A tree node's scores may only depend on the node's logits, since the nodes of one block have
different contexts; so only processors that look at the scores alone are accepted.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation import logits_process as lp

from suffixspec.errors import InvalidParameterError
from suffixspec.generation.compat import logits_processors

# Processors whose output depends on the scores row alone (not on the context or its length).
CONTEXT_FREE = (
    lp.TemperatureLogitsWarper,
    lp.TopKLogitsWarper,
    lp.TopPLogitsWarper,
    lp.TopHLogitsWarper,
    lp.MinPLogitsWarper,
    lp.TypicalLogitsWarper,
    lp.EpsilonLogitsWarper,
    lp.EtaLogitsWarper,
    lp.InfNanRemoveLogitsProcessor,
    lp.SuppressTokensLogitsProcessor,
    lp.LogitNormalization,
)


def check_processors(processors: LogitsProcessorList) -> LogitsProcessorList:
    """Raises :class:`InvalidParameterError` for a processor that depends on the context."""
    for proc in processors:
        if not isinstance(proc, CONTEXT_FREE):
            raise InvalidParameterError(
                f"{type(proc).__name__} depends on the generated context, which speculative "
                "verification cannot reproduce per tree node; drop that generation setting"
            )
    return processors


def build_processors(model: Any, config: GenerationConfig, prompt_len: int) -> LogitsProcessorList:
    """The processors `model.generate` would use for `config` (warpers only when sampling)."""
    device = next(model.parameters()).device
    return check_processors(logits_processors(model, config, prompt_len, device))


class TargetScorer:
    """Turns block logits `[B, n, V]` into float32 scores or probabilities, as `model.generate` does
    for one row: processors on float32 logits, then softmax."""

    def __init__(self, processors: LogitsProcessorList):
        self.processors = processors

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        scores = logits.float()
        if not self.processors:
            return scores
        flat = scores.reshape(-1, scores.shape[-1])
        # Context-free processors ignore input_ids; a 1-token placeholder satisfies their signature.
        dummy = torch.zeros((flat.shape[0], 1), dtype=torch.long, device=flat.device)
        return self.processors(dummy, flat).reshape(scores.shape)  # type: ignore[arg-type]

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(logits), dim=-1)

    def greedy(self, logits: torch.Tensor) -> torch.Tensor:
        """Argmax tokens; processors are skipped when there are none (argmax is dtype-stable)."""
        return (self.scores(logits) if self.processors else logits).argmax(dim=-1)
