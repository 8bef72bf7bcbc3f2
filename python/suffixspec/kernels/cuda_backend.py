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
from suffixspec.errors import DTypeError, InvalidParameterError, KernelUnavailableError
from suffixspec.kernels.availability import require
from suffixspec.kernels.paged import PagedKV
from suffixspec.kernels.plan import TreeAttentionPlan
from suffixspec.kernels.reference import check_qkv
from suffixspec.kernels.tuned import nearest_point

__all__ = [
    "DEFAULT_VARIANT",
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "VARIANTS",
    "Candidate",
    "LaunchConfig",
    "attention_args",
    "default_candidate",
    "launch_config",
    "merge_args",
    "paged_tree_attention",
    "tree_attention",
    "tuning_candidates",
]

SOURCE_NAME = "tree_attention.cu"
# NVRTC defaults to C++17; CuPy adds the architecture (and -ftz=true) itself.
COMPILE_OPTIONS: tuple[str, ...] = ()
SUPPORTED_DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16"}
SUPPORTED_HEAD_DIMS = (64, 128)

# Must match cuda/tree_attention.cu.
MERGE_THREADS = 128
MERGE_ROWS_PER_BLOCK = MERGE_THREADS // 32


@dataclass(frozen=True)
class Variant:
    """One instantiation of the attention kernel: ``warps`` warps per block, 16 query rows
    (GQA heads x tree nodes) per warp; ``blocks_per_sm`` is the split-K default's occupancy aim;
    ``tile_elements`` = keys per KV tile x head dim; ``lean``: the lean kernel (cuda/README.md),
    whose two K and V tile stages live in dynamic shared memory."""

    name: str
    warps: int
    blocks_per_sm: int
    tile_elements: int = 4096
    lean: bool = False

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def rows_per_block(self) -> int:
        return 16 * self.warps

    def dynamic_smem_bytes(self, element_size: int = 2) -> int:
        """Dynamic shared memory per block: two stages of a K and a V tile (lean variants)."""
        return 2 * 2 * self.tile_elements * element_size if self.lean else 0


# w4: the kernel of the H200 evidence; w8: twice the rows per block (each KV tile fetched half as
# often); q4: w4 with Q in shared memory (32 fewer registers per thread for the S = Q K^T
# fragments) and XOR-swizzled, unpadded tiles (no bank conflicts); l4/l8: the lean kernel with
# 64-key tiles (at head dim 128) for the compute-bound regime (large trees or batches).
VARIANTS = {
    v.name: v
    for v in (
        Variant("w4", 4, 2),
        Variant("w8", 8, 1),
        Variant("q4", 4, 2),
        Variant("l4", 4, 2, tile_elements=8192, lean=True),
        Variant("l8", 8, 1, tile_elements=8192, lean=True),
    )
}
# The fallback where the tuned table (kernels.tuned) has no point for a layout.
DEFAULT_VARIANT = "w4"
# Split-K never goes below MIN_CHUNK keys per split, nor above MAX_SPLITS splits.
MIN_CHUNK = 256
MAX_SPLITS = 64


def keys_per_tile(head_dim: int, variant: str = DEFAULT_VARIANT) -> int:
    return _variant(variant).tile_elements // head_dim


@dataclass(frozen=True)
class LaunchConfig:
    """How one call is split: ``num_splits`` KV chunks of ``chunk`` prefix keys each."""

    m_blocks: int
    num_splits: int
    chunk: int
    variant: str = DEFAULT_VARIANT


@dataclass(frozen=True)
class Candidate:
    """One point of the autotuning space: a kernel variant and a forced split-K factor
    (None: the default heuristic)."""

    variant: str = DEFAULT_VARIANT
    num_splits: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"variant": self.variant, "num_splits": self.num_splits}


