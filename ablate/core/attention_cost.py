"""FLOP counts of one attention call, in the conventions papers use, so numbers compare with published ones: the
formulas only (no model, no registry), below :mod:`ablate.variants.attention` (whose specs count with them) and
:mod:`ablate.core.flops` (which re-exports every name here).

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
"""

from __future__ import annotations


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
