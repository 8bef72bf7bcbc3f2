"""End-to-end check of `--speculative-algorithm SUFFIX` inside SGLang 0.5.23: needs a CUDA GPU
(SGLang's n-gram worker and tree reconstruction use its CUDA kernel package). Not run on CPU.

    pip install "sglang==0.5.23" && pip install -e .   # suffixspec, with its sglang.srt.plugins entry point
    python tests/integrations/sglang_e2e.py [MODEL_DIR]

Without MODEL_DIR a tiny random Llama (tests/integrations/tiny_llama.py) is built. Greedy fp32
outputs with SUFFIX speculation must equal plain decoding token for token over two passes (the
second drafts from the first's responses), and some draft tokens must be accepted. Exits non-zero
otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from vllm_run import MAX_TOKENS, PROMPTS


def generate(model: str, speculative: bool) -> tuple[list[list[list[int]]], float]:
    import sglang

    kwargs = {}
    if speculative:
        kwargs = {"speculative_algorithm": "SUFFIX", "speculative_num_draft_tokens": 8}
    engine = sglang.Engine(
        model_path=model, dtype="float32", mem_fraction_static=0.3, disable_cuda_graph=True, **kwargs
    )
    params = {"temperature": 0.0, "max_new_tokens": MAX_TOKENS, "ignore_eos": True}
    passes, verify_steps, tokens = [], 0, 0
    for _ in range(2):
        outputs = engine.generate(PROMPTS, params)
        passes.append([list(o["output_ids"]) for o in outputs])
        for o in outputs:
            meta = o["meta_info"]
            verify_steps += meta.get("spec_verify_ct", 0)
            tokens += meta["completion_tokens"]
    engine.shutdown()
    return passes, tokens / max(verify_steps, 1)


def main() -> int:
    if len(sys.argv) > 1:
        model = sys.argv[1]
    else:
        from tiny_llama import make_tiny_llama

        model = str(make_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama"))
    plain, _ = generate(model, speculative=False)
    spec, tokens_per_step = generate(model, speculative=True)
    same = plain == spec
    print(f"identical outputs: {same}; tokens per verification step with SUFFIX: {tokens_per_step:.2f}")
    return 0 if same and tokens_per_step > 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
