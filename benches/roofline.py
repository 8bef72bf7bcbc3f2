"""The device peaks the benchmarks measure against, and the weight-read limit of a decode step.

A plain decode step reads every weight once: no step of a model is faster than its parameter
bytes / memory bandwidth (the *weight-read limit*), whatever the batch. The benchmarks print it
beside every GPU step time and tokens/s figure.
"""

from __future__ import annotations

from typing import Any

# Nominal dense peaks by device name (first match wins): memory bandwidth (B/s), bf16 FLOP/s.
NOMINAL = (
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100", 3.35e12, 989e12),
    ("A100-SXM4-80GB", 2.04e12, 312e12),
    ("A100", 1.56e12, 312e12),
)


def nominal(name: str) -> tuple[float | None, float | None]:
    """(memory bandwidth B/s, bf16 FLOP/s) of the device called `name`, or (None, None)."""
    for key, bandwidth, flops in NOMINAL:
        if key in name:
            return bandwidth, flops
    return None, None


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters (tied weights once): what one decode step reads."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weight_read_s(model: Any, bandwidth: float | None) -> float | None:
    """The weight-read limit of one decode step (None without a bandwidth, e.g. on a CPU)."""
    return weight_bytes(model) / bandwidth if bandwidth else None
