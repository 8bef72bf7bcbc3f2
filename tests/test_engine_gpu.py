"""The engine on a GPU through the CUDA tree-attention kernel's paged mode (marker ``gpu``;
skipped with the reason where CUDA or CuPy is missing): per layer the kernel path equals the torch
paged path within the kernel tests' tolerance, and greedy output equals plain ``model.generate``
(float32 exactly, through the torch path: the kernel is fp16/bf16 only; fp16/bf16 through the
kernel within the one near-tie criterion of ``tests/exactness.py``)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from exactness import check_greedy_exactness
from suffixspec import Engine, RequestParams, kernels
from suffixspec.engine import paged_attention as paged_attention_module
from suffixspec.engine.paged_attention import paged_attention
from suffixspec.engine.paged_cache import step_meta
from suffixspec.errors import KernelUnavailableError
from test_engine_paged_attention import MIXED_GROUP, build_step, random_rows
from test_kernels_paged_gpu import assert_close_to
from tiny_models import VOCAB, tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not kernels.is_available(), reason=f"needs CUDA + CuPy: {kernels.unavailable_reason()}"
    ),
]

CLASS = "LlamaForCausalLM"
NEW = 24


def _model(dtype: torch.dtype, head_dim: int = 64) -> torch.nn.Module:
    """The tests' tiny Llama with a head dim the kernel supports, on the GPU in ``dtype``."""
    return copy.deepcopy(tiny_model(CLASS, head_dim=head_dim)).to("cuda", dtype)


def _prompts(seed: int, count: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(count):
        n = int(rng.integers(3, 70))
        base = rng.integers(3, VOCAB, size=max(2, n // 3)).tolist()
        prompts.append((base * 3)[:n])  # repetitive: the prompt itself yields drafts
    return prompts


def _engine_run(model: torch.nn.Module, attention: str):
    """``run(prompts, new)`` of the exactness criterion: one engine per call, chunked prefill
    forced by a small token budget, so steps mix prefill chunks with decode trees."""

    def run(prompts: list[list[int]], new: int) -> list[list[int]]:
        engine = Engine(
            model, num_blocks=128, block_size=16, max_tokens_per_step=48, max_running=8, attention=attention
        )
        outputs = engine.generate(prompts, RequestParams(max_new_tokens=new))
        assert not engine.has_unfinished()
        return [out.token_ids for out in outputs]

    return run


@pytest.mark.parametrize(
    ("dtype", "dim"), list(itertools.product([torch.float16, torch.bfloat16], [64, 128]))
)
@pytest.mark.parametrize("seed", range(3))
def test_kernel_step_equals_the_torch_step(dtype: torch.dtype, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = MIXED_GROUP + random_rows(rng, 12, max_ctx=300, max_nodes=24)
    step = build_step(rows, seed=seed, block_size=16, dtype=dtype, dims=(8, 2, dim), device="cuda")
    meta = step_meta(*step.meta_args())
    expected = paged_attention(step.cache, meta, 0, step.query, step.key, step.value, None, "torch")
    got = paged_attention(step.cache, meta, 0, step.query, step.key, step.value, None, "cuda")
    assert_close_to(got, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_step_of_first_prefill_chunks_only(dtype: torch.dtype) -> None:
    # No context at all in the group (max_context 0): the kernel's prefix loop is empty.
    rows = [(0, 40, np.zeros(0, np.int64)), (0, 40, np.zeros(0, np.int64)), (0, 1, np.zeros(0, np.int64))]
    step = build_step(rows, seed=11, block_size=16, dtype=dtype, dims=(8, 2, 64), device="cuda")
    meta = step_meta(*step.meta_args())
    assert [g.max_context for g in meta.groups] == [0, 0]
    expected = paged_attention(step.cache, meta, 0, step.query, step.key, step.value, None, "torch")
    got = paged_attention(step.cache, meta, 0, step.query, step.key, step.value, None, "cuda")
    assert_close_to(got, expected)


def test_fp32_runs_the_torch_path_exactly_and_refuses_the_kernel() -> None:
    model = _model(torch.float32)
    with pytest.raises(KernelUnavailableError, match="float32"):
        Engine(model, num_blocks=16, attention="cuda")
    assert Engine(model, num_blocks=16).attention_backend == "torch"  # "auto"
    report = check_greedy_exactness(model, _prompts(1, 6), _engine_run(model, "auto"), NEW)
    assert not report.departures  # float32: no departure at all
    report.assert_ok()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("attention", ["cuda", "auto"])
def test_kernel_engine_greedy_is_exact_up_to_near_ties(dtype: torch.dtype, attention: str) -> None:
    model = _model(dtype)
    assert Engine(model, num_blocks=16, attention=attention).attention_backend == "cuda"
    report = check_greedy_exactness(model, _prompts(2, 6), _engine_run(model, attention), NEW)
    report.assert_ok()
    assert report.checked_tokens == 6 * NEW


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_layer_of_real_steps_matches_the_torch_path(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each attention call of real engine steps (chunked prefill, decode trees) runs both
    # backends on the same inputs and compares; the engine goes on with the kernel's output.
    compared = []

    def both(cache, meta, layer, query, key, value, scaling, backend="torch"):
        assert backend == "cuda"
        expected = paged_attention(cache, meta, layer, query, key, value, scaling, "torch")
        got = paged_attention(cache, meta, layer, query, key, value, scaling, "cuda")
        assert_close_to(got, expected)
        compared.append((layer, len(meta.groups)))
        return got

    monkeypatch.setattr(paged_attention_module, "paged_attention", both)
    model = _model(dtype, head_dim=128)
    _engine_run(model, "cuda")(_prompts(3, 8), 12)
    layers = model.config.num_hidden_layers
    assert {layer for layer, _ in compared} == set(range(layers))
    assert any(groups > 1 for _, groups in compared)  # steps with several query lengths ran
