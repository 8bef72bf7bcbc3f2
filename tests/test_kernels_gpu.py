"""The CUDA tree-attention kernel against the torch reference, on a GPU (marker ``gpu``;
skipped with the reason where CUDA or CuPy is missing)."""

from __future__ import annotations

import copy
import itertools
import zlib

import numpy as np
import pytest
import torch

import suffixspec
from exactness import NEAR_TIE_ULPS, check_greedy_exactness
from suffixspec import kernels
from suffixspec.kernels import cuda_backend, reference
from test_kernels_support import random_parents, random_validity, tree_batch_mask

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not kernels.is_available(), reason=f"needs CUDA + CuPy: {kernels.unavailable_reason()}"
    ),
]

TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 2.5e-2}


def make_case(*, seed, dtype, dim, kv_heads, group, batch, t_prefix, shape, max_size, validity):
    rng = np.random.default_rng(seed)
    sizes = [max_size] + [int(rng.integers(0, max_size + 1)) for _ in range(batch - 1)]  # ragged trees
    parents = [random_parents(rng, size, shape) for size in sizes]
    tree_mask = tree_batch_mask(parents).cuda()
    n = tree_mask.shape[1]
    kv_valid, prefix_lens, _ = random_validity(rng, batch, t_prefix, validity)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, n, kv_heads * group, dim, generator=gen, device="cuda", dtype=dtype).transpose(
        1, 2
    )
    k = torch.randn(batch, kv_heads, t_prefix + n, dim, generator=gen, device="cuda", dtype=dtype)
    v = torch.randn(batch, kv_heads, t_prefix + n, dim, generator=gen, device="cuda", dtype=dtype)
    step = kernels.plan(
        tree_mask=tree_mask,
        kv_valid=None if kv_valid is None else kv_valid.cuda(),
        prefix_lens=None if prefix_lens is None else prefix_lens.cuda(),
    )
    return q, k, v, step


def assert_matches_reference(q, k, v, step, scale=None, **kwargs):
    batch, hq, n, dim = q.shape
    poisoned = torch.full((batch, n, hq, dim), float("nan"), dtype=q.dtype, device=q.device)
    got = cuda_backend.tree_attention(q, k, v, step, scale, out=poisoned, **kwargs)
    assert got is poisoned
    expected = reference.tree_attention(q, k, v, step, scale)
    assert got.shape == expected.shape and got.dtype == q.dtype
    assert torch.isfinite(got).all(), "an output element was never written (or is NaN)"
    tol = TOLERANCE[q.dtype]  # absolute, and relative to the value (outputs are rounded to q's dtype)
    excess = ((got.float() - expected.float()).abs() - tol * expected.float().abs()).max().item()
    assert excess <= tol, f"error exceeds {tol} + {tol} * |expected| by {excess - tol:.3g}"


