"""Compile-checks the embedded CUDA sources with NVRTC, no GPU needed.

Every ``.cu`` file embedded in the native module is compiled for sm_80 and sm_90 (the kernels'
minimum and the target) with the same NVRTC that CuPy uses at run time, so syntax and type
errors, register spills and a launcher whose arguments disagree with a kernel's parameters are
caught on any machine with the ``nvidia-cuda-nvrtc`` wheel (a torch dependency).
"""

from __future__ import annotations

import functools
import re

import pytest
import torch

from suffixspec import _native, kernels
from suffixspec.kernels import cuda_backend, paged

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (NVRTC) is not installed")

ARCHS = ("sm_80", "sm_90")
ENTRY_POINTS = {
    name
    for dtype in (torch.float16, torch.bfloat16)
    for dim in (64, 128)
    for variant in cuda_backend.VARIANTS
    for paged in (False, True)
    for name in cuda_backend.kernel_names(dtype, dim, variant, paged)
}
PTX_PARAM_SIZES = {"u64": 8, "s64": 8, "b64": 8, "u32": 4, "s32": 4, "b32": 4, "f32": 4}


def _check(result: tuple, what: str) -> tuple:
    if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{what}: {result[0]}")
    return result[1:]


@functools.cache
def nvrtc_usable() -> str | None:
    try:
        _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except Exception as exc:  # the library itself is missing or unloadable
        return f"NVRTC cannot be loaded: {exc}"
    return None


@functools.cache
def compile_source(name: str, arch: str) -> tuple[bool, str, str]:
    """(success, compiler log, PTX) of one embedded source for one architecture."""
    source = _native.cuda_source(name).encode()
    (program,) = _check(nvrtc.nvrtcCreateProgram(source, name.encode(), 0, [], []), "create")
    try:
        # The options CuPy compiles with (it adds the architecture and -ftz=true), plus the
        # resource report.
        options = [
            f"--gpu-architecture={arch}".encode(),
            b"-ftz=true",
            *(o.encode() for o in cuda_backend.COMPILE_OPTIONS),
            b"--ptxas-options=-v",
        ]
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        (size,) = _check(nvrtc.nvrtcGetProgramLogSize(program), "log size")
        log = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(program, log), "log")
        ptx = ""
        if status == nvrtc.nvrtcResult.NVRTC_SUCCESS:
            (size,) = _check(nvrtc.nvrtcGetPTXSize(program), "PTX size")
            buffer = b" " * size
            _check(nvrtc.nvrtcGetPTX(program, buffer), "PTX")
            ptx = buffer.rstrip(b"\0").decode()
        return status == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.rstrip(b"\0").decode(), ptx
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def compiled(name: str, arch: str) -> tuple[str, str]:
    reason = nvrtc_usable()
    if reason is not None:
        pytest.skip(reason)
    ok, log, ptx = compile_source(name, arch)
    assert ok, f"NVRTC failed to compile {name} for {arch}:\n{log}"
    return log, ptx


def entry_params(ptx: str) -> dict[str, list[str]]:
    """PTX parameter types of each kernel entry point."""
    entries = {}
    for match in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.S):
        entries[match.group(1)] = re.findall(r"\.param\s+\.(\w+)", match.group(2))
    return entries


def test_the_tree_attention_source_is_embedded():
    assert "tree_attention.cu" in kernels.cuda_source_names()
    text = kernels.cuda_source("tree_attention.cu")
    assert all(name in text for name in ENTRY_POINTS)
    with pytest.raises(ValueError, match="no embedded CUDA source"):
        kernels.cuda_source("missing.cu")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", _native.cuda_source_names())
def test_sources_compile_without_spills(name, arch):
    log, ptx = compiled(name, arch)
    entries = entry_params(ptx)
    assert set(entries) >= ENTRY_POINTS, f"missing kernels: {sorted(ENTRY_POINTS - set(entries))}"
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert len(spills) >= len(ENTRY_POINTS), log
    assert all(stores == "0" and loads == "0" for stores, loads in spills), f"register spills:\n{log}"


def _sizes(args: tuple) -> list[int]:
    return [arg.itemsize for arg in args]


def test_launch_arguments_match_the_kernel_parameters():
    _, ptx = compiled("tree_attention.cu", "sm_90")
    entries = entry_params(ptx)
    q = torch.zeros(2, 8, 5, 64, dtype=torch.float16)
    k = v = torch.zeros(2, 2, 20, 64, dtype=torch.float16)
    step = kernels.plan(
        tree_mask=torch.ones(2, 5, 5, dtype=torch.bool),
        kv_valid=torch.ones(2, 15, dtype=torch.bool),
        prefix_lens=torch.tensor([15, 3]),
    )
    out = torch.empty(2, 5, 8, 64, dtype=torch.float16)
    cache = paged.random_paged_kv(2, 2, [15, 3], 5, 64, 16, dtype=torch.float16)
    tree_only = kernels.plan(tree_mask=torch.ones(2, 5, 5, dtype=torch.bool))
    for variant in cuda_backend.VARIANTS:
        cfg = cuda_backend.launch_config(
            batch=2, kv_heads=2, rows=20, t_prefix=15, head_dim=64, num_sms=132, variant=variant
        )
        contiguous = cuda_backend.attention_args(
            q, k, v, step, out, None, None, t_prefix=15, cfg=cfg, scale=None
        )
        paged_args = cuda_backend.attention_args(
            q, cache.key_cache, cache.value_cache, tree_only, out, None, None,
            t_prefix=15, cfg=cfg, scale=None, cache=cache,
        )  # fmt: skip
        merge = cuda_backend.merge_args(None, None, out, cfg)
        for dtype in (torch.float16, torch.bfloat16):
            for dim in (64, 128):
                attention_name, merge_name = cuda_backend.kernel_names(dtype, dim, variant)
                paged_name, _ = cuda_backend.kernel_names(dtype, dim, variant, paged=True)
                for name, args in (
                    (attention_name, contiguous),
                    (paged_name, paged_args),
                    (merge_name, merge),
                ):
                    params = entries[name]
                    assert _sizes(args) == [PTX_PARAM_SIZES[p] for p in params], name
                    # Floats go where the kernel expects floats, integers elsewhere.
                    assert [a.dtype.kind == "f" for a in args] == [p == "f32" for p in params], name


def test_register_budget_per_variant():
    """The report ``ptxas -v`` gives through NVRTC: registers per thread of every attention
    entry point stay within what one block of its variant may use at 1 block/SM (65536 / threads,
    capped at 255), so no variant is launched out of resources."""
    for arch in ARCHS:
        log, _ = compiled("tree_attention.cu", arch)
        regs = {}
        for block in re.split(r"ptxas info\s*: Compiling entry function", log)[1:]:
            name = re.search(r"'(\w+)'", block)
            used = re.search(r"Used (\d+) registers", block)
            if name and used:
                regs[name.group(1)] = int(used.group(1))
        assert regs, log
        for variant, spec in cuda_backend.VARIANTS.items():
            for dtype in (torch.float16, torch.bfloat16):
                for dim in (64, 128):
                    for layout in (False, True):
                        name = cuda_backend.kernel_names(dtype, dim, variant, layout)[0]
                        assert name in regs, f"no register report for {name} on {arch}:\n{log}"
                        assert regs[name] <= min(255, 65536 // spec.threads), (arch, name, regs[name])
