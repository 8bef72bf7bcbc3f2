"""End-to-end generation benchmark: `suffixspec.generate` vs plain `model.generate`.

Same model, same prompts, greedy decoding. Workloads:

* ``repetitive``: prompts from a real trace (default: Spider text-to-SQL; requests of one
  database share its schema) generated one after the other with one shared SuffixCache, so
  drafts come from the prompt and from earlier responses (the agentic effect);
* ``random-sampled``: prompts of random tokens, sampled at temperature 1 with a fresh cache per
  request: output that does not repeat, so drafts are rare and rarely accepted;
* ``no-draft``: the random prompts, greedy, with ``max_spec_tokens=0``: the loop's own overhead.

For each it reports tokens/s of both, the speedup, tokens per verification step, the share of
suffixspec's wall time spent outside the model's forward passes, and checks that both produce
the same tokens (lossless). The table is printed; ``--out FILE`` also writes it as JSON.

    ./dev bench bench_generate [--model PATH] [--requests 12] [--max-new-tokens 96] [--out r.json]

The model: ``--model PATH`` (a local transformers causal LM), else the built-in default model
(``suffixspec.default_model``, shipped in the package),
else a random-weight tiny Llama (token ids of the Llama-3 tokenizer folded into its vocabulary).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import suffixspec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKLOADS = ROOT.parent / "shared" / "workloads"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="local transformers causal LM directory")
    p.add_argument(
        "--random-model", action="store_true", help="a random tiny Llama instead of the default model"
    )
    p.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS, help="directory of *.jsonl traces")
    p.add_argument("--trace", default="text2sql_spider_dev", help="trace of the repetitive workload")
    p.add_argument("--requests", type=int, default=12, help="requests per workload")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-prompt-tokens", type=int, default=320, help="prompts keep their last N tokens")
    p.add_argument("--max-spec-tokens", type=int, default=suffixspec.SpecConfig().max_spec_tokens)
    p.add_argument("--repeats", type=int, default=3, help="runs per request; the fastest counts")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


# -- model and prompts ----------------------------------------------------------------------------
def load_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, description)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.model is not None:
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model)
        except (OSError, ValueError):
            tokenizer = None
        return model, tokenizer, str(args.model)
    if not args.random_model:
        from suffixspec.default_model import load_default_model

        model, tokenizer, _info = load_default_model()
        return model, tokenizer, "suffixspec default model (shipped)"
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=None,
    )
    return LlamaForCausalLM(config).eval(), None, "random tiny Llama (256 hidden, 4 layers, vocab 4096)"


def prompt_text(record: dict) -> str:
    prompt = record["prompt"]
    if isinstance(prompt, str):
        return prompt
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in prompt)


def trace_prompts(args: argparse.Namespace, model: Any, tokenizer: Any) -> list[list[int]]:
    path = args.workloads / f"{args.trace}.jsonl"
    records = []
    with path.open() as f:
        for line in f:
            records.append(json.loads(line))
            if len(records) == args.requests:
                break
    texts = [prompt_text(r) for r in records]
    vocab = model.get_input_embeddings().num_embeddings
    if tokenizer is not None:
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    else:  # a model without tokenizer: Llama-3 ids folded into its vocabulary
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.workloads / "tokenizers" / "llama3" / "tokenizer.json"))
        ids = [[t % vocab for t in tok.encode(text, add_special_tokens=False).ids] for text in texts]
    return [p[-args.max_prompt_tokens :] for p in ids]


def random_prompts(args: argparse.Namespace, model: Any, lengths: list[int]) -> list[list[int]]:
    vocab = model.get_input_embeddings().num_embeddings
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


# -- measurement ----------------------------------------------------------------------------------
@dataclass
class Row:
    workload: str
    requests: int
    new_tokens: int
    plain_tok_s: float
    spec_tok_s: float
    speedup: float
    tokens_per_step: float
    outside_model_share: float
    plain_outside_model_share: float
    mismatches: int


class ForwardTimer:
    """Time spent inside the model's forward calls, while enabled (plain generate's overhead
    share is measured in a separate, untimed pass: the hooks' syncs would slow it down)."""

    def __init__(self, model: Any):
        self.enabled = False
        self.total = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, *_: Any) -> None:
        if self.enabled:
            self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        if self.enabled:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.total += time.perf_counter() - self._start


