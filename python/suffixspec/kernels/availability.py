"""Can the CUDA kernels run here? (No compilation; CuPy is imported only when asked.)"""

from __future__ import annotations

import functools

import torch

from suffixspec.errors import KernelUnavailableError

__all__ = ["MIN_COMPUTE_CAPABILITY", "is_available", "require", "unavailable_reason"]

# mma.sync with bf16, cp.async and ldmatrix (Ampere and newer; Hopper is the target).
MIN_COMPUTE_CAPABILITY = (8, 0)


@functools.cache
def _cupy_import_error() -> str | None:
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # a broken install (wrong CUDA major, ...) is as unusable as none
        return (
            f"CuPy cannot be imported ({type(exc).__name__}: {exc}); "
            "install it with: pip install 'suffixspec[cuda]'"
        )
    return None


def unavailable_reason(device: torch.device | str | int | None = None) -> str | None:
    """Why the CUDA kernels cannot run on ``device`` (default: the current CUDA device), or None."""
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    if device is not None:
        device = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
        if device.type != "cuda":
            return f"the tensors/model are on {device}, not on a CUDA device"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < MIN_COMPUTE_CAPABILITY:
        return f"compute capability {major}.{minor} is below the kernels' minimum 8.0 (sm_80)"
    return _cupy_import_error()


def is_available(device: torch.device | str | int | None = None) -> bool:
    """True iff a CUDA device (sm_80+) is visible and CuPy imports; compiles nothing."""
    return unavailable_reason(device) is None


def require(device: torch.device | str | int | None = None) -> None:
    """Raises :class:`KernelUnavailableError` with the reason when the kernels cannot run."""
    reason = unavailable_reason(device)
    if reason is not None:
        raise KernelUnavailableError(f"the CUDA tree-attention kernel is unavailable: {reason}")
