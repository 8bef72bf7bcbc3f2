"""One vLLM run for the engine tests: `python vllm_run.py MODEL_DIR MODE OUT.json`.

MODE: `plain` (no speculation), `suffix` (speculative_config method "suffix": suffixspec when
SUFFIXSPEC_VLLM=1, vLLM's own arctic-inference proposer otherwise). Greedy, fp32, eager, on CPU.
Two passes over the same prompts in one engine: the second drafts from the first one's cached
responses. Writes the generated token ids of both passes and vLLM's spec-decode counters.

vLLM spawns processes: everything runs under the `__main__` guard.
"""

from __future__ import annotations

import json
import sys

PROMPTS = [
    # Agent-like: a tool-call protocol repeated turn after turn.
    "Thought: I should look at the failing test.\nAction: run_tests(path='tests/test_io.py')\n"
    "Observation: 1 failed\nThought: I should look at the failing test.\nAction: run_tests(",
    "{'tool': 'read_file', 'args': {'path': 'src/app.py'}}\n{'tool': 'read_file', 'args': {'path': "
    "'src/util.py'}}\n{'tool': 'read_file', 'args': {'path': '",
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n",
    "for i in range(10):\n    print(i)\nfor i in range(10):\n    print(",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "import os\nimport sys\n",
]
MAX_TOKENS = 48


def spec_counters(llm) -> dict[str, float]:
    counters: dict[str, float] = {}
    for metric in llm.get_metrics():
        if "spec_decode" in metric.name and hasattr(metric, "value"):
            counters[metric.name] = counters.get(metric.name, 0) + float(metric.value)
    return counters


def main(model_dir: str, mode: str, out: str) -> None:
    from vllm import LLM, SamplingParams

    kwargs = {}
    if mode == "suffix":
        kwargs["speculative_config"] = {"method": "suffix", "num_speculative_tokens": 8}
    elif mode != "plain":
        raise SystemExit(f"unknown mode {mode!r}")
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        gpu_memory_utilization=0.1,
        max_model_len=512,
        max_num_seqs=8,
        seed=0,
        disable_log_stats=False,
        **kwargs,
    )
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    passes = []
    for _ in range(2):
        outputs = llm.generate(PROMPTS, params, use_tqdm=False)
        passes.append([list(o.outputs[0].token_ids) for o in outputs])
    with open(out, "w") as f:
        json.dump({"passes": passes, "spec": spec_counters(llm)}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
