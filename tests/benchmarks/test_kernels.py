"""Attention kernels through pytest-benchmark: sdpa, naive, linear at a small CPU shape; GPU shapes marked gpu."""

from __future__ import annotations

import pytest
import torch

from ablate.registry.keys import ATTENTION, load_all

from _shapes import CPU_ATTN, GPU_ATTN, qkv, synced

load_all()

CPU_KEYS = ("sdpa", "naive", "linear")
GPU_KEYS = ("sdpa", "sdpa_flash", "naive", "linear", "flash_attn")


def _run(benchmark, key: str, shape: dict, causal: bool) -> None:
    entry = ATTENTION.get(key)
    ok, reason = entry.available(shape["device"])
    if not ok:
        pytest.skip(f"{key}: {reason}")
    q, k, v = qkv(shape)
    fn = synced(lambda: entry.fn(q, k, v, causal=causal), shape["device"])
    with torch.no_grad():
        fn()  # first call outside the timing (lazy init, kernel selection)
        benchmark.extra_info.update({k_: str(v_) for k_, v_ in shape.items()} | {"causal": causal, "key": key})
        out = benchmark(fn)
    assert out.shape == q.shape and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("key", CPU_KEYS)
def test_attention_cpu(benchmark, key, causal):
    _run(benchmark, key, CPU_ATTN, causal)


@pytest.mark.gpu
@pytest.mark.parametrize("key", GPU_KEYS)
def test_attention_gpu(benchmark, key):
    _run(benchmark, key, GPU_ATTN, True)
