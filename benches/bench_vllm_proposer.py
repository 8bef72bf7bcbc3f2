"""vLLM's suffix proposer: suffixspec's (suffixspec.integrations.vllm) vs vLLM's own on arctic-inference.

Both are built and called exactly as vLLM 0.32.0's model runner does (`Proposer(vllm_config)`,
then `propose(num_speculative_tokens, input_batch, sampled_token_ids)` once per engine step, with
an `InputBatch`-shaped batch: `req_ids`, `req_id_to_index`, `token_ids_cpu`, `num_prompt_tokens`,
`num_tokens_no_spec`), so each side's time includes everything it does per step, loops included.

Engine steps are replayed from real traces (`../shared/workloads`, tokenized with the Llama 3
tokenizer stored there) at C concurrent requests: each step every request is verified against its
real output (the longest draft prefix equal to it is accepted, plus the model's own token), a
finished request leaves the batch and the next one of the trace takes its slot. Each proposer runs
its own trajectory for the same number of steps, on the same requests in the same order.

Figures per concurrency: proposer time per step (wall and process CPU, mean), and tokens per
request-step (emitted tokens / request-steps). Target (not asserted): suffixspec <= 0.3x arctic's
time at 64+ requests, tokens per step >= arctic's.

Runs in the vLLM venv (it imports vLLM's proposer):

    ./dev bench-vllm [--workload NAME] [--concurrency 1,16,64,256] [--steps 200] [--drafter default]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from suffixspec.integrations.vllm import VllmSuffixProposer
from suffixspec.replay.tokenize import default_cache_dir, load_tokenizer, tokenize_trace
from suffixspec.replay.traces import read_trace

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKLOADS = ROOT.parent / "shared" / "workloads"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    p.add_argument("--workload", default="agentic_swe_minisweagent_deepseek-chat")
    p.add_argument("--limit", type=int, default=1500, help="requests read from the trace")
    p.add_argument("--concurrency", default="1,16,64,256")
    p.add_argument("--steps", type=int, default=200, help="engine steps per concurrency and proposer")
    p.add_argument("--max-tree-depth", type=int, default=24, help="vLLM's suffix_decoding_max_tree_depth")
    p.add_argument("--num-spec", type=int, default=24, help="vLLM's num_speculative_tokens")
    p.add_argument("--drafter", default="default", choices=("default", "arctic"), help="suffixspec's drafter")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    return p.parse_args(argv)


def vllm_config(args: argparse.Namespace, max_model_len: int) -> SimpleNamespace:
    return SimpleNamespace(
        speculative_config=SimpleNamespace(
            num_speculative_tokens=args.num_spec,
            suffix_decoding_max_tree_depth=args.max_tree_depth,
            suffix_decoding_max_cached_requests=10000,
            suffix_decoding_max_spec_factor=1.0,
            suffix_decoding_min_token_prob=0.1,
        ),
        model_config=SimpleNamespace(max_model_len=max_model_len),
    )


class Batch:
    """vLLM's InputBatch as the suffix proposers read it, maintained like the engine does."""

    def __init__(self, slots: int, max_model_len: int):
        self.token_ids_cpu = np.zeros((slots, max_model_len), dtype=np.int32)
        self.num_prompt_tokens = np.zeros(slots, dtype=np.int32)
        self.num_tokens_no_spec = np.zeros(slots, dtype=np.int32)
        self.req_ids: list[str] = []
        self.req_id_to_index: dict[str, int] = {}