CASES = [
    dict(batch=batch, t_prefix=t_prefix, shape=shape, max_size=size)
    for batch, t_prefix in [(1, 1), (1, 100), (1, 4097), (4, 0), (4, 333), (4, 2048), (16, 777)]
    for shape, size in [("chain", 16), ("star", 63), ("random", 64), ("random", 128), ("empty", 0)]
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize(
    ("dtype", "dim"), list(itertools.product([torch.float16, torch.bfloat16], [64, 128]))
)
def test_kernel_matches_reference(case, dtype, dim):
    for group, validity in [(1, "all"), (4, "holes"), (8, "both")]:
        seed = zlib.crc32(repr((case, dim, group)).encode())
        q, k, v, step = make_case(
            seed=seed, dtype=dtype, dim=dim, kv_heads=2, group=group, validity=validity, **case
        )
        assert_matches_reference(q, k, v, step)


@pytest.mark.parametrize("num_splits", [1, 2, 7, 64])
@pytest.mark.parametrize("validity", ["all", "lens", "holes", "both"])
def test_forced_split_counts_agree(num_splits, validity):
    q, k, v, step = make_case(
        seed=num_splits, dtype=torch.bfloat16, dim=128, kv_heads=4, group=4, batch=3,
        t_prefix=1500, shape="random", max_size=40, validity=validity,
    )  # fmt: skip
    assert_matches_reference(q, k, v, step, 0.07, num_splits=num_splits)


@pytest.mark.parametrize("dim", [64, 128])
def test_long_prefix_at_batch_one(dim):
    q, k, v, step = make_case(
        seed=dim, dtype=torch.float16, dim=dim, kv_heads=8, group=4, batch=1,
        t_prefix=32768, shape="random", max_size=64, validity="all",
    )  # fmt: skip
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    cfg = cuda_backend.launch_config(
        batch=1, kv_heads=8, rows=4 * 65, t_prefix=32768, head_dim=dim, num_sms=sms
    )
    assert cfg.num_splits > 1
    assert_matches_reference(q, k, v, step)


def test_unaligned_views_and_a_side_stream():
    q, k, v, step = make_case(
        seed=5, dtype=torch.float16, dim=64, kv_heads=2, group=2, batch=2,
        t_prefix=301, shape="chain", max_size=9, validity="lens",
    )  # fmt: skip
    # A KV view starting one element in: misaligned rows force the aligned-copy path.
    k_big = torch.zeros(k.numel() + 1, dtype=k.dtype, device="cuda")
    k_big[1:] = k.flatten()
    k_view = k_big[1:].view(k.shape)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = cuda_backend.tree_attention(q, k_view, v, step)
    stream.synchronize()
    torch.testing.assert_close(got, cuda_backend.tree_attention(q, k, v, step), atol=0, rtol=0)
    assert_matches_reference(q, k, v, step)


def test_queries_that_see_nothing_output_zeros():
    tree_mask = torch.zeros(1, 3, 3, dtype=torch.bool, device="cuda")
    tree_mask[0, 1, 1] = True
    q = torch.randn(1, 2, 3, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(1, 1, 40, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(1, 1, 40, 64, device="cuda", dtype=torch.float16)
    step = kernels.plan(tree_mask=tree_mask, kv_valid=torch.zeros(1, 37, dtype=torch.bool, device="cuda"))
    for splits in (1, 2):
        out = cuda_backend.tree_attention(q, k, v, step, num_splits=splits)
        assert (out[0, 0] == 0).all() and (out[0, 2] == 0).all()
        torch.testing.assert_close(out[0, 1], v[0, 0, 38].expand(2, 64))


# ---- inside a model ------------------------------------------------------------------------------


def tiny_llama_fp16():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=None,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # well separated logits: greedy choices are robust to rounding
        model.lm_head.weight.mul_(8.0)
    return model.to("cuda", torch.float16).eval()


def test_cuda_mode_matches_the_models_own_attention():
    transformers = pytest.importorskip("transformers")
    model = tiny_llama_fp16()
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(3, 256, (2, 300), generator=gen, device="cuda")
    cache = transformers.DynamicCache()
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache)
    tree_mask = tree_batch_mask([[-1, 0, 1, 0, -1], [-1, -1, 1]]).cuda()
    n = tree_mask.shape[1]
    visible = torch.cat([torch.ones(2, n, 300, dtype=torch.bool, device="cuda"), tree_mask], -1)
    mask4d = torch.zeros(2, 1, n, 300 + n, dtype=torch.float16, device="cuda")
    mask4d.masked_fill_(~visible[:, None], torch.finfo(torch.float16).min)
    step = dict(
        input_ids=torch.randint(3, 256, (2, n), generator=gen, device="cuda"),
        position_ids=300 + torch.arange(n, device="cuda").expand(2, n),
        attention_mask=mask4d,
    )
    with torch.no_grad():
        own = model(**step, past_key_values=copy.deepcopy(cache)).logits
        with kernels.attention_context(model, "cuda") as backend:
            assert backend == "cuda"
            step_plan = kernels.plan(tree_mask=tree_mask)
            tree = model(**step, past_key_values=copy.deepcopy(cache), suffixspec_plan=step_plan).logits
    relative = ((tree.float() - own.float()).abs().max() / own.float().abs().max()).item()
    assert relative < 0.02, relative
    assert (tree.argmax(-1) == own.argmax(-1)).float().mean() > 0.9
    with kernels.attention_context(model, "auto") as backend:
        assert backend == "cuda"


def test_greedy_generate_with_the_kernel_equals_model_generate(monkeypatch):
    """Identical to plain fp16 `model.generate` except at near-ties (tests/exactness.py)."""
    model = tiny_llama_fp16()
    calls = []
    real = cuda_backend.tree_attention
    monkeypatch.setattr(cuda_backend, "tree_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 256, (length,), generator=gen).tolist() for length in (40, 13, 70)]
    outputs = []

    def run(prompts, max_new_tokens):
        cache = suffixspec.SuffixCache()
        kw = dict(max_new_tokens=max_new_tokens, cache=cache, attention="cuda", pad_token_id=0)
        suffixspec.generate(model, prompts, **kw)  # warm drafts
        outputs.append(suffixspec.generate(model, prompts, **kw))
        return outputs[-1].generated

    report = check_greedy_exactness(model, prompts, run, 48, pad_token_id=0)
    print(f"departures (all within {NEAR_TIE_ULPS} ulps): {report.departures}")
    report.assert_ok()
    assert report.checked_tokens == 3 * 48
    assert calls, "the kernel never ran"
    assert max(s.tokens_per_step for s in outputs[0].stats) > 1.5


def test_threads_sharing_a_model_on_the_kernel_do_not_interfere():
    """Two threads verify through the CUDA kernel on one model while a third decodes plainly:
    the attention switch is shared per model, so each gets what it gets alone."""
    import threading

    model = tiny_llama_fp16()
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 256, (length,), generator=gen).tolist() for length in (30, 11, 52)]
    kw = dict(max_new_tokens=32, attention="cuda", pad_token_id=0)
    alone = suffixspec.generate(model, prompts, **kw).generated
    plain = [
        model.generate(torch.tensor([p], device="cuda"), max_new_tokens=32, do_sample=False) for p in prompts
    ]
    barrier = threading.Barrier(3)
    results, errors = {"a": [], "b": [], "plain": []}, []

    def speculative(key):
        try:
            barrier.wait()
            for _ in range(3):
                results[key].append(suffixspec.generate(model, prompts, **kw).generated)
        except BaseException as exc:
            errors.append(exc)

    def plain_decoding():
        try:
            barrier.wait()
            for _ in range(3):
                results["plain"].append(
                    [
                        model.generate(torch.tensor([p], device="cuda"), max_new_tokens=32, do_sample=False)
                        for p in prompts
                    ]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=speculative, args=(k,)) for k in "ab"]
    threads.append(threading.Thread(target=plain_decoding))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(run == alone for key in "ab" for run in results[key])
    assert all(all(torch.equal(x, y) for x, y in zip(run, plain, strict=True)) for run in results["plain"])
    assert model.config._attn_implementation == "sdpa"
