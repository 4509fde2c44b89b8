"""FLOP and byte counts for the latency suite, in the conventions papers use, so numbers compare with published ones.

Attention (FlashAttention convention, Dao et al. 2022/2023, Shah et al. 2024):

* forward = 4 · b · h · Tq · Tk · d  (two matmuls, QKᵀ and PV, 2 FLOPs per multiply-add);
* causal with Tq == Tk: halved (the convention: ``n²/2``, not the exact ``n(n+1)/2``);
* causal with Tq < Tk (KV-cache decoding, bottom-right alignment) and any sliding window: the **exact** number of
  attended (query, key) pairs replaces ``Tq · Tk`` — only the band that is computed counts;
* backward = 2.5 × forward (5 matmuls instead of 2), forward+backward = 3.5 × forward.

Linear attention (``linear``, Katharopoulos et al. 2020, as implemented in ``variants/attention/linear.py``) computes a
different function with a different algorithm, so it gets **the FLOPs of the algorithm that ran**
(:func:`linear_attention_flops`), never the softmax count: products at 2 FLOPs per multiply-add, plus the element-wise
work (feature map ``elu(x) + 1`` 2 per element, sums / additions / the normaliser's division 1 per element). The
non-causal form is ``φ(Q) (φ(K)ᵀ V) / (φ(Q) Σ_j φ(K_j))``; the causal form runs in chunks of ``C = LINEAR_CHUNK``
queries: a full ``C × C`` product ``φ(Q_c) φ(K_c)ᵀ`` (masked afterwards, so all ``C²`` entries are computed), times
``V_c``, plus the inter-chunk terms ``φ(Q_c) S`` and the state update ``S += φ(K_c)ᵀ V_c``. Backward products are
exact (autograd computes both operand gradients of each product, each a product of the same size, no recomputation;
the last chunk's unused state update has none), the element-wise part of backward is taken as 2 × forward's
(approximate, a few percent of the total at most); checked against ``torch.utils.flop_counter``. The softmax-equivalent
rate of a linear row (``4·b·h·n²·d`` over its time) is only ever reported as ``equiv_tflops``.

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

BWD_FACTOR = 2.5  # FlashAttention convention: backward = 2.5 x forward
FWD_BWD_FACTOR = 1.0 + BWD_FACTOR  # 3.5 x forward
PASS_FACTOR = {"fwd": 1.0, "bwd": BWD_FACTOR, "fwd_bwd": FWD_BWD_FACTOR}


def attended_pairs(tq: int, tk: int, causal: bool, window: int | None = None) -> int:
    """Exact number of (query, key) pairs attended, queries being the last ``tq`` of ``tk`` positions.

    Query ``i`` sits at position ``p = tk - tq + i``; causal keeps keys ``j <= p``; a window ``W`` additionally keeps
    only ``j > p - W`` (W keys, itself included). Closed form of ``sum_p min(p + 1, W)``.
    """
    if tq < 0 or tk < 0 or tq > tk:
        raise ValueError(f"need 0 <= tq <= tk, got tq={tq}, tk={tk}")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not causal:
        if window is not None:
            raise ValueError("a sliding window is defined for causal attention only")
        return tq * tk
    lo, hi = tk - tq + 1, tk  # number of visible keys (p + 1) runs over lo..hi
    if tq == 0:
        return 0
    w = hi if window is None else window
    if w >= hi:
        return (lo + hi) * (hi - lo + 1) // 2
    if w < lo:
        return w * tq
    # lo .. w-1 counted fully, w .. hi capped at w
    return (lo + w - 1) * (w - lo) // 2 + w * (hi - w + 1)


def attention_fwd_flops(b: int, h: int, tq: int, tk: int, d: int, *, causal: bool, window: int | None = None,
                        convention: str = "fa") -> float:
    """Forward FLOPs of softmax attention. ``convention="fa"``: causal square attention counts ``n²/2`` (as papers
    report); ``"exact"``: always the exact attended-pair count. Windows and Tq < Tk are always exact."""
    if convention not in ("fa", "exact"):
        raise ValueError(f"convention must be 'fa' or 'exact', got {convention!r}")
    if causal and window is None and tq == tk and convention == "fa":
        pairs = tq * tk / 2
    else:
        pairs = attended_pairs(tq, tk, causal, window)
    return 4.0 * b * h * d * pairs


def attention_flops(b: int, h: int, tq: int, tk: int, d: int, *, causal: bool, window: int | None = None,
                    mode: str = "fwd", convention: str = "fa") -> float:
    """FLOPs of one attention pass: ``mode`` in ``fwd`` / ``bwd`` (2.5x) / ``fwd_bwd`` (3.5x)."""
    try:
        factor = PASS_FACTOR[mode]
    except KeyError:
        raise ValueError(f"mode must be one of {', '.join(PASS_FACTOR)}, got {mode!r}") from None
    return factor * attention_fwd_flops(b, h, tq, tk, d, causal=causal, window=window, convention=convention)


LINEAR_PASS_FACTOR = {"fwd": 1.0, "bwd": 2.0, "fwd_bwd": 3.0}  # backward ~ 2 x forward (no recomputation)


def _chunks(t: int, c: int) -> tuple[int, int]:
    """(sum of chunk sizes, sum of squared chunk sizes) for ``t`` positions in chunks of ``c``."""
    full, rest = divmod(t, c)
    return t, full * c * c + rest * rest


def linear_attention_flops_parts(b: int, h: int, hkv: int, tq: int, tk: int, d: int, dv: int, *, causal: bool,
                                 chunk: int, mode: str = "fwd") -> tuple[float, float]:
    """FLOPs of one pass of ``variants.attention.linear_attention`` as (products, element-wise), per the code path it
    takes: non-causal ``kv = φ(K)ᵀV``, ``z = Σ φ(K)``, ``num = φ(Q) kv``, ``den = φ(Q) z``, ``num / den``; causal
    (chunk ``chunk``, queries the last ``tq`` of ``tk``): the initial state from the ``tk - tq`` keys before the
    first query, then per chunk of ``c`` queries ``a = φ(Q_c)φ(K_c)ᵀ`` (``c × c``, all computed), ``a V_c``,
    ``φ(Q_c) S``, ``a 1``, ``φ(Q_c) z`` and the state updates ``S += φ(K_c)ᵀ V_c``, ``z += Σ φ(K_c)``.
    ``h`` query heads share ``hkv`` key/value heads (GQA: ``φ(K)``, ``S`` and ``z`` are per kv head).

    Backward products are exact: autograd computes both operand gradients of every forward product (two products
    of its size), except for the last chunk's state update, whose result is never used. The element-wise part of
    backward is taken as 2 x forward's (approximate; it is a few percent of the total at most)."""
    if tq < 0 or tk < tq:
        raise ValueError(f"need 0 <= tq <= tk, got tq={tq}, tk={tk}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if mode not in LINEAR_PASS_FACTOR:
        raise ValueError(f"mode must be one of {', '.join(LINEAR_PASS_FACTOR)}, got {mode!r}")
    feat = 2.0 * (h * tq * d + hkv * tk * d)  # elu(x) + 1 on q and k
    if not causal:
        mm = 2.0 * hkv * tk * d * dv + 2.0 * h * tq * d * dv + 2.0 * h * tq * d  # φKᵀV, φQ·kv, φQ·z
        ew = feat + hkv * tk * d + h * tq * dv  # z = Σ φK, division
        dead = 0.0
    else:
        p0 = tk - tq
        s1, s2 = _chunks(tq, chunk)  # Σc = tq, Σc²
        n_chunks = -(-tq // chunk)
        mm = (2.0 * hkv * p0 * d * dv  # initial state from the keys before the first query
              + 2.0 * h * s2 * d + 2.0 * h * s2 * dv  # intra-chunk: φQ_c φK_cᵀ (c x c), then a V_c
              + 2.0 * h * s1 * d * dv + 2.0 * h * s1 * d  # inter-chunk: φQ_c S, φQ_c z
              + 2.0 * hkv * s1 * d * dv)  # state update φK_cᵀ V_c
        ew = (feat + hkv * p0 * d  # z from the keys before the first query
              + h * s2  # a.sum(-1)
              + 2.0 * h * s1 * dv + h * s1  # num add, division, den add
              + hkv * (n_chunks * d * dv + s1 * d + n_chunks * d))  # S +=, Σ φK_c, z +=
        last = tq - (n_chunks - 1) * chunk if tq else 0
        dead = 2.0 * hkv * last * d * dv  # the last state update: computed, never used, no gradient
    fwd = (b * mm, b * ew)
    bwd = (2.0 * b * (mm - dead), 2.0 * b * ew)
    if mode == "fwd":
        return fwd
    if mode == "bwd":
        return bwd
    return fwd[0] + bwd[0], fwd[1] + bwd[1]


def linear_attention_flops(b: int, h: int, hkv: int, tq: int, tk: int, d: int, dv: int | None = None, *,
                           causal: bool, chunk: int, mode: str = "fwd") -> float:
    """FLOPs of one pass (``fwd``, ``bwd``, ``fwd_bwd``) of the linear attention that ran: products + element-wise,
    see :func:`linear_attention_flops_parts`."""
    mm, ew = linear_attention_flops_parts(b, h, hkv, tq, tk, d, d if dv is None else dv, causal=causal, chunk=chunk,
                                          mode=mode)
    return mm + ew


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


def cache_bytes(mcfg: Any, n_tokens: int, el_bytes: int, batch: int = 1, *, window: int | None = None) -> int:
    """Bytes of the attention cache of model config ``mcfg`` after ``n_tokens`` tokens of ``batch`` sequences, as
    the attention layer's spec states them (:meth:`ablate.variants.attention.LayerSpec.cache_bytes`; the standard
    layer: ``2 · layers · kv_heads · head_dim · n · bytes · batch``); ``window``: a rolling cache keeping that many
    tokens."""
    from ablate.variants.attention import layer_spec  # lazy: the attention package imports this module

    held = n_tokens if window is None else min(n_tokens, window)
    return layer_spec(mcfg.attention).cache_bytes(mcfg, held, el_bytes, batch)


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
    token's cache entries per layer written (:func:`cache_bytes` of one token; activations are negligible at batch
    sizes where decode is memory-bound)."""
    return int(param_bytes + kv_bytes + cache_bytes(mcfg, 1, el_bytes, batch))


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
