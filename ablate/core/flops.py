"""FLOP and byte counts for the latency suite, in the conventions papers use, so numbers compare with published ones.

Attention: :mod:`ablate.core.attention_cost` (FlashAttention convention for softmax attention, the FLOPs of the
algorithm that ran for linear attention); every name there is importable from here.

Model (training MFU, PaLM appendix B / Chinchilla style): ``6 · N · tokens`` for the matmul parameters (the tied LM
head counted once, as the head matmul it is) plus the attention score/value matmuls, ``3 × forward attention``
per layer (no recomputation counted, as MFU requires).

Peaks: dense (not 2:4 sparse) bf16 tensor-core TFLOP/s from NVIDIA's data sheets, keyed by the CUDA device name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ablate.core.attention_cost import (BWD_FACTOR, FWD_BWD_FACTOR, LINEAR_PASS_FACTOR, PASS_FACTOR,  # noqa: F401
                                        attended_pairs, attention_flops, attention_fwd_flops,
                                        linear_attention_flops, linear_attention_flops_parts)


def tflops(flops: float, ms: float | None) -> float | None:
    """Achieved TFLOP/s for ``flops`` done in ``ms`` milliseconds (None when there is no time)."""
    if ms is None or ms <= 0:
        return None
    return flops / (ms * 1e-3) / 1e12


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in a matmul per token: every ``nn.Linear`` weight plus the (tied) LM head."""
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    tok = getattr(model, "tok", None)
    if isinstance(tok, torch.nn.Embedding):  # tied head: the embedding matrix is the head's matmul
        n += tok.weight.numel()
    return n


def model_train_flops(n_matmul_params: int, batch: int, seq_len: int, *, n_layers: int, n_heads: int,
                      head_dim: int, causal: bool = True, window: int | None = None,
                      attention_fwd: float | None = None) -> float:
    """FLOPs of one training step (forward + backward): ``6·N·tokens + 3·layers·attention_fwd``.

    ``attention_fwd``: one layer's attention forward FLOPs when the model does not run softmax attention (e.g.
    :func:`linear_attention_flops` for ``linear``); default the FlashAttention-convention count."""
    tokens = batch * seq_len
    attn = (attention_fwd_flops(batch, n_heads, seq_len, seq_len, head_dim, causal=causal, window=window)
            if attention_fwd is None else attention_fwd)
    return 6.0 * n_matmul_params * tokens + 3.0 * n_layers * attn


def step_flops(n_matmul_params: int, mcfg: Any, batch: int, seq_len: int, *,
               chunk: int | None = None) -> tuple[float, str]:
    """(FLOPs of one training step of model config ``mcfg``, attention FLOP convention): :func:`model_train_flops`
    with one layer's attention forward counted by the attention layer's spec
    (:meth:`ablate.variants.attention.LayerSpec.attention_flops`: the kernel's FlashAttention-convention count for
    softmax kernels, the chunked algorithm that runs for ``linear``). The training and latency suites both count
    with this; ``chunk`` recomputes rows measured with another chunk size."""
    from ablate.variants.attention import layer_spec  # lazy: the attention package imports this module

    attn, conv = layer_spec(mcfg.attention).attention_flops("fwd", mcfg, batch=batch, seq_len=seq_len, chunk=chunk)
    return (model_train_flops(n_matmul_params, batch, seq_len, n_layers=mcfg.n_layers, n_heads=mcfg.n_heads,
                              head_dim=mcfg.head_dim, causal=mcfg.causal, window=mcfg.window, attention_fwd=attn),
            conv)


def cache_bytes(mcfg: Any, n_tokens: int, el_bytes: int, batch: int = 1, *, window: int | None = None,
                sinks: int | None = None) -> int:
    """Bytes of the attention cache of model config ``mcfg`` after ``n_tokens`` tokens of ``batch`` sequences, as
    the attention layer's spec states them (:meth:`ablate.variants.attention.LayerSpec.cache_bytes`; the standard
    layer: ``2 · layers · kv_heads · head_dim · n · bytes · batch``); ``window``: a rolling cache keeping that many
    tokens; with ``sinks``, a sink-keeping cache (``sinks + window - 1`` tokens). A layer whose model prepends learned
    tokens (``sink_token``) holds them too: ``n_tokens`` counts the text, the cache one more."""
    from ablate.variants.attention import layer_spec  # lazy: the attention package imports this module
    from ablate.variants.attention.sink_token import sink_tokens

    spec = layer_spec(mcfg.attention)
    n = n_tokens + sink_tokens(spec)
    held = n if window is None else min(n, window if sinks is None else sinks + window - 1)
    return spec.cache_bytes(mcfg, held, el_bytes, batch)