def launch_config(
    *,
    batch: int,
    kv_heads: int,
    rows: int,
    t_prefix: int,
    head_dim: int,
    num_sms: int,
    num_splits: int | None = None,
    variant: str = DEFAULT_VARIANT,
) -> LaunchConfig:
    """Chooses the split-K factor so that about the variant's ``blocks_per_sm`` blocks per SM
    run even at batch 1, without chunks shorter than ``MIN_CHUNK`` keys (or the query-row count,
    above which the fp32 partial outputs would cost more traffic than the KV they summarise).
    ``num_splits`` forces a factor (tests, autotuning)."""
    spec = _variant(variant)
    tile = keys_per_tile(head_dim, variant)
    m_blocks = max(1, -(-rows // spec.rows_per_block))
    if t_prefix <= 0:
        return LaunchConfig(m_blocks, 1, tile, variant)
    if num_splits is None:
        base = batch * kv_heads * m_blocks
        wanted = -(-spec.blocks_per_sm * num_sms // base)
        longest = -(-t_prefix // max(MIN_CHUNK, rows))
        num_splits = max(1, min(wanted, longest, MAX_SPLITS))
    num_splits = max(1, min(num_splits, -(-t_prefix // tile)))
    chunk = -(-t_prefix // num_splits)
    chunk = -(-chunk // tile) * tile  # tile-aligned chunks keep the bitmask words aligned
    return LaunchConfig(m_blocks, -(-t_prefix // chunk), chunk, variant)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise InvalidParameterError(f"unknown kernel variant {name!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[name]


def tuning_candidates(
    *, batch: int, kv_heads: int, rows: int, t_prefix: int, head_dim: int, num_sms: int
) -> list[Candidate]:
    """The autotuning space of one shape: every variant with its default split-K factor, no
    split, and the factors that fill 1, 2 and 4 whole waves of blocks on ``num_sms`` SMs
    (deduplicated by the launch they produce)."""
    seen: set[tuple[str, int, int]] = set()
    out: list[Candidate] = []
    for name, spec in VARIANTS.items():
        m_blocks = max(1, -(-rows // spec.rows_per_block))
        base = batch * kv_heads * m_blocks
        forced = [None, 1] + [max(1, (waves * spec.blocks_per_sm * num_sms) // base) for waves in (1, 2, 4)]
        for splits in forced:
            if splits is not None and splits > MAX_SPLITS:
                continue
            cfg = launch_config(
                batch=batch,
                kv_heads=kv_heads,
                rows=rows,
                t_prefix=t_prefix,
                head_dim=head_dim,
                num_sms=num_sms,
                num_splits=splits,
                variant=name,
            )
            key = (name, cfg.num_splits, cfg.chunk)
            if key not in seen:
                seen.add(key)
                out.append(Candidate(name, splits))
    return out


@functools.cache
def _cupy() -> Any:
    require()
    import cupy

    return cupy


@functools.cache
def _kernel(device_index: int, name: str, dynamic_smem: int = 0) -> Any:
    """The compiled entry point, its dynamic shared-memory limit raised to ``dynamic_smem``
    bytes where that exceeds the 48 KB default (CuPy's ``RawKernel.max_dynamic_shared_size_bytes``)."""
    cupy = _cupy()
    with cupy.cuda.Device(device_index):
        module = _module(device_index)
        try:
            function = module.get_function(name)
        except Exception as exc:  # NVRTC errors surface here, on first use
            raise KernelUnavailableError(
                f"compiling {SOURCE_NAME} for CUDA device {device_index} failed: {exc}"
            ) from exc
        if dynamic_smem > 48 * 1024:
            try:
                # CuPy's RawKernel sets cudaFuncAttributeMaxDynamicSharedMemorySize itself.
                function.max_dynamic_shared_size_bytes = dynamic_smem
            except Exception as exc:
                raise KernelUnavailableError(
                    f"{name} needs {dynamic_smem} bytes of shared memory per block on CUDA device "
                    f"{device_index}: {exc}"
                ) from exc
        return function


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
    cache: PagedKV | None = None,
) -> tuple[Any, ...]:
    """Arguments of ``suffixspec_tree_attention_*``, in the kernel's parameter order and types.
    Contiguous: ``k, v [B, Hkv, T, D]``. Paged (``cache`` given): ``k, v`` are its caches
    ``[num_blocks, block_size, Hkv, D]`` and ``t_prefix`` the longest context."""
    batch, hq, n, dim = q.shape
    scale = dim**-0.5 if scale is None else float(scale)
    i32, i64 = np.int32, np.int64
    if cache is None:
        hkv = k.shape[1]
        strides = (k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2))
        tables = lens = None
        bt_stride = block_size = 0
    else:  # (block, head, slot) strides in the kernel's (sb, sh, st) slots
        hkv = k.shape[2]
        strides = (k.stride(0), k.stride(2), k.stride(1), v.stride(0), v.stride(2), v.stride(1))
        tables, lens = cache.block_tables, cache.context_lens
        bt_stride, block_size = tables.stride(0), cache.block_size
    return (
        _ptr(q), i64(q.stride(0)), i64(q.stride(1)), i64(q.stride(2)),
        _ptr(k), i64(strides[0]), i64(strides[1]), i64(strides[2]),
        _ptr(v), i64(strides[3]), i64(strides[4]), i64(strides[5]),
        _ptr(tree_plan.tree_bits), _ptr(tree_plan.kv_bits), _ptr(tree_plan.valid_lens),
        _ptr(tables), i32(bt_stride), i32(block_size), _ptr(lens),
        _ptr(out), _ptr(part_o), _ptr(part_lse),
        i32(batch), i32(hq), i32(hkv), i32(n), i32(t_prefix),
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


def kernel_names(dtype: torch.dtype, head_dim: int, variant: str, paged: bool = False) -> tuple[str, str]:
    """(attention, merge) entry points of one dtype, head dim, variant and KV layout."""
    suffix = f"{SUPPORTED_DTYPES[dtype]}_d{head_dim}"
    layout = "_paged" if paged else ""
    return f"suffixspec_tree_attention_{variant}{layout}_{suffix}", f"suffixspec_merge_splits_{suffix}"


def _check_call(
    q: torch.Tensor, tree_plan: TreeAttentionPlan, out: torch.Tensor | None, kv_dtype: torch.dtype
) -> torch.Tensor:
    """Validates what both layouts share; returns ``out`` (allocated when None)."""
    batch, hq, n, dim = q.shape
    if q.device.type != "cuda":
        raise KernelUnavailableError(f"the CUDA tree-attention kernel needs CUDA tensors, got {q.device}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise DTypeError(f"the CUDA kernel supports float16 and bfloat16, got {q.dtype}")
    if kv_dtype != q.dtype:
        raise DTypeError(f"q and KV dtypes differ: {q.dtype}, {kv_dtype}")
    if dim not in SUPPORTED_HEAD_DIMS:
        raise DTypeError(f"the CUDA kernel supports head dims {SUPPORTED_HEAD_DIMS}, got {dim}")
    if not isinstance(tree_plan, TreeAttentionPlan):
        raise DTypeError(f"tree_plan must be a TreeAttentionPlan, got {type(tree_plan).__name__}")
    if out is None:
        return torch.empty(batch, n, hq, dim, dtype=q.dtype, device=q.device)
    if out.shape != (batch, n, hq, dim) or out.dtype != q.dtype or out.device != q.device:
        raise DTypeError(f"out must be a {q.dtype} [{batch}, {n}, {hq}, {dim}] tensor on {q.device}")
    if not out.is_contiguous() or out.data_ptr() % 4:
        raise DTypeError("out must be contiguous and 4-byte aligned")
    return out


def default_candidate(
    *, paged: bool, head_dim: int, rows: int, groups: int, t_prefix: int, num_splits: int | None = None
) -> Candidate:
    """The measured best of the nearest tuned shape (``kernels.tuned``); ``num_splits`` forces
    the split factor and keeps the tuned variant."""
    point = nearest_point(
        layout="paged" if paged else "contiguous",
        head_dim=head_dim,
        rows=rows,
        groups=groups,
        prefix=t_prefix,
    )
    if point is None or point.variant not in VARIANTS:
        return Candidate(DEFAULT_VARIANT, num_splits)
    return Candidate(point.variant, point.num_splits if num_splits is None else num_splits)


def _check_candidate(candidate: Candidate | None) -> None:
    """None means the tuned default, chosen at launch from the shape."""
    if candidate is None:
        return
    if not isinstance(candidate, Candidate):
        raise DTypeError(f"candidate must be a Candidate, got {type(candidate).__name__}")
    _variant(candidate.variant)


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_plan: TreeAttentionPlan,
    out: torch.Tensor,
    *,
    hkv: int,
    t_prefix: int,
    scale: float | None,
    candidate: Candidate | None,
    cache: PagedKV | None,
    num_splits: int | None = None,
) -> torch.Tensor:
    batch, hq, n, dim = q.shape
    device_index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    if candidate is None:
        candidate = default_candidate(
            paged=cache is not None,
            head_dim=dim,
            rows=(hq // hkv) * n,
            groups=batch * hkv,
            t_prefix=t_prefix,
            num_splits=num_splits,
        )
    cfg = launch_config(
        batch=batch,
        kv_heads=hkv,
        rows=(hq // hkv) * n,
        t_prefix=t_prefix,
        head_dim=dim,
        num_sms=_num_sms(device_index),
        num_splits=candidate.num_splits,
        variant=candidate.variant,
    )
    total_rows = batch * n * hq
    part_o = part_lse = None
    if cfg.num_splits > 1:
        part_o = torch.empty(cfg.num_splits, total_rows, dim, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(cfg.num_splits, total_rows, dtype=torch.float32, device=q.device)

    attention_name, merge_name = kernel_names(q.dtype, dim, cfg.variant, paged=cache is not None)
    spec = VARIANTS[cfg.variant]
    smem = spec.dynamic_smem_bytes()
    attention = _kernel(device_index, attention_name, smem)
    args = attention_args(
        q, k, v, tree_plan, out, part_o, part_lse, t_prefix=t_prefix, cfg=cfg, scale=scale, cache=cache
    )
    threads = spec.threads
    cupy = _cupy()
    stream = torch.cuda.current_stream(q.device)
    with cupy.cuda.Device(device_index), cupy.cuda.ExternalStream(stream.cuda_stream, device_index):
        attention((cfg.num_splits * cfg.m_blocks, hkv, batch), (threads, 1, 1), args, shared_mem=smem)
        if cfg.num_splits > 1:
            merge = _kernel(device_index, merge_name)
            grid = -(-total_rows // MERGE_ROWS_PER_BLOCK)
            merge((grid, 1, 1), (MERGE_THREADS, 1, 1), merge_args(part_o, part_lse, out, cfg))
    return out


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tree_plan: TreeAttentionPlan,
    scale: float | None = None,
    *,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    candidate: Candidate | None = None,
) -> torch.Tensor:
    """The CUDA kernel; same contract as :func:`suffixspec.kernels.reference.tree_attention`
    with a plan (fp16/bf16, head dim 64 or 128, CUDA tensors). Without ``candidate`` the variant
    and split-K factor are the tuned table's (``kernels.tuned``); ``num_splits`` forces the
    split-K factor of that variant; ``candidate`` picks the kernel variant and split factor at
    once (autotuning; overrides ``num_splits``); ``out`` (contiguous
    ``[B, n, Hq, D]``, ``q``'s dtype) receives the result instead of a new tensor."""
    batch, hq, n, _, hkv, kv_len = check_qkv(q, k, v)
    out = _check_call(q, tree_plan, out, k.dtype)
    _check_candidate(candidate)
    tree_plan = tree_plan.to(q.device)
    t_prefix = tree_plan.check_kv(batch, n, kv_len)
    if batch == 0 or n == 0 or hq == 0:
        return out
    q = _aligned(q, 2)  # 4-byte fragment loads
    k = _aligned(k, 8)  # 16-byte async copies
    v = _aligned(v, 8)
    return _launch(
        q,
        k,
        v,
        tree_plan,
        out,
        hkv=hkv,
        t_prefix=t_prefix,
        scale=scale,
        candidate=candidate,
        cache=None,
        num_splits=num_splits,
    )


def paged_tree_attention(
    q: torch.Tensor,
    cache: PagedKV,
    tree_plan: TreeAttentionPlan,
    scale: float | None = None,
    *,
    out: torch.Tensor | None = None,
    candidate: Candidate | None = None,
    max_context: int | None = None,
) -> torch.Tensor:
    """The CUDA kernel over the paged KV layout (``docs/paged_kv.md``); same contract as
    :func:`suffixspec.kernels.paged.tree_attention`. The plan carries only the tree mask (the
    prefix of request ``b`` is its ``context_lens[b]`` slots). ``max_context``: the longest
    context, when the caller knows it (the scheduler does): no host sync, so the call can be
    timed or captured in a CUDA graph; a context above it is clamped to it. Without it the
    context lengths are read and checked (a host sync)."""
    if not isinstance(cache, PagedKV):
        raise DTypeError(f"cache must be a PagedKV, got {type(cache).__name__}")
    if not isinstance(q, torch.Tensor) or q.ndim != 4:
        raise DTypeError("q must be a 4-D [B, Hq, n, D] tensor")
    batch, hq, n, dim = q.shape
    hkv = cache.kv_heads
    if cache.head_dim != dim or hkv == 0 or hq % hkv:
        raise InvalidParameterError(
            f"the paged cache has {hkv} KV heads of dim {cache.head_dim}; q has {hq} heads of dim {dim}"
        )
    if cache.key_cache.device != q.device:
        raise InvalidParameterError(f"q is on {q.device}, the paged cache on {cache.key_cache.device}")
    out = _check_call(q, tree_plan, out, cache.key_cache.dtype)
    if cache.key_cache.data_ptr() % 16 or cache.value_cache.data_ptr() % 16:
        raise DTypeError("the paged caches must start 16-byte aligned (the kernel copies 16-byte rows)")
    _check_candidate(candidate)
    if tree_plan.kv_valid is not None or tree_plan.prefix_lens is not None:
        raise InvalidParameterError("a paged step's plan must carry only the tree mask (see kernels.paged)")
    tree_plan = tree_plan.to(q.device)
    tree_plan.check_kv(batch, n, n)
    if max_context is None:
        t_prefix = cache.check(batch, n)
    else:
        t_prefix = int(max_context)
        needed = -(-(t_prefix + n) // cache.block_size)
        if t_prefix < 0 or cache.batch_size != batch or needed > cache.block_tables.shape[1]:
            raise InvalidParameterError(
                f"max_context {t_prefix} with {n} tree slots needs {needed} block-table columns for "
                f"{batch} requests; the cache has {cache.block_tables.shape[1]} for {cache.batch_size}"
            )
    if batch == 0 or n == 0 or hq == 0:
        return out
    q = _aligned(q, 2)
    tables = cache.block_tables.contiguous()
    cache = PagedKV(cache.key_cache, cache.value_cache, tables, cache.context_lens.contiguous())
    return _launch(
        q,
        cache.key_cache,
        cache.value_cache,
        tree_plan,
        out,
        hkv=hkv,
        t_prefix=t_prefix,
        scale=scale,
        candidate=candidate,
        cache=cache,
    )