def run_workload(
    name: str,
    model: Any,
    prompts: list[list[int]],
    args: argparse.Namespace,
    timer: ForwardTimer,
    *,
    shared_cache: bool,
    sample: bool = False,
    **spec_kw: Any,
) -> Row:
    """Each request runs plain and speculative generation alternately `--repeats` times (the
    fastest run of each counts), so that load on the machine affects both alike."""
    device = torch.device(args.device)
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=sample)
    cache = suffixspec.SuffixCache() if shared_cache else None
    plain_time = spec_time = forward = 0.0
    steps = emitted = new_tokens = mismatches = 0
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], device=device)
        plain_best = spec_best = float("inf")
        for rep in range(args.repeats):
            torch.manual_seed(i)
            t0 = time.perf_counter()
            plain = model.generate(ids, attention_mask=torch.ones_like(ids), **kw)[0, len(p) :].tolist()
            plain_best = min(plain_best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = suffixspec.generate(model, ids, cache=cache, seed=i if sample else None, **kw, **spec_kw)
            elapsed = time.perf_counter() - t0
            if elapsed < spec_best:
                spec_best, best = elapsed, res
            if cache is not None and rep < args.repeats - 1:
                # Repeats must not draft from their own earlier response: drop it again.
                cache.evict_cached_response(list(cache.cached_requests)[-1])
        plain_time += plain_best
        spec_time += spec_best
        forward += best.batch.forward_time_s
        steps += best.stats[0].steps
        emitted += best.stats[0].new_tokens - 1
        new_tokens += len(best.generated[0])
        mismatches += (not sample) and best.generated[0] != plain
    timer.enabled, timer.total = True, 0.0
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        torch.manual_seed(i)
        ids = torch.tensor([p], device=device)
        model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    plain_share = 1.0 - timer.total / (time.perf_counter() - t0)
    timer.enabled = False
    return Row(
        workload=name,
        requests=len(prompts),
        new_tokens=new_tokens,
        plain_tok_s=new_tokens / plain_time,
        spec_tok_s=new_tokens / spec_time,
        speedup=plain_time / spec_time,
        tokens_per_step=emitted / steps if steps else 1.0,
        outside_model_share=1.0 - forward / spec_time,
        plain_outside_model_share=plain_share,
        mismatches=int(mismatches),
    )


def print_table(rows: list[Row]) -> None:
    head = (
        "workload",
        "reqs",
        "tokens",
        "plain tok/s",
        "spec tok/s",
        "speedup",
        "tok/step",
        "outside%",
        "plain outside%",
        "mismatch",
    )
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(
            f"{r.workload} | {r.requests} | {r.new_tokens} | {r.plain_tok_s:.1f} | {r.spec_tok_s:.1f} | "
            f"{r.speedup:.2f}x | {r.tokens_per_step:.2f} | {100 * r.outside_model_share:.1f} | "
            f"{100 * r.plain_outside_model_share:.1f} | {r.mismatches}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, description = load_model(args)
    model = model.to(args.device)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None:
        args.max_prompt_tokens = min(args.max_prompt_tokens, max_pos - args.max_new_tokens)
    timer = ForwardTimer(model)
    repetitive = trace_prompts(args, model, tokenizer)
    random = random_prompts(args, model, [len(p) for p in repetitive])
    # Warm-up (allocator, kernels) outside the measurement.
    suffixspec.generate(model, random[0][:16], max_new_tokens=8)
    model.generate(torch.tensor([random[0][:16]], device=args.device), max_new_tokens=8, do_sample=False)

    spec = suffixspec.SpecConfig(max_spec_tokens=args.max_spec_tokens)
    rows = [
        run_workload(
            f"repetitive ({args.trace})", model, repetitive, args, timer, shared_cache=True, spec=spec
        ),
        run_workload(
            "random-sampled", model, random, args, timer, shared_cache=False, sample=True, spec=spec
        ),
        run_workload(
            "no-draft", model, random, args, timer, shared_cache=False, spec=spec.replace(max_spec_tokens=0)
        ),
    ]
    print(
        f"model: {description}; device {args.device}; threads {torch.get_num_threads()}; "
        f"max_new_tokens {args.max_new_tokens}; max_spec_tokens {args.max_spec_tokens}"
    )
    print_table(rows)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": description,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "max_new_tokens": args.max_new_tokens,
            "max_spec_tokens": args.max_spec_tokens,
            "rows": [asdict(r) for r in rows],
        }
        args.out.write_text(json.dumps(payload, indent=2))
    return 0 if all(r.mismatches == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
