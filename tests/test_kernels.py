"""Tree attention on the CPU: the plan, the torch reference (vs a naive per-request oracle), the
transformers integration, KV compaction, and the unavailability of the CUDA path here."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import suffixspec
from suffixspec import kernels
from suffixspec.errors import (
    DTypeError,
    IncompatibleModelError,
    InvalidParameterError,
    KernelUnavailableError,
)
from suffixspec.kernels import cuda_backend, integration, reference
from test_kernels_support import (
    TREE_SHAPES,
    block_visibility,
    naive_tree_attention,
    random_parents,
    random_validity,
    tree_batch_mask,
)

transformers = pytest.importorskip("transformers")


# ---- plan ---------------------------------------------------------------------------------------


@settings(max_examples=40)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 100), st.integers(0, 2**32 - 1))
def test_pack_bits_matches_numpy_packbits(a, b, length, seed):
    mask = np.random.default_rng(seed).random((a, b, length)) < 0.5
    packed = kernels.pack_bits(torch.from_numpy(mask)).numpy()
    words = (length + 31) // 32
    assert packed.shape == (a, b, words) and packed.dtype == np.int32
    padded = np.zeros((a, b, words * 32), dtype=bool)
    padded[..., :length] = mask
    expected = np.packbits(padded, axis=-1, bitorder="little").view("<u4")
    assert np.array_equal(packed.view(np.uint32), expected)


def test_plan_tree_bits_agree_with_the_token_tree_builder():
    rng = np.random.default_rng(3)
    trees = [
        suffixspec.TokenTree(list(range(10, 10 + size)), random_parents(rng, size, shape))
        for size, shape in [(5, "random"), (0, "empty"), (70, "random"), (9, "chain")]
    ]
    _, _, mask, _ = suffixspec._native.build_tree_batch(trees, [4, 0, 9, 2], [1, 2, 3, 4])
    step = kernels.plan(tree_mask=torch.from_numpy(mask))
    n = mask.shape[1]
    assert step.tree_bits.shape == (4, n, (n + 31) // 32)
    for b, tree in enumerate(trees):
        assert np.array_equal(mask[b], block_visibility(list(tree.parents), n))
        # Node rows of the block are the tree's own ancestor rows shifted by the root.
        size = len(tree)
        if size:
            own = tree.ancestor_mask()
            assert np.array_equal(mask[b, 1 : size + 1, 1 : size + 1], own)
        bits = step.tree_bits[b].numpy().view(np.uint32)
        for i in range(n):
            row = [(int(bits[i, j // 32]) >> (j % 32)) & 1 for j in range(n)]
            assert row == mask[b, i].astype(int).tolist()


def test_plan_valid_lens_combine_kv_valid_and_prefix_lens():
    kv_valid = torch.tensor([[False, False, True, False, True], [True] * 5, [False] * 5])
    step = kernels.plan(tree_mask=torch.ones(3, 2, 2, dtype=torch.bool), kv_valid=kv_valid)
    assert step.valid_lens.tolist() == [3, 5, 0]  # from the first valid position to the end
    assert step.prefix_capacity == 5
    both = kernels.plan(
        tree_mask=torch.ones(3, 2, 2, dtype=torch.bool),
        kv_valid=kv_valid,
        prefix_lens=torch.tensor([5, 2, 4]),
    )
    assert both.valid_lens.tolist() == [3, 2, 0]
    dense = both.dense_mask(5)
    assert dense.shape == (3, 2, 7)
    assert dense[0, :, :5].tolist() == [[False, False, True, False, True]] * 2
    assert dense[1, :, :5].tolist() == [[False, False, False, True, True]] * 2
    assert not dense[2, :, :5].any() and dense[:, :, 5:].all()


def test_plan_rejects_bad_input():
    good = torch.ones(2, 3, 3, dtype=torch.bool)
    with pytest.raises(DTypeError):
        kernels.plan(tree_mask=good.int())
    with pytest.raises(DTypeError):
        kernels.plan(tree_mask=torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(DTypeError):
        kernels.plan(tree_mask=good, kv_valid=torch.ones(2, 5))
    with pytest.raises(InvalidParameterError):
        kernels.plan(tree_mask=good, kv_valid=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(InvalidParameterError):
        kernels.plan(tree_mask=good, prefix_lens=torch.tensor([1, 2, 3]))
    with pytest.raises(InvalidParameterError):
        kernels.plan(tree_mask=good, prefix_lens=torch.tensor([1, -1]))
    with pytest.raises(InvalidParameterError):
        kernels.plan(
            tree_mask=good, kv_valid=torch.ones(2, 5, dtype=torch.bool), prefix_lens=torch.tensor([6, 1])
        )
    with pytest.raises(DTypeError):
        kernels.plan(tree_mask=good, prefix_lens=torch.tensor([1.0, 2.0]))


# ---- reference vs the naive oracle ----------------------------------------------------------------


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 3),
    kv_heads=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 2, 4]),
    dim=st.sampled_from([8, 16]),
    t_prefix=st.integers(0, 40),
    shape=st.sampled_from(TREE_SHAPES),
    max_size=st.integers(0, 9),
    validity=st.sampled_from(["all", "lens", "holes", "both"]),
)
def test_reference_matches_naive_oracle(
    seed, batch, kv_heads, group, dim, t_prefix, shape, max_size, validity
):
    rng = np.random.default_rng(seed)
    parents = [random_parents(rng, int(rng.integers(0, max_size + 1)), shape) for _ in range(batch)]
    tree_mask = tree_batch_mask(parents)
    n = tree_mask.shape[1]
    kv_valid, prefix_lens, visible = random_validity(rng, batch, t_prefix, validity)
    gen = torch.Generator().manual_seed(seed % 2**31)
    # q in transformers' layout: a transposed view, not contiguous.
    q = torch.randn(batch, n, kv_heads * group, dim, generator=gen).transpose(1, 2)
    k = torch.randn(batch, kv_heads, t_prefix + n, dim, generator=gen)
    v = torch.randn(batch, kv_heads, t_prefix + n, dim, generator=gen)
    scale = float(rng.uniform(0.05, 0.5))

    step = kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid, prefix_lens=prefix_lens)
    got = reference.tree_attention(q, k, v, step, scale)
    expected = naive_tree_attention(q, k, v, tree_mask, visible, scale)
    assert got.shape == (batch, n, kv_heads * group, dim) and got.dtype == q.dtype
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # The same through a dense [B, n, T] mask, and through the dispatcher on the CPU.
    dense = torch.cat([visible[:, None, :].expand(batch, n, t_prefix), tree_mask], -1)
    torch.testing.assert_close(reference.tree_attention(q, k, v, dense, scale), got, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(kernels.tree_attention(q, k, v, step, scale), got, atol=0, rtol=0)


def test_reference_tree_only_mask_sees_the_whole_prefix_and_default_scale():
    gen = torch.Generator().manual_seed(0)
    tree_mask = tree_batch_mask([[-1, 0, 1], [-1, -1]])
    q = torch.randn(2, 4, 4, 16, generator=gen)
    k = torch.randn(2, 2, 7 + 4, 16, generator=gen)
    v = torch.randn(2, 2, 7 + 4, 16, generator=gen)
    expected = naive_tree_attention(q, k, v, tree_mask, torch.ones(2, 7, dtype=torch.bool), 16**-0.5)
    torch.testing.assert_close(
        reference.tree_attention(q, k, v, tree_mask).double(), expected, atol=1e-5, rtol=0
    )


def test_reference_rows_that_see_nothing_are_zero_not_nan():
    tree_mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    tree_mask[0, 1, 1] = True
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
    step = kernels.plan(tree_mask=tree_mask, kv_valid=torch.zeros(1, 2, dtype=torch.bool))
    out = reference.tree_attention(q, k, v, step)
    assert torch.isfinite(out).all()
    assert (out[0, 0] == 0).all() and (out[0, 2] == 0).all()
    torch.testing.assert_close(out[0, 1], v[0, 0, 3].expand(2, 8))  # one visible key: its value


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_half_precision_inputs_compute_in_fp32(dtype):
    gen = torch.Generator().manual_seed(1)
    tree_mask = tree_batch_mask([[-1, 0, 0, 1]])
    q = torch.randn(1, 4, 5, 64, generator=gen)
    k = torch.randn(1, 2, 30 + 5, 64, generator=gen)
    v = torch.randn(1, 2, 30 + 5, 64, generator=gen)
    step = kernels.plan(tree_mask=tree_mask)
    low = reference.tree_attention(q.to(dtype), k.to(dtype), v.to(dtype), step)
    assert low.dtype == dtype
    exact = naive_tree_attention(
        q.to(dtype), k.to(dtype), v.to(dtype), tree_mask, torch.ones(1, 30, dtype=torch.bool), 0.125
    )
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(low.double(), exact, atol=tol, rtol=0)


def test_reference_rejects_mismatched_shapes_and_plans():
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    step = kernels.plan(
        tree_mask=torch.ones(1, 3, 3, dtype=torch.bool), kv_valid=torch.ones(1, 6, dtype=torch.bool)
    )
    with pytest.raises(InvalidParameterError, match="prefix positions"):
        reference.tree_attention(q, k, v, step)  # kv_valid covers 6, the KV holds 7
    with pytest.raises(InvalidParameterError, match="batch"):
        reference.tree_attention(q, k, v, kernels.plan(tree_mask=torch.ones(1, 4, 4, dtype=torch.bool)))
    with pytest.raises(InvalidParameterError, match="multiple"):
        reference.tree_attention(
            torch.randn(1, 3, 3, 8), k, v, kernels.plan(tree_mask=torch.ones(1, 3, 3, dtype=torch.bool))
        )
    with pytest.raises(DTypeError):
        reference.tree_attention(q, k[..., :4], v, torch.ones(1, 3, 3, dtype=torch.bool))
    with pytest.raises(DTypeError):
        reference.tree_attention(q, k, v, torch.ones(1, 3, 3))
    with pytest.raises(InvalidParameterError):
        reference.tree_attention(q, k, v, torch.ones(1, 3, 5, dtype=torch.bool))


# ---- availability ---------------------------------------------------------------------------------


def test_availability_agrees_with_the_machine():
    reason = kernels.unavailable_reason()
    assert kernels.is_available() == (reason is None)
    if not torch.cuda.is_available():
        assert not kernels.is_available() and "CUDA" in reason
    assert not kernels.is_available("cpu")


def test_explicit_cuda_kernel_raises_a_clear_error_where_it_cannot_run():
    q, k, v = (
        torch.randn(1, 2, 2, 64).half(),
        torch.randn(1, 1, 6, 64).half(),
        torch.randn(1, 1, 6, 64).half(),
    )
    step = kernels.plan(tree_mask=torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(KernelUnavailableError):
        kernels.tree_attention(q, k, v, step, mode="cuda")  # CPU tensors: never a silent fallback
    with pytest.raises(KernelUnavailableError, match="CUDA tensors"):
        cuda_backend.tree_attention(q, k, v, step)
    with pytest.raises(InvalidParameterError):
        kernels.tree_attention(q, k, v, step, mode="gpu")
    torch.testing.assert_close(
        kernels.tree_attention(q, k, v, step, mode="auto"), reference.tree_attention(q, k, v, step)
    )


def test_importing_kernels_does_not_import_cupy(tmp_path):
    # A stand-in `cupy` that fails loudly if anything imports it.
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text("raise ImportError('planted cupy was imported')\n")
    script = textwrap.dedent(
        """
        import sys
        import suffixspec.kernels as kernels
        assert "cupy" not in sys.modules, "import suffixspec.kernels imported cupy"
        print(kernels.is_available())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # no GPU here, or the planted cupy fails to import


