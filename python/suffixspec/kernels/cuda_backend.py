"""Launches the CUDA tree-attention kernels (``cuda/tree_attention.cu``) through CuPy.

The source is embedded in the native module, compiled by CuPy's NVRTC on first use once per
device (CuPy also caches the binary on disk), and launched on torch's current stream on the
tensors' own memory (raw device pointers: no copies, any dtype including bf16).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from suffixspec import _native
from suffixspec.errors import DTypeError, KernelUnavailableError
from suffixspec.kernels.availability import require
from suffixspec.kernels.plan import TreeAttentionPlan
from suffixspec.kernels.reference import check_qkv

__all__ = [
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "LaunchConfig",
    "attention_args",
    "launch_config",
    "merge_args",
    "tree_attention",
]

SOURCE_NAME = "tree_attention.cu"
# NVRTC defaults to C++17; CuPy adds the architecture (and -ftz=true) itself.
COMPILE_OPTIONS: tuple[str, ...] = ()
SUPPORTED_DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16"}
SUPPORTED_HEAD_DIMS = (64, 128)

# Must match cuda/tree_attention.cu.
THREADS = 128
ROWS_PER_BLOCK = 64  # query rows (GQA heads x tree nodes) per thread block
MERGE_ROWS_PER_BLOCK = THREADS // 32
# Split-K: aim for this many thread blocks per SM, never splitting below MIN_CHUNK keys.
BLOCKS_PER_SM = 2
MIN_CHUNK = 256
MAX_SPLITS = 64


def keys_per_tile(head_dim: int) -> int:
    return 4096 // head_dim


@dataclass(frozen=True)
class LaunchConfig:
    """How one call is split: ``num_splits`` KV chunks of ``chunk`` prefix keys each."""

    m_blocks: int
    num_splits: int
    chunk: int


def launch_config(
    *,
    batch: int,
    kv_heads: int,
    rows: int,
    t_prefix: int,
    head_dim: int,
    num_sms: int,
    num_splits: int | None = None,
) -> LaunchConfig:
    """Chooses the split-K factor so that about ``BLOCKS_PER_SM`` blocks per SM run even at
    batch 1, without chunks shorter than ``MIN_CHUNK`` keys (or the query-row count, above
    which the fp32 partial outputs would cost more traffic than the KV they summarise).
    ``num_splits`` forces a factor (tests)."""
    tile = keys_per_tile(head_dim)
    m_blocks = max(1, -(-rows // ROWS_PER_BLOCK))
    if t_prefix <= 0:
        return LaunchConfig(m_blocks, 1, tile)
    if num_splits is None:
        base = batch * kv_heads * m_blocks
        wanted = -(-BLOCKS_PER_SM * num_sms // base)
        longest = -(-t_prefix // max(MIN_CHUNK, rows))
        num_splits = max(1, min(wanted, longest, MAX_SPLITS))
    num_splits = max(1, min(num_splits, -(-t_prefix // tile)))
    chunk = -(-t_prefix // num_splits)
    chunk = -(-chunk // tile) * tile  # tile-aligned chunks keep the bitmask words aligned
    return LaunchConfig(m_blocks, -(-t_prefix // chunk), chunk)


@functools.cache
def _cupy() -> Any:
    require()
    import cupy

    return cupy


@functools.cache
def _kernel(device_index: int, name: str) -> Any:
    cupy = _cupy()
    with cupy.cuda.Device(device_index):
        module = _module(device_index)
        try:
            return module.get_function(name)
        except Exception as exc:  # NVRTC errors surface here, on first use
            raise KernelUnavailableError(
                f"compiling {SOURCE_NAME} for CUDA device {device_index} failed: {exc}"
            ) from exc


@functools.cache
def _module(device_index: int) -> Any:
    cupy = _cupy()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=_native.cuda_source(SOURCE_NAME), options=COMPILE_OPTIONS)


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _ptr(x: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if x is None else x.data_ptr())


def _aligned(x: torch.Tensor, elements: int) -> torch.Tensor:
    """``x`` itself when its rows are contiguous and every row start is aligned to
    ``elements`` elements (vector loads), else an aligned contiguous copy."""
    ok = (
        x.stride(-1) == 1
        and all(s % elements == 0 for s in x.stride()[:-1])
        and x.data_ptr() % (elements * x.element_size()) == 0
    )
    return x if ok else x.clone(memory_format=torch.contiguous_format)


def attention_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_plan: TreeAttentionPlan,
    out: torch.Tensor,
    part_o: torch.Tensor | None,
    part_lse: torch.Tensor | None,
    *,
    t_prefix: int,
    cfg: LaunchConfig,
    scale: float | None,
) -> tuple[Any, ...]:
    """Arguments of ``suffixspec_tree_attention_*``, in the kernel's parameter order and types."""
    batch, hq, n, dim = q.shape
    scale = dim**-0.5 if scale is None else float(scale)
    i32, i64 = np.int32, np.int64
    return (
        _ptr(q), i64(q.stride(0)), i64(q.stride(1)), i64(q.stride(2)),
        _ptr(k), i64(k.stride(0)), i64(k.stride(1)), i64(k.stride(2)),
        _ptr(v), i64(v.stride(0)), i64(v.stride(1)), i64(v.stride(2)),
        _ptr(tree_plan.tree_bits), _ptr(tree_plan.kv_bits), _ptr(tree_plan.valid_lens),
        _ptr(out), _ptr(part_o), _ptr(part_lse),
        i32(batch), i32(hq), i32(k.shape[1]), i32(n), i32(t_prefix),
        i32(tree_plan.tree_bits.shape[-1]),
        i32(0 if tree_plan.kv_bits is None else tree_plan.kv_bits.shape[-1]),
        i32(cfg.chunk), i32(cfg.num_splits), np.float32(scale * math.log2(math.e)),
    )  # fmt: skip


