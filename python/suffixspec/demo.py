"""``suffixspec demo``: speculative vs plain greedy generation, same prompts, same model.

Runs each prompt through ``model.generate`` (greedy) and through ``suffixspec.generate`` with one
:class:`suffixspec.SuffixCache` shared by all prompts (as a server would share it), checks that the
outputs are identical token for token, and prints the speed of both. Exits 1 if any output
differs, 2 if the model cannot be loaded.

The model is the built-in default (a small Llama trained by suffixspec on the Python standard
library, shipped in the package; no download) or any local transformers causal LM given with
``--model PATH``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import operator
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suffixspec.errors import SuffixSpecError
from suffixspec.model_loading import add_model_argument, load_local_model, resolve_device

__all__ = ["add_arguments", "run"]

DEFAULT_MAX_NEW_TOKENS = 160

# --- prompts -------------------------------------------------------------------------------------

# Prompts end without trailing whitespace (see read_prompts) and hold code only, as the default
# model's training text does (see suffixspec.default_model.corpus.strip_docs).

_ACCESSORS = """class Settings:
    def __init__(self, values):
        self._values = dict(values)

    @property
    def host(self):
        return self._values["host"]

    @host.setter
    def host(self, value):
        self._values["host"] = value

    @property
    def port(self):
        return self._values["port"]

    @port.setter
    def port(self, value):
        self._values["port"] = value

    @property
    def user(self):"""

_AGENT_TASK = """import os