def test_launch_config_covers_the_prefix_with_aligned_chunks():
    for t_prefix in [1, 31, 32, 255, 1000, 4097, 32768]:
        for batch in [1, 4, 64]:
            for head_dim in (64, 128):
                for forced in (None, 1, 3, 1000):
                    cfg = cuda_backend.launch_config(
                        batch=batch, kv_heads=8, rows=260, t_prefix=t_prefix, head_dim=head_dim,
                        num_sms=132, num_splits=forced,
                    )  # fmt: skip
                    tile = cuda_backend.keys_per_tile(head_dim)
                    assert cfg.m_blocks == 5
                    assert cfg.chunk % tile == 0
                    assert (cfg.num_splits - 1) * cfg.chunk < t_prefix <= cfg.num_splits * cfg.chunk
                    assert 1 <= cfg.num_splits <= max(cuda_backend.MAX_SPLITS, forced or 0)
                    if forced is None and cfg.num_splits > 1:
                        assert cfg.chunk >= cuda_backend.MIN_CHUNK
    single = cuda_backend.launch_config(batch=1, kv_heads=8, rows=1, t_prefix=0, head_dim=128, num_sms=132)
    assert single.num_splits == 1
    # Batch 1 at a long prefix is split to fill the GPU; a big batch is not.
    small = cuda_backend.launch_config(
        batch=1, kv_heads=8, rows=65, t_prefix=32768, head_dim=128, num_sms=132
    )
    large = cuda_backend.launch_config(
        batch=64, kv_heads=8, rows=65, t_prefix=1024, head_dim=128, num_sms=132
    )
    assert small.num_splits > 8 and large.num_splits == 1


