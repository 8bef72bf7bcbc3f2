"""Tree-attention benchmark: the CUDA kernel vs torch SDPA with a materialised mask (GPU only).

Kernel level: for each batch size and prefix length, one verification step of a 64-node tree
(65 queries per request with the root) in one attention layer (default: 32 query heads, 8 KV
heads, head dim 128, bf16). Reports the median time of the kernel and of
``scaled_dot_product_attention`` with a materialised bool mask, and the kernel's achieved KV
bandwidth (KV bytes read / time) as a share of the device's peak (H100 SXM 3.35 TB/s, H200
4.8 TB/s; ``--peak-tbps`` overrides). L2 is flushed before every timed call.

Model level (``--model``): a random-weight Llama built from a config (no download) on the GPU;
the time of a verification forward pass of a 64-node tree (through the kernel) over the time of
a single-token decode step, both on the same prefilled KV cache. Target: <= 1.3x.

    ./dev bench bench_tree_attention [--batch 1,8,64] [--prefix 1024,4096,32768] [--model 1b]
        [--out results.json]

Without a CUDA GPU with CuPy it says why and exits (status 0; ``--out`` records the reason).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from roofline import nominal, weight_read_s
from suffixspec import kernels
from suffixspec.kernels import cuda_backend
from timing import CudaTimer

MODELS = {  # Llama-3-like shapes (random weights)
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128),
}  # fmt: skip


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=ints, default=[1, 8, 64], help="comma-separated batch sizes")
    p.add_argument("--prefix", type=ints, default=[1024, 4096, 16384, 32768], help="prefix lengths")
    p.add_argument("--nodes", type=int, default=64, help="draft nodes per tree (the root comes on top)")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128, choices=cuda_backend.SUPPORTED_HEAD_DIMS)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--iters", type=int, default=20, help="timed calls per point (median reported)")
    p.add_argument("--max-gib", type=float, default=24.0, help="skip points whose KV exceeds this")
    p.add_argument("--peak-tbps", type=float, help="device memory bandwidth (default: from the name)")
    p.add_argument("--model", choices=[*MODELS, "none"], default="1b", help="model-level check")
    p.add_argument("--model-batch", type=ints, default=[1, 8])
    p.add_argument("--model-prefix", type=ints, default=[1024, 4096])
    p.add_argument("--out", type=Path, help="write every number as JSON here")
    return p.parse_args(argv)


def peak_bandwidth(name: str, override: float | None) -> float | None:
    return override * 1e12 if override is not None else nominal(name)[0]


def four_chains(nodes: int) -> list[int]:
    """Parents of a draft tree of four chains under the root (-1)."""
    return [-1 if i < 4 else i - 4 for i in range(nodes)]


def tree_mask(batch: int, nodes: int) -> torch.Tensor:
    """bool [B, n, n] of the verification block (root first): root, self and ancestors."""
    n = nodes + 1
    mask = torch.eye(n, dtype=torch.bool)
    mask[:, 0] = True
    parents = four_chains(nodes)
    for i in range(nodes):
        j = parents[i]
        while j >= 0:
            mask[i + 1, j + 1] = True
            j = parents[j]
    return mask.expand(batch, n, n).contiguous().cuda()


def kernel_point(
    args: argparse.Namespace, timer: CudaTimer, batch: int, prefix: int, peak: float | None
) -> dict:
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    n = args.nodes + 1
    kv_len = prefix + n
    kv_bytes = 2 * batch * args.kv_heads * kv_len * args.head_dim * dtype.itemsize
    row: dict[str, Any] = {"batch": batch, "prefix": prefix, "kv_gib": kv_bytes / 2**30}
    if kv_bytes / 2**30 > args.max_gib:
        row["skipped"] = f"KV {kv_bytes / 2**30:.1f} GiB > --max-gib"
        return row
    q = torch.randn(batch, n, args.heads, args.head_dim, dtype=dtype, device="cuda").transpose(1, 2)
    k = torch.randn(batch, args.kv_heads, kv_len, args.head_dim, dtype=dtype, device="cuda")
    v = torch.randn_like(k)
    mask = tree_mask(batch, args.nodes)
    step = kernels.plan(tree_mask=mask)
    out = torch.empty(batch, n, args.heads, args.head_dim, dtype=dtype, device="cuda")
    row["kernel_s"] = timer(lambda: cuda_backend.tree_attention(q, k, v, step, out=out))
    row["kernel_tbps"] = kv_bytes / row["kernel_s"] / 1e12
    row["kernel_peak_share"] = None if peak is None else kv_bytes / row["kernel_s"] / peak
    rows = (args.heads // args.kv_heads) * n
    chosen = cuda_backend.default_candidate(  # what the call above ran (the tuned table's choice)
        paged=False, head_dim=args.head_dim, rows=rows, groups=batch * args.kv_heads, t_prefix=prefix
    )
    row["variant"] = chosen.variant
    row["splits"] = cuda_backend.launch_config(
        batch=batch, kv_heads=args.kv_heads, rows=rows, t_prefix=prefix, head_dim=args.head_dim,
        num_sms=torch.cuda.get_device_properties(0).multi_processor_count,
        num_splits=chosen.num_splits, variant=chosen.variant,
    ).num_splits  # fmt: skip
    dense = step.dense_mask(prefix)[:, None]  # [B, 1, n, T]
    try:
        row["sdpa_s"] = timer(
            lambda: torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=dense, enable_gqa=True
            )
        )
        row["speedup"] = row["sdpa_s"] / row["kernel_s"]
    except torch.OutOfMemoryError:
        row["sdpa_s"] = None
        row["speedup"] = None
    return row


def model_points(args: argparse.Namespace, timer: CudaTimer) -> list[dict]:
    import transformers

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    config = transformers.LlamaConfig(
        vocab_size=128256, max_position_embeddings=max(args.model_prefix) + args.nodes + 8,
        attn_implementation="sdpa", **MODELS[args.model],
    )  # fmt: skip
    torch.set_default_dtype(dtype)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    rows = [
        model_point(model, timer, batch, prefix, args.nodes)
        for batch in args.model_batch
        for prefix in args.model_prefix
    ]
    limit = weight_read_s(model, peak_bandwidth(torch.cuda.get_device_name(0), args.peak_tbps))
    for row in rows:
        row["model"] = args.model
        row["weight_read_s"] = limit  # the floor of any step of this model (benches/roofline.py)
    return rows


def model_point(model: Any, timer: CudaTimer, batch: int, prefix: int, nodes: int) -> dict:
    """Decode step vs verification step (kernel, and sdpa with a 4D mask) on one prefilled cache."""
    import transformers

    dtype, vocab, n = model.dtype, model.config.vocab_size, nodes + 1
    cache = transformers.DynamicCache()
    ids = torch.randint(0, vocab, (batch, prefix), device="cuda")
    with torch.no_grad():
        for start in range(0, prefix, 2048):  # chunked prefill bounds activation memory
            model(input_ids=ids[:, start : start + 2048], past_key_values=cache, logits_to_keep=1)
    one = torch.randint(0, vocab, (batch, 1), device="cuda")
    block = torch.randint(0, vocab, (batch, n), device="cuda")
    positions = prefix + torch.arange(n, device="cuda").expand(batch, n)
    step = kernels.plan(tree_mask=tree_mask(batch, nodes))
    visible = step.dense_mask(prefix)[:, None]
    additive = torch.zeros(visible.shape, dtype=dtype, device="cuda").masked_fill_(
        ~visible, torch.finfo(dtype).min
    )

    def decode() -> None:
        model(input_ids=one, past_key_values=cache)
        cache.crop(-1)

    def verify_kernel() -> None:
        model(input_ids=block, position_ids=positions, past_key_values=cache, suffixspec_plan=step)
        cache.crop(-n)

    def verify_sdpa() -> None:
        model(input_ids=block, position_ids=positions, past_key_values=cache, attention_mask=additive)
        cache.crop(-n)

    with torch.no_grad():
        sdpa_s = timer(verify_sdpa)
        with kernels.attention_context(model, "cuda"):  # calls without a plan run sdpa
            decode_s, verify_s = timer(decode), timer(verify_kernel)
    return {
        "batch": batch, "prefix": prefix, "decode_s": decode_s, "verify_s": verify_s,
        "verify_sdpa_s": sdpa_s, "ratio": verify_s / decode_s, "sdpa_ratio": sdpa_s / decode_s, "target": 1.3,
    }  # fmt: skip


def fmt(x: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if x is None else f"{x * scale:.{digits}g}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = kernels.unavailable_reason()
    if reason is not None:
        message = f"bench_tree_attention needs a CUDA GPU (sm_80+) with CuPy: {reason}"
        print(message, file=sys.stderr)
        if args.out:
            args.out.write_text(json.dumps({"skipped": message}, indent=2))
        return 0
    name = torch.cuda.get_device_name(0)
    peak = peak_bandwidth(name, args.peak_tbps)
    timer = CudaTimer(args.iters)
    kernel_rows = [kernel_point(args, timer, b, p, peak) for b in args.batch for p in args.prefix]
    model_rows = model_points(args, timer) if args.model != "none" else []

    print(f"device: {name}; peak bandwidth: {fmt(peak, 1e-12)} TB/s; {args.dtype}, {args.heads}/"
          f"{args.kv_heads} heads, head dim {args.head_dim}, {args.nodes}-node tree")  # fmt: skip
    print(f"{'batch':>5} {'prefix':>6} {'KV GiB':>7} {'splits':>6} {'kernel us':>9} {'TB/s':>6} "
          f"{'% peak':>6} {'sdpa us':>8} {'speedup':>7}")  # fmt: skip
    for r in kernel_rows:
        if "skipped" in r:
            print(f"{r['batch']:>5} {r['prefix']:>6} {r['kv_gib']:>7.2f}  skipped: {r['skipped']}")
            continue
        print(
            f"{r['batch']:>5} {r['prefix']:>6} {r['kv_gib']:>7.2f} {r['splits']:>6} "
            f"{fmt(r['kernel_s'], 1e6):>9} {fmt(r['kernel_tbps']):>6} {fmt(r['kernel_peak_share'], 100):>6} "
            f"{fmt(r['sdpa_s'], 1e6):>8} {fmt(r['speedup']):>7}"
        )
    if model_rows:
        print(f"\nmodel {args.model}: verification ({args.nodes}-node tree, kernel) vs single-token decode")
        limit = model_rows[0].get("weight_read_s")
        print(f"weight-read limit of a step: {fmt(limit, 1e3)} ms")
        print(f"{'batch':>5} {'prefix':>6} {'decode ms':>9} {'verify ms':>9} {'ratio':>6} {'sdpa ms':>8} "
              f"{'ratio':>6}  (kernel ratio target <= 1.3)")  # fmt: skip
        for r in model_rows:
            verdict = "ok" if r["ratio"] <= r["target"] else "MISSED"
            print(
                f"{r['batch']:>5} {r['prefix']:>6} {fmt(r['decode_s'], 1e3):>9} {fmt(r['verify_s'], 1e3):>9} "
                f"{r['ratio']:>6.2f} {fmt(r['verify_sdpa_s'], 1e3):>8} {r['sdpa_ratio']:>6.2f}  {verdict}"
            )
    if args.out:
        result = {"device": name, "peak_bytes_per_s": peak, "args": {**vars(args), "out": str(args.out)},
                  "kernel": kernel_rows, "model": model_rows}  # fmt: skip
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
