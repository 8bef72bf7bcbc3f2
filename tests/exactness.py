"""The one exactness criterion every greedy exactness test (CPU and GPU) uses.

Statement (the README's guarantee): greedy speculative output equals plain greedy output token for
token in float32. In reduced precision (float16, bfloat16) it is identical except at *near-ties*:
steps where the plain run's logit of its own token and the logit of the token speculation chose
differ by at most ``NEAR_TIE_ULPS`` units in the last place of the model's dtype, measured at the
magnitude of the plain token's logit. There the two runs compute the same logits in a different
order (a tree block instead of one token, other padding) and rounding alone picks the winner;
plain `model.generate` departs from its own float32 run at such steps just as often.

How a run is checked: the plain reference is `model.generate` on each prompt alone, with its
step logits recorded (`output_logits`, copied to float32 by transformers). Each request is
compared token by token. At a departure (speculation emitted another token than plain decoding),
the plain step's gap ``logit[plain token] - logit[speculative token]`` is checked against the
bound and the departure recorded; then the speculative run is *teacher-forced* back onto the
plain sequence: it is restarted on the prompt plus the plain tokens up to and including the
departed step, and compared from there. So every step of the plain sequence is checked, and
every departure is recorded and bounded. In float32 the bound is zero: no departure at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

#: Bound of a tolerated departure, in ulps of the model dtype at the plain token's logit.
NEAR_TIE_ULPS = 4
#: Explicit mantissa bits of the dtypes with a nonzero bound (float32 must be exact).
_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}

#: `run(prompts, max_new_tokens)` -> the speculative generated tokens of each prompt.
SpeculativeRun = Callable[[list[list[int]], int], list[list[int]]]


def ulp(dtype: torch.dtype, magnitude: float) -> float:
    """One unit in the last place of `dtype` at `magnitude` (0.0 for float32: exactness)."""
    bits = _MANTISSA_BITS.get(dtype)
    if bits is None:
        return 0.0
    exponent = math.floor(math.log2(abs(magnitude))) if magnitude else -14
    return 2.0 ** (exponent - bits)


@dataclass(frozen=True)
class Departure:
    request: int
    step: int  # index into the generated tokens
    plain_token: int
    speculative_token: int
    gap: float  # float32 logit gap in the plain step (>= 0: the plain token is its argmax)
    bound: float

    @property
    def within_bound(self) -> bool:
        return self.gap <= self.bound


@dataclass
class ExactnessReport:
    plain: list[list[int]]
    departures: list[Departure] = field(default_factory=list)
    checked_tokens: int = 0

    def assert_ok(self) -> None:
        bad = [d for d in self.departures if not d.within_bound]
        assert not bad, f"departures beyond {NEAR_TIE_ULPS} ulps of the plain step's logits: {bad}"


def plain_greedy(
    model: torch.nn.Module, prompt: Sequence[int], max_new_tokens: int, **generate_kwargs
) -> tuple[list[int], torch.Tensor]:
    """`model.generate` greedy on one prompt: its new tokens and its step logits `[N, V]` (fp32)."""
    device = next(model.parameters()).device
    out = model.generate(
        torch.tensor([list(prompt)], device=device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        **generate_kwargs,
    )
    tokens = out.sequences[0, len(prompt) :].tolist()
    logits = torch.stack([step[0] for step in out.logits]).float().cpu()
    return tokens, logits


def check_greedy_exactness(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    run: SpeculativeRun,
    max_new_tokens: int,
    *,
    max_departures: int = 16,
    **generate_kwargs,
) -> ExactnessReport:
    """Runs `run` on the whole batch, compares each request with plain greedy decoding and
    records every departure (see the module docstring). `generate_kwargs` go to the plain
    `model.generate` (e.g. `eos_token_id`); `run` must apply the same settings."""
    dtype = next(model.parameters()).dtype
    plains = [plain_greedy(model, p, max_new_tokens, **generate_kwargs) for p in prompts]
    report = ExactnessReport(plain=[tokens for tokens, _ in plains])
    outputs = run([list(p) for p in prompts], max_new_tokens)
    assert len(outputs) == len(prompts)
    for index, (prompt, (plain, logits), spec) in enumerate(zip(prompts, plains, outputs, strict=True)):
        start = 0  # plain[:start] is teacher-forced into the speculative run's prompt
        while True:
            spec = list(spec)
            step = next(
                (i for i, (s, p) in enumerate(zip(spec, plain[start:], strict=False)) if s != p), None
            )
            if step is None:
                assert len(spec) == len(plain) - start, (
                    f"request {index}: speculative run stopped after {start + len(spec)} tokens, "
                    f"plain after {len(plain)} (same tokens up to there)"
                )
                report.checked_tokens += len(spec)
                break
            at = start + step
            row = logits[at]
            plain_tok, spec_tok = plain[at], int(spec[step])
            report.departures.append(
                Departure(
                    request=index,
                    step=at,
                    plain_token=plain_tok,
                    speculative_token=spec_tok,
                    gap=float(row[plain_tok] - row[spec_tok]),
                    bound=NEAR_TIE_ULPS * ulp(dtype, float(row[plain_tok])),
                )
            )
            assert len(report.departures) <= max_departures, f"too many departures: {report.departures}"
            report.checked_tokens += step + 1
            start = at + 1
            if start == len(plain):
                break
            (spec,) = run([list(prompt) + plain[:start]], len(plain) - start)
    return report