# ---- transformers integration (tiny random models, fp32 on the CPU) -----------------------------------


def tiny_llama(attn: str, kv_heads: int = 2, heads: int = 4, head_dim: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=heads * head_dim, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=256, attn_implementation=attn,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def verification_inputs(prompt_lens: list[int], all_parents: list[list[int]], seed: int = 0):
    """A prefilled left-padded DynamicCache plus one verification block: (cache, kwargs with
    input_ids / position_ids / 4D additive mask, tree_mask, kv_valid)."""
    gen = torch.Generator().manual_seed(seed)
    batch, width = len(prompt_lens), max(prompt_lens)
    pad = torch.tensor([[p < width - length for p in range(width)] for length in prompt_lens])
    kv_valid = ~pad
    ids = torch.randint(3, 128, (batch, width), generator=gen)
    tree_mask = tree_batch_mask(all_parents)
    n = tree_mask.shape[1]
    depth = torch.zeros(batch, n, dtype=torch.long)
    for b, parents in enumerate(all_parents):
        for node, parent in enumerate(parents):
            depth[b, node + 1] = 1 + (depth[b, parent + 1] if parent >= 0 else 0)
    positions = torch.tensor(prompt_lens)[:, None] + depth
    visible = torch.cat([kv_valid[:, None, :].expand(batch, n, width), tree_mask], -1)
    mask4d = torch.zeros(batch, 1, n, width + n).masked_fill(
        ~visible[:, None], torch.finfo(torch.float32).min
    )
    return (
        ids,
        kv_valid,
        tree_mask,
        {
            "input_ids": torch.randint(3, 128, (batch, n), generator=gen),
            "position_ids": positions,
            "attention_mask": mask4d,
        },
    )


def kv_arg(model, cache):
    """The KV cache under the model's own keyword (`cache` from transformers 5.24)."""
    from suffixspec.generation.compat import inspect_model

    return {inspect_model(model).cache_kwarg: cache}


def prefill(model, ids, kv_valid):
    cache = transformers.DynamicCache()
    positions = (kv_valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=kv_valid.long(), position_ids=positions, **kv_arg(model, cache))
    return cache


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_torch_mode_reproduces_the_models_own_tree_attention(attn, kv_heads):
    model = tiny_llama(attn, kv_heads)
    ids, kv_valid, tree_mask, step = verification_inputs([9, 5, 12], [[-1, 0, 0, 1, 2], [], [-1, -1, 1]])
    cache = prefill(model, ids, kv_valid)
    with torch.no_grad():
        own = model(**step, **kv_arg(model, copy.deepcopy(cache))).logits
        step_plan = kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid)
        with kernels.attention_context(model, "torch") as backend:
            assert backend == "torch"
            assert model.config._attn_implementation == f"suffixspec_torch_{attn}"
            tree = model(**step, **kv_arg(model, copy.deepcopy(cache)), suffixspec_plan=step_plan).logits
            # Without a plan the model's own attention runs, bit for bit.
            deferred = model(**step, **kv_arg(model, copy.deepcopy(cache))).logits
    assert model.config._attn_implementation == attn
    torch.testing.assert_close(tree, own, atol=2e-5, rtol=1e-5)
    assert torch.equal(tree.argmax(-1), own.argmax(-1))
    assert torch.equal(deferred, own)