# -- peaks ------------------------------------------------------------------------------------------------------

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA data sheets (the "with sparsity" figures halved).
# Matched as substrings of torch.cuda.get_device_name(), most specific first.
GPU_BF16_PEAK_TFLOPS: list[tuple[str, str, float]] = [
    ("GH200", "GH200 (bf16 dense)", 989.4),
    ("H200 NVL", "H200 NVL (bf16 dense)", 835.0),
    ("H200", "H200 SXM (bf16 dense)", 989.4),
    ("H100 NVL", "H100 NVL (bf16 dense)", 835.0),
    ("H100 PCIe", "H100 PCIe (bf16 dense)", 756.0),
    ("H100", "H100 SXM (bf16 dense)", 989.4),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H800", "H800 SXM (bf16 dense)", 989.4),
    ("H20", "H20 (bf16 dense)", 148.0),
    ("B200", "B200 (bf16 dense)", 2250.0),
    ("B100", "B100 (bf16 dense)", 1750.0),
    ("A100", "A100 (bf16 dense)", 312.0),
    ("A800", "A800 (bf16 dense)", 312.0),
    ("L40S", "L40S (bf16 dense)", 362.05),
    ("L40", "L40 (bf16 dense)", 181.05),
    ("L4", "L4 (bf16 dense)", 121.0),
    ("A10G", "A10G (bf16 dense)", 70.0),
    ("A10", "A10 (bf16 dense)", 125.0),
    ("RTX 4090", "RTX 4090 (bf16 dense, fp32 accumulate)", 165.2),
    ("RTX 3090", "RTX 3090 (bf16 dense, fp32 accumulate)", 71.0),
]


# HBM bandwidth peaks (GB/s, 1e9 bytes) from NVIDIA data sheets, matched like the TFLOP/s peaks.
GPU_HBM_PEAK_GBPS: list[tuple[str, str, float]] = [
    ("GH200", "GH200 HBM3 (data sheet)", 4000.0),
    ("H200", "H200 HBM3e (data sheet)", 4800.0),
    ("H100 NVL", "H100 NVL HBM3 (data sheet)", 3900.0),
    ("H100 PCIe", "H100 PCIe HBM2e (data sheet)", 2000.0),
    ("H100", "H100 SXM HBM3 (data sheet)", 3350.0),
    ("H800", "H800 SXM HBM3 (data sheet)", 3350.0),
    ("B200", "B200 HBM3e (data sheet)", 8000.0),
    ("A100-SXM4-40GB", "A100 40GB SXM HBM2 (data sheet)", 1555.0),
    ("A100", "A100 80GB HBM2e (data sheet)", 2039.0),
    ("L40S", "L40S GDDR6 (data sheet)", 864.0),
    ("L4", "L4 GDDR6 (data sheet)", 300.0),
    ("RTX 4090", "RTX 4090 GDDR6X (data sheet)", 1008.0),
]


@dataclass(frozen=True)
class Peak:
    tflops: float | None
    source: str  # which table entry (or override) was used, or why none


def _lookup_peak(table: list[tuple[str, str, float]], device_name: str | None, env_var: str, what: str,
                 cpu_note: str) -> Peak:
    env = os.environ.get(env_var)
    if env:
        return Peak(float(env), f"{env_var}={env}")
    if device_name is None:
        if not torch.cuda.is_available():
            return Peak(None, cpu_note)
        device_name = torch.cuda.get_device_name()
    for needle, label, value in table:
        if needle.lower() in device_name.lower():
            return Peak(value, label)
    return Peak(None, f"no {what} known for {device_name!r} (set {env_var})")


def peak_tflops(device_name: str | None = None) -> Peak:
    """The dense bf16 peak for ``device_name`` (default: the current CUDA device); ``ABLATE_PEAK_TFLOPS`` overrides."""
    return _lookup_peak(GPU_BF16_PEAK_TFLOPS, device_name, "ABLATE_PEAK_TFLOPS", "peak", "no peak for CPU (MFU n/a)")


def peak_bandwidth(device_name: str | None = None) -> Peak:
    """The memory-bandwidth peak in GB/s (``Peak.tflops`` holds GB/s here) for ``device_name`` (default: the current
    CUDA device); ``ABLATE_PEAK_GBPS`` overrides."""
    return _lookup_peak(GPU_HBM_PEAK_GBPS, device_name, "ABLATE_PEAK_GBPS", "bandwidth peak",
                        "no bandwidth peak for CPU")


def decode_step_bytes(param_bytes: int, kv_bytes: int, mcfg: Any, *, el_bytes: int, batch: int) -> int:
    """Bytes one decode step must move at least: every parameter read once, the whole cache read once, one new
    token's cache entries per layer written (the layer's cache bytes of one token; activations are negligible at
    batch sizes where decode is memory-bound)."""
    from ablate.variants.attention import layer_spec  # lazy: the attention package imports this module

    return int(param_bytes + kv_bytes + layer_spec(mcfg.attention).cache_bytes(mcfg, 1, el_bytes, batch))


def mfu(flops: float, ms: float | None, peak: Peak) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None without a time or a peak)."""
    t = tflops(flops, ms)
    if t is None or not peak.tflops:
        return None
    return t / peak.tflops


__all__ = ["attended_pairs", "attention_fwd_flops", "attention_flops", "linear_attention_flops",
           "linear_attention_flops_parts", "LINEAR_PASS_FACTOR", "tflops", "matmul_params",
           "model_train_flops", "step_flops", "cache_bytes", "GPU_BF16_PEAK_TFLOPS", "Peak", "peak_tflops", "mfu",
           "GPU_HBM_PEAK_GBPS", "peak_bandwidth", "decode_step_bytes",
           "BWD_FACTOR", "FWD_BWD_FACTOR", "PASS_FACTOR"]