def find_files(root, suffix):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):"""

_AGENT_TASK_EDITED = _AGENT_TASK.replace("import os\n", "import os\nimport sys\n")

# The answer is asked for again, under a new name (an agent's "rewrite that function").
_AGENT_REVISE = "\n\n\ndef find_files_again(root, suffix):"


@dataclass(frozen=True)
class DemoCase:
    """One prompt of the demo; ``build`` gets the texts generated for the earlier cases by name."""

    name: str
    build: Callable[[dict[str, str]], str]


def _constant(text: str) -> Callable[[dict[str, str]], str]:
    """A case builder that ignores earlier outputs."""
    return lambda _done: text


def builtin_cases(shipped: Sequence[dict[str, str]] = ()) -> list[DemoCase]:
    """Prompts where speculation has something to work with, in the order they run.

    * a class whose continuation repeats the prompt's own pattern (the request's own tree);
    * ``shipped``: prompts shipped with the default model (the first half of a standard-library
      file it trained on, cut when it was trained, so the prompt does not depend on the Python
      the demo runs on);
    * an agent-like session: a task, the task re-sent with an edit elsewhere in the file, then a
      request to rewrite the answer; later turns draft from earlier responses through the shared
      cache.
    """
    cases = [DemoCase("repetitive class", lambda _: _ACCESSORS)]
    cases += [DemoCase(p["name"], _constant(p["text"])) for p in shipped]
    cases += [
        DemoCase("agent: task", lambda _: _AGENT_TASK),
        DemoCase("agent: edited retry", lambda _: _AGENT_TASK_EDITED),
        DemoCase("agent: revise", lambda done: _AGENT_TASK + done["agent: task"] + _AGENT_REVISE),
    ]
    return cases


def read_prompts(path: str | Path) -> list[DemoCase]:
    """Prompts from a text file, separated by lines holding only ``---``.

    Trailing whitespace is dropped: a prompt ending in a newline would ask a BPE model to continue
    after a token boundary it never saw in training (newline and indentation are merged tokens),
    which derails small models.

    Raises:
        FileNotFoundError: no such file.
        InvalidParameterError: the file holds no prompt.
    """
    from suffixspec.errors import InvalidParameterError

    text = Path(path).read_text(encoding="utf-8")
    chunks: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.strip() == "---":
            chunks.append("".join(current))
            current = []
        else:
            current.append(line)
    chunks.append("".join(current))
    prompts = [chunk.rstrip() for chunk in chunks if chunk.strip()]
    if not prompts:
        raise InvalidParameterError(f"{path}: no prompts (separate prompts with lines holding only '---')")
    return [DemoCase(f"{Path(path).name} #{i + 1}", _constant(p)) for i, p in enumerate(prompts)]


# --- model ---------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[Any, Any, str, list[dict[str, str]]]:
    """(model, tokenizer, description line, the prompts shipped with the default model)."""
    if args.model is None:
        from suffixspec.default_model import load_default_model

        model, tokenizer, info = load_default_model()
        description = (
            f"default model: {info.describe()}\n  (a toy that writes Python-like code, not a general-purpose "
            "LLM; --model PATH runs any local transformers causal LM)"
        )
        return model, tokenizer, description, info.prompts()

    from suffixspec.default_model.store import format_quantity

    model, tokenizer = load_local_model(args.model)
    parameters = format_quantity(sum(p.numel() for p in model.parameters()))
    description = f"model: {Path(args.model).expanduser()} ({type(model).__name__}, {parameters} parameters)"
    return model, tokenizer, description, []


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class CaseResult:
    name: str
    prompt_tokens: int
    plain: list[int]
    spec: list[int]
    plain_s: float
    spec_s: float
    stats: Any  # suffixspec RequestStats

    @property
    def identical(self) -> bool:
        return self.plain == self.spec

    @property
    def tokens(self) -> int:
        return len(self.plain)


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first EOS (anything after it is padding)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


class _Runner:
    """Runs both generators on one prompt, timed the same way."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, max_new_tokens: int, max_spec_tokens: int):
        import torch

        import suffixspec

        self.torch, self.suffixspec = torch, suffixspec
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_new_tokens = max_new_tokens
        self.spec_config = suffixspec.SpecConfig(max_spec_tokens=max_spec_tokens)
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        limit = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
        self.prompt_limit = None if limit is None else limit - max_new_tokens

    def encode(self, text: str) -> Any:
        ids = self.tokenizer(text, return_tensors="pt", verbose=False).input_ids
        if self.prompt_limit is not None:
            ids = ids[:, -self.prompt_limit :]  # keep the end: that is what gets continued
        return ids.to(self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def plain(self, input_ids: Any, max_new_tokens: int) -> tuple[list[int], float]:
        self._sync()
        start = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(
                input_ids,
                attention_mask=self.torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
        self._sync()
        seconds = time.perf_counter() - start
        return _until_eos(out[0, input_ids.shape[1] :].tolist(), self.eos_ids), seconds

    def spec(self, input_ids: Any, max_new_tokens: int, cache: Any) -> tuple[list[int], float, Any]:
        self._sync()
        start = time.perf_counter()
        out = self.suffixspec.generate(
            self.model,
            input_ids,
            max_new_tokens=max_new_tokens,
            cache=cache,
            do_sample=False,
            pad_token_id=self.pad_id,
            spec=self.spec_config,
        )
        self._sync()
        seconds = time.perf_counter() - start
        tokens = _until_eos(out.sequences[0, input_ids.shape[1] :].tolist(), self.eos_ids)
        return tokens, seconds, out.stats[0]

    def warm_up(self, text: str) -> None:
        """First calls pay one-off costs (allocations, lazy imports); keep them out of the table."""
        ids = self.encode(text)
        self.plain(ids, 8)
        self.spec(ids, 8, self.suffixspec.SuffixCache())

    def run(self, case: DemoCase, done: dict[str, str], cache: Any) -> CaseResult:
        ids = self.encode(case.build(done))
        plain, plain_s = self.plain(ids, self.max_new_tokens)
        spec, spec_s, stats = self.spec(ids, self.max_new_tokens, cache)
        done[case.name] = self.tokenizer.decode(plain, skip_special_tokens=True)
        return CaseResult(case.name, ids.shape[1], plain, spec, plain_s, spec_s, stats)


# --- report --------------------------------------------------------------------------------------

_COLUMNS = (
    ("prompt", 22, "<"),
    ("tokens", 6, ">"),
    ("plain tok/s", 11, ">"),
    ("suffixspec tok/s", 16, ">"),
    ("speedup", 7, ">"),
    ("tok/step", 8, ">"),
    ("accepted", 8, ">"),
    ("propose ms", 10, ">"),
    ("model ms", 8, ">"),
    ("identical", 9, ">"),
)


def _row(cells: Sequence[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    )


@dataclass(frozen=True)
class _Figures:
    """The measured quantities of one table row; rows add up to the overall row."""

    requests: int
    tokens: int
    plain_s: float
    spec_s: float
    steps: int
    accepted: int
    drafted: int
    propose_s: float
    model_s: float
    identical: bool

    @classmethod
    def of(cls, r: CaseResult) -> _Figures:
        s = r.stats
        return cls(
            requests=1,
            tokens=r.tokens,
            plain_s=r.plain_s,
            spec_s=r.spec_s,
            steps=s.steps,
            accepted=s.accepted_tokens,
            drafted=s.drafted_tokens,
            propose_s=s.propose_time_s,
            model_s=s.prefill_time_s + s.verify_time_s,
            identical=r.identical,
        )

    def __add__(self, other: _Figures) -> _Figures:
        added = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self)
            if f.name != "identical"
        }
        return _Figures(**added, identical=self.identical and other.identical)

    def cells(self, name: str) -> list[str]:
        tokens, plain_s, spec_s = self.tokens, self.plain_s, self.spec_s
        return [
            name[:22],
            str(tokens),
            f"{tokens / plain_s:.1f}" if plain_s > 0 else "-",
            f"{tokens / spec_s:.1f}" if spec_s > 0 else "-",
            f"{plain_s / spec_s:.2f}x" if spec_s > 0 else "-",
            # after the prefill's first token, as RequestStats.tokens_per_step counts
            f"{(tokens - self.requests) / self.steps:.2f}" if self.steps else "1.00",
            f"{self.accepted / self.drafted:.0%}" if self.drafted else "-",
            f"{self.propose_s * 1e3:.1f}",
            f"{self.model_s * 1e3:.1f}",
            "yes" if self.identical else "NO",
        ]


def _first_difference(r: CaseResult, decode: Callable[[list[int]], str]) -> str:
    i = next((i for i, (a, b) in enumerate(zip(r.plain, r.spec, strict=False)) if a != b), None)
    if i is None:
        return f"  {r.name}: same tokens but lengths differ (plain {len(r.plain)}, suffixspec {len(r.spec)})"
    return (
        f"  {r.name}: first difference at generated token {i}: plain {r.plain[i]} "
        f"{decode([r.plain[i]])!r}, suffixspec {r.spec[i]} {decode([r.spec[i]])!r}"
    )


# --- command -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``suffixspec demo``."""
    add_model_argument(parser)
    parser.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N", help="tokens per prompt"
    )
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help="a text file of prompts separated by lines holding only '---' (default: built-in prompts)",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument("--show-text", action="store_true", help="print each prompt's generated text")
    parser.add_argument(
        "--max-spec-tokens",
        type=int,
        default=None,
        metavar="N",
        help="most draft tokens verified per step (default: suffixspec.SpecConfig's)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs the demo; returns the exit status (0: identical outputs, 1: a difference, 2: no model)."""
    if args.max_new_tokens < 1:
        print("suffixspec demo: --max-new-tokens must be at least 1", file=sys.stderr)
        return 2
    try:
        cases = read_prompts(args.prompts) if args.prompts else None
        model, tokenizer, description, shipped = _load(args)
    except (SuffixSpecError, OSError, ValueError) as exc:
        print(f"suffixspec demo: {exc}", file=sys.stderr)
        return 2
    if cases is None:
        cases = builtin_cases(shipped)

    import torch

    import suffixspec

    device = resolve_device(args.device)
    model.to(device)
    threads = ""
    if device.type == "cpu":
        # One thread: a 1M-parameter model's matrices are too small to share out (on a busy machine
        # spinning OpenMP workers make it an order of magnitude slower), and a fixed reduction order
        # makes every run print the same tokens.
        torch.set_num_threads(1)
        threads = " (1 thread)"
    spec_tokens = (
        args.max_spec_tokens if args.max_spec_tokens is not None else suffixspec.SpecConfig().max_spec_tokens
    )
    runner = _Runner(model, tokenizer, device, args.max_new_tokens, spec_tokens)
    if runner.prompt_limit is not None and runner.prompt_limit < 1:
        print(
            f"suffixspec demo: --max-new-tokens {args.max_new_tokens} leaves no room for a prompt",
            file=sys.stderr,
        )
        return 2

    print("suffixspec demo: speculative decoding with suffix trees vs plain greedy decoding")
    print(description)
    print(
        f"device: {device}{threads}; greedy; up to {args.max_new_tokens} new tokens per prompt; "
        "one SuffixCache shared by all prompts in order"
    )
    print()
    runner.warm_up(cases[0].build({}) if args.prompts else _ACCESSORS)
    cache = suffixspec.SuffixCache()
    done: dict[str, str] = {}
    results = []
    print(_row([name for name, _, _ in _COLUMNS]))
    for case in cases:
        result = runner.run(case, done, cache)
        results.append(result)
        print(_row(_Figures.of(result).cells(result.name)), flush=True)
    print(_row(["-" * width for _, width, _ in _COLUMNS]))
    overall = functools.reduce(operator.add, map(_Figures.of, results))
    print(_row(overall.cells("overall")))
    print()
    print(
        "tok/step: tokens emitted per model forward pass (plain decoding: 1.00); accepted: share of "
        "drafted tokens the model confirmed; propose ms / model ms: time suffixspec spent drafting / "
        "running the model."
    )

    if args.show_text:
        for result in results:
            print(f"\n===== {result.name}: suffixspec's output =====")
            print(tokenizer.decode(result.spec, skip_special_tokens=True))

    different = [r for r in results if not r.identical]
    if different:
        print(f"\nFAIL: {len(different)} of {len(results)} outputs differ from plain greedy decoding:")
        for r in different:
            print(_first_difference(r, tokenizer.decode))
        return 1
    plain_s = sum(r.plain_s for r in results)
    spec_s = sum(r.spec_s for r in results)
    print(
        f"\nAll {len(results)} outputs are IDENTICAL token for token to plain greedy decoding; "
        f"suffixspec took {spec_s:.2f} s vs {plain_s:.2f} s ({plain_s / spec_s:.2f}x)."
    )
    if args.model is None:
        print(
            "Note: a model this small soon repeats itself, and repetition is what suffix trees draft "
            "best; expect smaller speedups from real models (--model PATH)."
        )
    return 0