def test_context_prefill_without_plan_is_unchanged_and_restores_on_error():
    model = tiny_llama("sdpa")
    ids = torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with pytest.raises(RuntimeError, match="boom"), kernels.attention_context(model, "torch"):
            assert torch.equal(model(input_ids=ids).logits, before)
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_auto_mode_leaves_the_model_untouched_without_a_usable_kernel():
    model = tiny_llama("sdpa")
    with kernels.attention_context(model, "auto") as backend:
        assert backend is None  # fp32 on the CPU: the kernel cannot serve this model
        assert model.config._attn_implementation == "sdpa"
    assert kernels.resolve_mode(model, "torch") == "torch"


def test_cuda_mode_raises_kernel_unavailable_here():
    model = tiny_llama("sdpa")
    with pytest.raises(KernelUnavailableError, match="cannot run"), kernels.attention_context(model, "cuda"):
        pass
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(InvalidParameterError), kernels.attention_context(model, "fast"):
        pass


def test_cuda_mode_routes_planned_calls_to_the_kernel(monkeypatch):
    # Stand in for a GPU: the machine "can run" the kernel, whose launcher is replaced by the
    # reference; this checks the dispatch, not the kernel.
    monkeypatch.setattr(integration, "unavailable_reason", lambda device=None: None)
    calls = []

    def fake_kernel(q, k, v, tree_plan, scale):
        calls.append(tree_plan)
        return reference.tree_attention(q, k, v, tree_plan, scale)

    monkeypatch.setattr(cuda_backend, "tree_attention", fake_kernel)
    model = tiny_llama("sdpa", kv_heads=1, heads=2, head_dim=64).to(torch.bfloat16)
    ids, kv_valid, tree_mask, step = verification_inputs([6, 3], [[-1, 0], [-1]])
    step["attention_mask"] = step["attention_mask"].to(torch.bfloat16)
    cache = prefill(model, ids, kv_valid)
    step_plan = kernels.plan(tree_mask=tree_mask, kv_valid=kv_valid)
    assert kernels.resolve_mode(model, "auto") == "cuda"
    with torch.no_grad(), kernels.attention_context(model, "auto") as backend:
        assert backend == "cuda"
        model(input_ids=ids[:, :2])  # no plan: the model's own attention
        assert not calls
        model(**step, **kv_arg(model, cache), suffixspec_plan=step_plan)
    assert calls == [step_plan] * model.config.num_hidden_layers
    # A model the kernel cannot serve: auto leaves it alone, cuda says why.
    model.float()
    assert kernels.resolve_mode(model, "auto") is None
    with pytest.raises(KernelUnavailableError, match="float32"), kernels.attention_context(model, "cuda"):
        pass