def run(
    proposer: Any, requests: list[tuple[str, np.ndarray, np.ndarray]], slots: int, steps: int, num_spec: int
):
    max_len = max(len(p) + len(o) for _, p, o in requests) + num_spec + 2
    batch = Batch(slots, max_len)
    pending = iter(requests)
    live: list[tuple[str, np.ndarray, np.ndarray] | None] = [None] * slots
    done_out = [0] * slots  # output tokens emitted so far per slot
    sampled: list[list[int]] = [[] for _ in range(slots)]
    drafts: list[list[int]] = [[] for _ in range(slots)]
    wall = cpu = 0.0
    emitted = request_steps = drafted = 0
    for _ in range(steps):
        # Verify last step's drafts against the real outputs; refill finished slots.
        for s in range(slots):
            req = live[s]
            if req is not None:
                out = req[2]
                pos = done_out[s]
                draft = drafts[s]
                real = out[pos : pos + len(draft)]
                n = int(np.argmin(np.append(real == draft[: len(real)], False))) if len(draft) else 0
                take = out[pos : pos + n + 1]
                if len(take) == 0:
                    live[s] = None
                else:
                    length = int(batch.num_tokens_no_spec[s])
                    batch.token_ids_cpu[s, length : length + len(take)] = take
                    batch.num_tokens_no_spec[s] = length + len(take)
                    done_out[s] = pos + len(take)
                    sampled[s] = take.tolist()
                    emitted += len(take)
                    request_steps += 1
            if live[s] is None:
                nxt = next(pending, None)
                if nxt is None:
                    continue
                # The prefill (not timed, not counted) samples the first output token.
                live[s] = nxt
                prompt, first = nxt[1], int(nxt[2][0])
                batch.token_ids_cpu[s, : len(prompt)] = prompt
                batch.token_ids_cpu[s, len(prompt)] = first
                batch.num_prompt_tokens[s] = len(prompt)
                batch.num_tokens_no_spec[s] = len(prompt) + 1
                done_out[s] = 1
                sampled[s] = [first]
                drafts[s] = []
        active = [s for s in range(slots) if live[s] is not None]
        if not active:
            break
        batch.req_ids = [live[s][0] for s in active]  # type: ignore[index]
        batch.req_id_to_index = {r: i for i, r in enumerate(batch.req_ids)}
        view = SimpleNamespace(
            req_ids=batch.req_ids,
            req_id_to_index=batch.req_id_to_index,
            token_ids_cpu=batch.token_ids_cpu[active],
            num_prompt_tokens=batch.num_prompt_tokens[active],
            num_tokens_no_spec=batch.num_tokens_no_spec[active],
        )
        step_sampled = [sampled[s] for s in active]
        w0, c0 = time.perf_counter(), time.process_time()
        out = proposer.propose(num_spec, view, step_sampled, slot_mappings=None)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        for s, d in zip(active, out, strict=True):
            drafts[s] = list(d)
            drafted += len(d)
    return {
        "wall_ms_per_step": 1e3 * wall / steps,
        "cpu_ms_per_step": 1e3 * cpu / steps,
        "tokens_per_step": emitted / max(request_steps, 1),
        # Verification work: draft tokens the target model checks per request-step.
        "drafted_per_step": drafted / max(request_steps, 1),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["SUFFIXSPEC_VLLM_DRAFTER"] = args.drafter
    trace = read_trace(args.workloads / f"{args.workload}.jsonl", limit=args.limit)
    tokenizer = load_tokenizer(args.workloads / "tokenizers" / "llama3" / "tokenizer.json")
    tokens = tokenize_trace(trace, tokenizer, cache_dir=default_cache_dir())
    requests = [
        (f"req-{i}", np.asarray(p, dtype=np.int32), np.asarray(o, dtype=np.int32))
        for i, (p, o) in enumerate(zip(tokens.prompts(), tokens.outputs, strict=True))
        if len(o)
    ]
    max_model_len = max(len(p) + len(o) for _, p, o in requests) + args.num_spec + 2
    try:
        import arctic_inference.suffix_decoding  # noqa: F401
        from vllm.v1.spec_decode.suffix_decoding import SuffixDecodingProposer
    except ImportError as e:
        SuffixDecodingProposer = None
        print(f"vLLM's own suffix proposer unavailable ({e}): suffixspec only")
    rows = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        row: dict[str, Any] = {"concurrency": c}
        sides = {"suffixspec": VllmSuffixProposer}
        if SuffixDecodingProposer is not None:
            sides["vllm+arctic"] = SuffixDecodingProposer
        for name, cls in sides.items():
            proposer = cls(vllm_config(args, max_model_len))
            row[name] = run(proposer, requests, c, args.steps, args.num_spec)
        rows.append(row)
        print(json.dumps(row))
    lines = [
        f"workload {args.workload}, {args.steps} steps, depth {args.max_tree_depth}, "
        f"<= {args.num_spec} draft tokens, suffixspec drafter {args.drafter}",
        "",
        "| requests | suffixspec ms/step (cpu) | vLLM+arctic ms/step (cpu) | ratio (wall) "
        "| tok/step suffixspec | tok/step arctic | drafted/step suffixspec | drafted/step arctic |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s, a = row["suffixspec"], row.get("vllm+arctic")
        if a is None:
            lines.append(
                f"| {row['concurrency']} | {s['wall_ms_per_step']:.3f} ({s['cpu_ms_per_step']:.3f}) "
                f"| - | - | {s['tokens_per_step']:.2f} | - | {s['drafted_per_step']:.2f} | - |"
            )
            continue
        lines.append(
            f"| {row['concurrency']} | {s['wall_ms_per_step']:.3f} ({s['cpu_ms_per_step']:.3f}) | "
            f"{a['wall_ms_per_step']:.3f} ({a['cpu_ms_per_step']:.3f}) | "
            f"{s['wall_ms_per_step'] / a['wall_ms_per_step']:.2f} | {s['tokens_per_step']:.2f} | "
            f"{a['tokens_per_step']:.2f} | {s['drafted_per_step']:.2f} | {a['drafted_per_step']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"vllm_proposer_{args.workload}.md").write_text(table + "\n")
    (args.out / f"vllm_proposer_{args.workload}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