def merge_args(
    part_o: torch.Tensor | None, part_lse: torch.Tensor | None, out: torch.Tensor, cfg: LaunchConfig
) -> tuple[Any, ...]:
    """Arguments of ``suffixspec_merge_splits_*``, in the kernel's parameter order and types."""
    total_rows = out.shape[0] * out.shape[1] * out.shape[2]
    return (_ptr(part_o), _ptr(part_lse), _ptr(out), np.int64(total_rows), np.int32(cfg.num_splits))


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_plan: TreeAttentionPlan,
    scale: float | None = None,
    *,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CUDA kernel; same contract as :func:`suffixspec.kernels.reference.tree_attention`
    with a plan (fp16/bf16, head dim 64 or 128, CUDA tensors). ``num_splits`` forces the split-K
    factor (default: chosen to fill the GPU); ``out`` (contiguous ``[B, n, Hq, D]``, ``q``'s
    dtype) receives the result instead of a new tensor."""
    batch, hq, n, dim, hkv, kv_len = check_qkv(q, k, v)
    if q.device.type != "cuda":
        raise KernelUnavailableError(f"the CUDA tree-attention kernel needs CUDA tensors, got {q.device}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise DTypeError(f"the CUDA kernel supports float16 and bfloat16, got {q.dtype}")
    if dim not in SUPPORTED_HEAD_DIMS:
        raise DTypeError(f"the CUDA kernel supports head dims {SUPPORTED_HEAD_DIMS}, got {dim}")
    if not isinstance(tree_plan, TreeAttentionPlan):
        raise DTypeError(f"tree_plan must be a TreeAttentionPlan, got {type(tree_plan).__name__}")
    tree_plan = tree_plan.to(q.device)
    t_prefix = tree_plan.check_kv(batch, n, kv_len)

    if out is None:
        out = torch.empty(batch, n, hq, dim, dtype=q.dtype, device=q.device)
    elif out.shape != (batch, n, hq, dim) or out.dtype != q.dtype or out.device != q.device:
        raise DTypeError(f"out must be a {q.dtype} [{batch}, {n}, {hq}, {dim}] tensor on {q.device}")
    elif not out.is_contiguous() or out.data_ptr() % 4:
        raise DTypeError("out must be contiguous and 4-byte aligned")
    if batch == 0 or n == 0 or hq == 0:
        return out
    q = _aligned(q, 2)  # 4-byte fragment loads
    k = _aligned(k, 8)  # 16-byte async copies
    v = _aligned(v, 8)

    device_index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    rows = (hq // hkv) * n
    cfg = launch_config(
        batch=batch,
        kv_heads=hkv,
        rows=rows,
        t_prefix=t_prefix,
        head_dim=dim,
        num_sms=_num_sms(device_index),
        num_splits=num_splits,
    )
    total_rows = batch * n * hq
    part_o = part_lse = None
    if cfg.num_splits > 1:
        part_o = torch.empty(cfg.num_splits, total_rows, dim, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(cfg.num_splits, total_rows, dtype=torch.float32, device=q.device)

    suffix = f"{SUPPORTED_DTYPES[q.dtype]}_d{dim}"
    attention = _kernel(device_index, f"suffixspec_tree_attention_{suffix}")
    args = attention_args(q, k, v, tree_plan, out, part_o, part_lse, t_prefix=t_prefix, cfg=cfg, scale=scale)
    cupy = _cupy()
    stream = torch.cuda.current_stream(q.device)
    with cupy.cuda.Device(device_index), cupy.cuda.ExternalStream(stream.cuda_stream, device_index):
        attention((cfg.num_splits * cfg.m_blocks, hkv, batch), (THREADS, 1, 1), args)
        if cfg.num_splits > 1:
            merge = _kernel(device_index, f"suffixspec_merge_splits_{suffix}")
            grid = -(-total_rows // MERGE_ROWS_PER_BLOCK)
            merge((grid, 1, 1), (THREADS, 1, 1), merge_args(part_o, part_lse, out, cfg))
    return out