def test_models_tree_attention_cannot_reproduce_are_refused_or_left_alone():
    torch.manual_seed(0)
    sliding = transformers.MistralForCausalLM(
        transformers.MistralConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
        )
    )  # fmt: skip
    with pytest.raises(IncompatibleModelError, match="sliding"), kernels.attention_context(sliding, "torch"):
        pass
    with kernels.attention_context(sliding, "auto") as backend:
        assert backend is None
    with pytest.raises(IncompatibleModelError), kernels.attention_context(torch.nn.Linear(2, 2), "torch"):
        pass


# ---- KV compaction ------------------------------------------------------------------------------


def test_compact_kv_gathers_accepted_positions_in_every_layer():
    gen = torch.Generator().manual_seed(2)
    cache = transformers.DynamicCache()
    originals = []
    for layer in range(3):
        keys, values = torch.randn(2, 2, 12, 4, generator=gen), torch.randn(2, 2, 12, 4, generator=gen)
        cache.update(keys.clone(), values.clone(), layer)
        originals.append((keys, values))
    src = torch.tensor([[8, 9, 11], [8, 10, 10]])  # tree block at [8, 12): accepted nodes
    kernels.compact_kv(cache, src, 8)
    for layer, (keys, values) in enumerate(originals):
        got_k, got_v = cache.layers[layer].keys, cache.layers[layer].values
        assert got_k.shape == (2, 2, 11, 4)
        assert torch.equal(got_k[:, :, :8], keys[:, :, :8]) and torch.equal(got_v[:, :, :8], values[:, :, :8])
        for b in range(2):
            assert torch.equal(got_k[b, :, 8:], keys[b][:, src[b]])
            assert torch.equal(got_v[b, :, 8:], values[b][:, src[b]])
    assert cache.get_seq_length() == 11


def test_compact_kv_rejects_bad_input_and_changes_nothing():
    cache = transformers.DynamicCache()
    for layer in range(2):
        cache.update(torch.randn(1, 1, 6, 2), torch.randn(1, 1, 6, 2), layer)
    before = [layer.keys.clone() for layer in cache.layers]
    with pytest.raises(InvalidParameterError):
        kernels.compact_kv(cache, torch.tensor([[4, 6]]), 4)  # position 6 does not exist
    with pytest.raises(InvalidParameterError):
        kernels.compact_kv(cache, torch.tensor([[1, 2, 3]]), 4)  # destination past the end
    with pytest.raises(DTypeError):
        kernels.compact_kv(cache, torch.tensor([[1.0]]), 4)
    with pytest.raises(IncompatibleModelError):
        kernels.compact_kv(object(), torch.tensor([[1]]), 0)
    assert all(torch.equal(layer.keys, old) for layer, old in zip(cache.layers, before, strict=True))
