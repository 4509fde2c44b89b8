"""Shapes and inputs shared by the benchmark modules."""

from __future__ import annotations

from typing import Any, Callable

import torch

# CPU: small enough for seconds per kernel on a laptop; GPU: the FlashAttention-paper regime (bf16, d=128).
CPU_ATTN = {"batch": 2, "heads": 4, "seq_len": 256, "head_dim": 32, "dtype": torch.float32, "device": "cpu"}
GPU_ATTN = {"batch": 4, "heads": 16, "seq_len": 4096, "head_dim": 128, "dtype": torch.bfloat16, "device": "cuda"}


def qkv(shape: dict[str, Any], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    dims = (shape["batch"], shape["heads"], shape["seq_len"], shape["head_dim"])
    return tuple(torch.randn(dims, generator=g, dtype=torch.float32).to(shape["device"], shape["dtype"])
                 for _ in range(3))  # type: ignore[return-value]


def synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    """``fn`` followed by a device synchronise, so the wall clock of pytest-benchmark measures the GPU work."""
    if device != "cuda":
        return fn

    def call() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out

    return call
