"""Attention kernels behind one signature, registered in :data:`ablate.registry.ATTENTION`.

Every entry is called as::

    attn(q, k, v, *, causal, bias=None, window=None, scale=None) -> Tensor

``q`` is ``(B, H, Tq, D)``, ``k``/``v`` are ``(B, Hkv, Tk, D)`` with ``H % Hkv == 0`` (query head ``h`` uses key/value
head ``h // (H // Hkv)``, i.e. ``repeat_interleave``), ``Tq <= Tk`` and queries are the *last* ``Tq`` positions
(query ``i`` sits at ``p = Tk - Tq + i``). ``causal``: keys ``j <= p``. ``window=W`` (needs ``causal``): additionally
``j > p - W``. ``scale`` multiplies ``QK^T`` (default ``1/sqrt(D)``); ``bias`` is added after scaling.

``bias`` is a ``ScoreBias`` from :mod:`ablate.variants.positions`; only its structure is used here (no import, so
no cycle): ``bias.dense(Tq, Tk, device, dtype) -> (H, Tq, Tk)`` additive scores, ``bias.alibi_slopes`` (``(H,)``
tensor or ``None``) and ``bias.kind``. Kernels with native ALiBi (FlashAttention-2, FlexAttention) use the slopes
with distance ``|p - j|`` (equal to ``p - j`` on every key a causal query sees); all others add ``dense``.

Capabilities. ``Entry.supports`` holds ``causal``, ``bidirectional``, ``bias``, ``alibi``, ``window``, ``gqa``,
``kv_cache``, ``backward``, ``dtypes``, ``devices``. A feature value is ``True``/``False``, or a tuple of device types
where it only holds there (``sdpa_flash`` takes an ALiBi/window mask on CPU but no mask on CUDA:
``alibi=("cpu",)``), so ``Entry.supports_`` is the optimistic "somewhere" answer. Ask :func:`supports` (device
aware) or :func:`check_call` (the whole request) for the precise one.
An entry never silently runs another kernel: a request it cannot serve raises :class:`UnavailableError`
(kernel limitation, missing package, wrong device/dtype) or :class:`ConfigError` (invalid request) with a one-line
reason. :func:`check_call` answers before any compute (exceptions: ``sdpa_flash`` on CPU refuses a bias that
requires grad once ``bias.dense`` has been evaluated; a forced SDPA kernel that PyTorch refuses at call time; compiled
``flex`` whose generated Triton kernel exceeds the GPU's shared memory or whose compile cache is full -- it is never
run uncompiled instead); every entry runs it first (~15-25 us of Python per call).
:func:`backend_of` names what really runs (e.g. the SDPA kernel PyTorch dispatched to, with ``+expand_kv`` where
K/V heads are materialised for GQA because that kernel path has no ``enable_gqa``: ``sdpa_efficient`` on CUDA, and the
bottom-right-causal ``CausalBias`` path of ``sdpa_flash``/``sdpa_efficient``).

Environment knobs: ``ABLATE_FLEX_COMPILE_CPU=1`` compiles FlexAttention on CPU too (with torch 2.13 it works for
float32/16/bf16 -- not float64 -- but costs 7-19 s of compilation per new shape on 2 cores, so the CPU default is the
eager, unfused path, reported as ``"flex:eager"``); ``ABLATE_FLASH_ATTN=fa2|fa4`` pins the flash-attn generation.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from collections import OrderedDict
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.errors import ConfigError, UnavailableError
from ablate.registry import ATTENTION, Availability

__all__ = [
    "KEYS", "FEATURES", "ScoreBiasLike", "attention_fn", "check_call", "supports", "backend_of",
    "linear_attention", "allowed_mask", "LINEAR_CHUNK",
]

KEYS: tuple[str, ...] = ("naive", "sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "flash_attn",
                         "xformers", "flex", "sliding_window", "linear")
FEATURES: tuple[str, ...] = ("causal", "bidirectional", "bias", "alibi", "window", "gqa", "kv_cache", "backward",
                             "bias_grad")  # bias_grad: backpropagates into a learned score bias (T5)
LINEAR_CHUNK = 64  # chunk size C of the causal linear-attention scan (memory O(T*D + C*C), never T*T)

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
                torch.float64: "float64"}
_HALF = ("float16", "bfloat16")
_ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


class ScoreBiasLike(Protocol):
    """What attention needs from ``ablate.variants.positions.ScoreBias``."""

    alibi_slopes: Tensor | None
    kind: str

    def dense(self, tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Tensor: ...


# ---------------------------------------------------------------------------------------------------------------
# Capabilities per device type (the static Entry.supports is derived from this table).

_FULL = dict(causal=True, bidirectional=True, bias=True, alibi=True, window=True, gqa=True, kv_cache=True,
             backward=True, bias_grad=True)


def _caps(**over: Any) -> dict[str, Any]:
    d = dict(_FULL)
    d.update(over)
    return d


_CAPS: dict[str, dict[str, dict[str, Any]]] = {
    "naive": {"cpu": _caps(dtypes=_ALL_DTYPES), "cuda": _caps(dtypes=_ALL_DTYPES)},
    "sdpa": {"cpu": _caps(dtypes=_ALL_DTYPES), "cuda": _caps(dtypes=_ALL_DTYPES)},
    # CPU flash (_scaled_dot_product_flash_attention_for_cpu) takes masks, but not one that requires grad (a learned
    # bias such as T5's), so only ALiBi and windows there; the CUDA one takes no mask at all (bottom-right causal
    # goes through torch.nn.attention.bias.causal_lower_right).
    "sdpa_flash": {"cpu": _caps(bias=False, dtypes=_ALL_DTYPES),
                   "cuda": _caps(bias=False, alibi=False, window=False, dtypes=_HALF)},
    "sdpa_efficient": {"cuda": _caps(dtypes=("float16", "bfloat16", "float32"))},
    # cuDNN takes a float mask but no gradient for it (seen on an H100, torch 2.11): no training with t5_bias.
    "sdpa_cudnn": {"cuda": _caps(bias_grad=False, dtypes=_HALF)},
    "sdpa_math": {"cpu": _caps(dtypes=_ALL_DTYPES), "cuda": _caps(dtypes=_ALL_DTYPES)},
    # ALiBi only through FlashAttention-2's alibi_slopes (see _dynamic_refusal); no arbitrary bias.
    "flash_attn": {"cuda": _caps(bias=False, dtypes=_HALF)},
    "xformers": {"cuda": _caps(dtypes=("float16", "bfloat16", "float32"))},
    "flex": {"cpu": _caps(backward=False, dtypes=_ALL_DTYPES),  # torch: "FlexAttention does not support backward on CPU"
             "cuda": _caps(dtypes=("float16", "bfloat16", "float32"))},
    "sliding_window": {"cpu": _caps(bidirectional=False, dtypes=_ALL_DTYPES),
                       "cuda": _caps(bidirectional=False, dtypes=_ALL_DTYPES)},
    "linear": {"cpu": _caps(bias=False, alibi=False, window=False, dtypes=_ALL_DTYPES),
               "cuda": _caps(bias=False, alibi=False, window=False, dtypes=_ALL_DTYPES)},
}

_NO_DEVICE_REASON = {
    "sdpa_efficient": "needs CUDA: PyTorch has no memory-efficient SDPA kernel for CPU",
    "sdpa_cudnn": "needs CUDA: cuDNN attention is a GPU kernel",
    "flash_attn": "needs CUDA",
    "xformers": "needs CUDA",
}


def _static_supports(key: str) -> dict[str, Any]:
    per_dev = _CAPS[key]
    devs = tuple(per_dev)
    out: dict[str, Any] = {}
    for f in FEATURES:
        yes = tuple(d for d in devs if per_dev[d].get(f))
        out[f] = True if yes == devs else (yes if yes else False)
    dtypes: list[str] = []
    for d in devs:
        dtypes += [x for x in per_dev[d]["dtypes"] if x not in dtypes]
    out["dtypes"] = tuple(dtypes)
    out["devices"] = devs
    return out


# ---------------------------------------------------------------------------------------------------------------
# Small helpers.


def _device_type(device: Any = None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def _first_line(x: Any, limit: int = 300) -> str:
    s = " ".join(str(x).split())
    return s[:limit]


def _bias_slopes(bias: Any) -> Tensor | None:
    return None if bias is None else getattr(bias, "alibi_slopes", None)


def _default_scale(q: Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _expand_kv(k: Tensor, v: Tensor, h: int) -> tuple[Tensor, Tensor]:
    g = h // k.shape[1]
    if g == 1:
        return k, v
    return k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        val = make()
        self[key] = val
        if len(self) > self.size:
            self.popitem(last=False)
        return val


_MASKS = _LRU(32)


def allowed_mask(tq: int, tk: int, causal: bool, window: int | None, device: Any) -> Tensor | None:
    """Boolean ``(Tq, Tk)`` mask, True where query ``i`` (at ``Tk - Tq + i``) may attend key ``j``; None = all."""
    if not causal and window is None:
        return None

    def make() -> Tensor:
        pos = torch.arange(tk - tq, tk, device=device)[:, None]
        j = torch.arange(tk, device=device)[None, :]
        m = j <= pos if causal else torch.ones(tq, tk, dtype=torch.bool, device=device)
        if window is not None:
            m = m & (j > pos - window)
        return m

    if tq * tk > (1 << 24):  # do not pin very large masks in the cache
        return make()
    return _MASKS.get_or((tq, tk, causal, window, str(torch.device(device))), make)


def _masked_dense_bias(bias: Any, tq: int, tk: int, causal: bool, window: int | None, device: torch.device,
                       dtype: torch.dtype) -> Tensor:
    """``bias.dense`` with the causal/window mask folded in as -inf: ``(Hb, Tq, Tk)``, Hb in {1, H}."""
    b = bias.dense(tq, tk, device, dtype)
    if b.dim() == 2:
        b = b.unsqueeze(0)
    allowed = allowed_mask(tq, tk, causal, window, device)
    if allowed is not None:
        b = b.masked_fill(~allowed, float("-inf"))
    return b


# ---------------------------------------------------------------------------------------------------------------
# Request validation.


def _validate(q: Any, k: Any, v: Any, causal: Any, bias: Any, window: Any) -> None:
    if not all(isinstance(t, Tensor) for t in (q, k, v)):
        raise ConfigError("attention expects tensors q, k, v")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ConfigError(f"attention expects q (B,H,Tq,D), k/v (B,Hkv,Tk,D); got {tuple(q.shape)}, "
                          f"{tuple(k.shape)}, {tuple(v.shape)}")
    b, h, tq, d = q.shape
    if k.shape[0] != b or v.shape[0] != b or k.shape[:3] != v.shape[:3] or k.shape[-1] != d:
        raise ConfigError(f"attention shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    hkv, tk = k.shape[1], k.shape[2]
    if hkv < 1 or h % hkv:
        raise ConfigError(f"query heads ({h}) must be a multiple of key/value heads ({hkv})")
    if tq < 1 or tq > tk:
        raise ConfigError(f"need 1 <= Tq <= Tk (queries are the last Tq of Tk positions); got Tq={tq}, Tk={tk}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ConfigError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ConfigError(f"q, k, v devices differ: {q.device}, {k.device}, {v.device}")
    if not isinstance(causal, bool):
        raise ConfigError(f"causal must be a bool, got {causal!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"window must be a positive int (keys attended, self included), got {window!r}")
        if not causal:
            raise ConfigError("window (sliding-window attention) requires causal=True")
    if bias is not None and not callable(getattr(bias, "dense", None)):
        raise ConfigError("bias must be a ScoreBias (with .dense(Tq, Tk, device, dtype) -> (H, Tq, Tk))")


def _dynamic_refusal(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any,
                     window: int | None) -> str | None:
    """Key-specific limits that depend on the inputs or on what is installed; a reason or None."""
    d = q.shape[-1]
    if key == "sliding_window" and window is None:
        raise ConfigError("sliding_window needs a window (cfg.window=W)")
    if key == "flash_attn":
        mods = _flash_modules()
        if d > 256:
            return f"flash_attn: head_dim {d} > 256"
        variant = _flash_variant(q, bias)
        if variant == "fa4" and d % 8:
            return f"flash_attn (FA4): head_dim must be a multiple of 8, got {d}"
        if bias is not None and variant != "fa2":
            return ("flash_attn: ALiBi needs FlashAttention-2's alibi_slopes (pip install 'ablate[flash]'); "
                    f"FA4 offers no ALiBi here (installed: {', '.join(sorted(mods)) or 'none'})")
    if key == "flex" and q.device.type == "cpu" and q.dtype == torch.float64 and _flex_mode("cpu") == "compiled":
        return "flex: compiled FlexAttention on CPU takes float32/float16/bfloat16 only (unset ABLATE_FLEX_COMPILE_CPU)"
    if key in ("sdpa_cudnn",) and d % 8:
        return f"{key}: head_dim must be a multiple of 8, got {d}"
    return None


def check_call(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any = None,
               window: int | None = None) -> None:
    """Raise :class:`ConfigError` / :class:`UnavailableError` (one-line reason) if ``key`` cannot serve this call."""
    entry = ATTENTION.get(key)  # UnknownKeyError lists the valid keys
    _validate(q, k, v, causal, bias, window)
    dev = q.device.type
    caps = _CAPS.get(key, {}).get(dev)
    ok, reason = entry.available(dev)
    if not ok:
        raise UnavailableError(f"{key} unavailable on {dev}: {reason}")
    if caps is None:
        raise UnavailableError(f"{key} does not run on {dev}")
    dname = _DTYPE_NAMES.get(q.dtype, str(q.dtype))
    if dname not in caps["dtypes"]:
        raise UnavailableError(f"{key} does not run {dname} on {dev} (supports {', '.join(caps['dtypes'])})")
    need = ["causal" if causal else "bidirectional"]
    if window is not None:
        need.append("window")
    if q.shape[1] != k.shape[1]:
        need.append("gqa")
    if q.shape[2] < k.shape[2]:
        need.append("kv_cache")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        need.append("backward")
        if bias is not None and getattr(bias, "kind", "") == "t5":
            need.append("bias_grad")
    for f in need:
        if not caps.get(f):
            raise UnavailableError(f"{key} does not support {f.replace('_', ' ')} on {dev}")
    if bias is not None:
        slopes = _bias_slopes(bias)
        if slopes is not None:
            if not (caps.get("alibi") or caps.get("bias")):
                raise UnavailableError(f"{key} does not support ALiBi or additive score bias on {dev}")
        elif not caps.get("bias"):
            raise UnavailableError(f"{key} does not support an additive score bias "
                                   f"({getattr(bias, 'kind', 'dense')}) on {dev}")
    why = _dynamic_refusal(key, q, k, v, causal, bias, window)
    if why:
        raise UnavailableError(why)


def supports(key: str, feature: str | torch.dtype, device: Any = None) -> bool:
    """Whether ``key`` supports ``feature`` on ``device`` (None: cuda if available, else cpu).

    ``feature`` is one of :data:`FEATURES`, a dtype (``torch.bfloat16`` or ``"bfloat16"``) or a device type.
    """
    ATTENTION.get(key)
    dev = _device_type(device)
    per_dev = _CAPS.get(key, {})
    if isinstance(feature, torch.dtype):
        feature = _DTYPE_NAMES.get(feature, str(feature))
    if feature in ("cpu", "cuda", "mps", "xpu"):
        return feature in per_dev
    caps = per_dev.get(dev)
    if feature in _ALL_DTYPES:
        return caps is not None and feature in caps["dtypes"]
    if feature not in FEATURES:
        raise ConfigError(f"unknown attention feature {feature!r}; valid: {', '.join(FEATURES)}, a dtype or a device")
    if caps is None or not caps.get(feature):
        return False
    if key == "flash_attn" and feature == "alibi":
        return "fa2" in _flash_modules()
    return True


def attention_fn(key: str) -> Callable[..., Tensor]:
    """The callable registered under ``key`` (UnknownKeyError lists the valid keys)."""
    return ATTENTION.get(key).fn


# ---------------------------------------------------------------------------------------------------------------
# Availability probes (cached per key and device type).

_AVAIL: dict[tuple[str, str], Availability] = {}


def _availability(key: str, probe: Callable[[str], Availability] | None = None) -> Callable[..., Availability]:
    def available(device: Any = None) -> Availability:
        dev = _device_type(device)
        ck = (key, dev)
        if ck not in _AVAIL:
            if dev not in _CAPS[key]:
                res: Availability = (False, _NO_DEVICE_REASON.get(key, f"does not run on {dev}"))
                if key == "flash_attn" and not _flash_modules():
                    res = (False, f"needs CUDA; {_flash_missing_reason()}")
                if key == "xformers" and _xformers_import()[0] is None:
                    res = (False, f"needs CUDA; {_xformers_import()[1]}")
            elif dev == "cuda" and not torch.cuda.is_available():
                res = (False, "needs CUDA (torch.cuda.is_available() is False)")
            elif probe is None:
                res = (True, "")
            else:
                try:
                    res = probe(dev)
                except Exception as exc:  # a probe must never take the caller down
                    res = (False, f"probe failed: {type(exc).__name__}: {_first_line(exc)}")
            _AVAIL[ck] = res
        return _AVAIL[ck]

    return available


def _tiny(dev: str, dtype: torch.dtype, t: int = 64, d: int = 64, h: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    return tuple(torch.randn(1, h, t, d, generator=g).to(device=dev, dtype=dtype) for _ in range(3))  # type: ignore


def _probe_sdpa(key: str) -> Callable[[str], Availability]:
    def probe(dev: str) -> Availability:
        dtype = torch.float32 if dev == "cpu" else torch.float16
        q, k, v = _tiny(dev, dtype)
        _run_forced(key, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return True, ""

    return probe


# ---------------------------------------------------------------------------------------------------------------
# SDPA family.

_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - torch < 2.3
    SDPBackend = None  # type: ignore[assignment]
    sdpa_kernel = None  # type: ignore[assignment]

_FORCED = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
           "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_math": "MATH"}


def _sdpa_plain(q: Tensor, k: Tensor, v: Tensor, **kw: Any) -> Tensor:
    if q.shape[1] != k.shape[1]:
        if _SDPA_HAS_GQA:
            kw["enable_gqa"] = True
        else:
            k, v = _expand_kv(k, v, q.shape[1])
    return F.scaled_dot_product_attention(q, k, v, **kw)


def _sdpa_route(key: str, dev: str, h: int, hkv: int, tq: int, tk: int, causal: bool, has_bias: bool,
                window: int | None) -> tuple[str, bool]:
    """How ``_sdpa_impl`` serves a request: ``(route, expand_kv)``.

    route: ``"plain"`` (``is_causal`` / no mask), ``"lower_right"`` (CUDA flash/efficient: bottom-right causal through
    ``torch.nn.attention.bias.causal_lower_right``, no mask tensor) or ``"mask"`` (an explicit boolean / additive
    mask). ``expand_kv``: K/V heads are materialised with ``repeat_interleave`` for GQA/MQA because that kernel path
    takes no ``enable_gqa``: the lower-right path calls the aten kernels directly, and PyTorch's memory-efficient
    kernel requires equal head counts ("For dense input, both fused kernels require query, key and value to have the
    same num_heads"). :func:`backend_of` reports it as ``"+expand_kv"``.
    """
    if not has_bias and window is None and (not causal or tq == tk):
        route = "plain"
    elif not has_bias and window is None and dev == "cuda" and key in ("sdpa_flash", "sdpa_efficient"):
        route = "lower_right"
    else:
        route = "mask"
    expand = h != hkv and (route == "lower_right" or not _SDPA_HAS_GQA
                           or (key == "sdpa_efficient" and dev == "cuda"))
    return route, expand


def _causal_lower_right(tq: int, tk: int) -> Any:
    """``torch.nn.attention.bias.causal_lower_right(tq, tk)``, built outside any active TorchDispatchMode.

    ``CausalBias`` is a data-less Tensor subclass. Constructed while a dispatch mode is active (``backend_of``'s aten
    recorder, a profiler or debug mode), the raw tensor is first wrapped as a plain ``Tensor`` and torch raises
    "Creating a new Tensor subclass CausalBias but the raw Tensor object is already associated to a python object of
    type Tensor". The mode still sees every aten op of the attention call itself.
    """
    from torch.nn.attention.bias import causal_lower_right
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        return causal_lower_right(int(tq), int(tk))


def _sdpa_impl(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
               scale: float | None) -> Tensor:
    tq, tk = q.shape[2], k.shape[2]
    kw: dict[str, Any] = {} if scale is None else {"scale": scale}
    route, expand = _sdpa_route(key, q.device.type, q.shape[1], k.shape[1], tq, tk, causal, bias is not None,
                                window)
    if expand:
        k, v = _expand_kv(k, v, q.shape[1])
    if route == "plain":
        return _sdpa_plain(q, k, v, is_causal=causal, **kw)
    if route == "lower_right":
        # CUDA flash refuses attn_mask and non-square is_causal; PyTorch's lower-right CausalBias drives the flash
        # kernel (is_causal there means bottom-right) or the efficient one (custom_mask_type=LOWER_RIGHT) directly.
        # Under sdpa_kernel(<one backend>) the other one is runtime-disabled, so no other kernel can be picked; if the
        # forced one cannot take the inputs, CausalBias materialises a mask and the forced call is refused.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_lower_right(tq, tk), **kw)
    if bias is None:
        mask = allowed_mask(tq, tk, causal, window, q.device)  # bool (Tq, Tk)
    else:
        mask = _masked_dense_bias(bias, tq, tk, causal, window, q.device, q.dtype).unsqueeze(0)  # (1,Hb,Tq,Tk)
        if key == "sdpa_flash" and mask.requires_grad and torch.is_grad_enabled():
            raise UnavailableError("sdpa_flash: PyTorch's CPU flash kernel cannot backpropagate into a score bias "
                                   "that requires grad; use sdpa or sdpa_math")
    return _sdpa_plain(q, k, v, attn_mask=mask, **kw)


def _run_forced(key: str, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` with only ``key``'s SDPA backend enabled; a refusal becomes UnavailableError with torch's reason."""
    if sdpa_kernel is None:
        raise UnavailableError(f"{key}: torch.nn.attention.sdpa_kernel needs torch >= 2.3")
    backend = getattr(SDPBackend, _FORCED[key], None)
    if backend is None:
        raise UnavailableError(f"{key}: this torch ({torch.__version__}) has no SDPBackend.{_FORCED[key]}")
    # torch explains a refusal only through warnings; capture them (re-issued unchanged when the call succeeds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(backend):
                out = fn()
            failed = None
        except RuntimeError as exc:
            if "No available kernel" not in str(exc) and "No viable backend" not in str(exc):
                raise
            failed = exc
    if failed is None:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out
    reasons = []
    for w in caught:
        msg = str(w.message).split("(Triggered internally")[0].strip()
        if msg and "kernel not used because" not in msg and msg not in reasons:
            reasons.append(msg)
    why = "; ".join(_first_line(r, 200) for r in reasons[:2]) or "torch gave no reason"
    raise UnavailableError(f"{key}: PyTorch's {_FORCED[key].lower()} SDPA kernel refused these inputs: {why}")


def _make_sdpa(key: str) -> Callable[..., Tensor]:
    def attn(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
             scale: float | None = None) -> Tensor:
        check_call(key, q, k, v, causal, bias, window)
        if key == "sdpa":
            return _sdpa_impl(key, q, k, v, causal, bias, window, scale)
        return _run_forced(key, lambda: _sdpa_impl(key, q, k, v, causal, bias, window, scale))

    attn.__name__ = key
    attn.__qualname__ = key
    return attn


# which aten op (seen by a TorchDispatchMode below the CompositeImplicit SDPA) means which kernel
_SDPA_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "_scaled_dot_product_flash_attention": "flash",
    "_flash_attention_forward": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_efficient_attention_forward": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_cudnn_attention_forward": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def _record_aten_ops(fn: Callable[[], Any]) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    names: list[str] = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with _Recorder():
        fn()
    return names


def _sdpa_kernel_name(call: Callable[[], Any]) -> str:
    for name in _record_aten_ops(call):
        if name in _SDPA_OPS:
            return _SDPA_OPS[name]
    return "math"  # the math path is CompositeImplicit: only bmm/softmax show up


# ---------------------------------------------------------------------------------------------------------------
# flash-attn (Dao): FA4 (CuTe DSL, package flash-attn-4) preferred, else FlashAttention-2.

_FLASH_ERRORS: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def _flash_modules() -> dict[str, Callable[..., Any]]:
    mods: dict[str, Callable[..., Any]] = {}
    try:
        from flash_attn.cute import flash_attn_func as fa4  # type: ignore[import-not-found]

        mods["fa4"] = fa4
    except Exception as exc:  # ImportError, or a CUDA/cutlass import failure
        _FLASH_ERRORS["fa4"] = f"{type(exc).__name__}: {_first_line(exc, 120)}"
    try:
        from flash_attn import flash_attn_func as fa2  # type: ignore[import-not-found]

        mods["fa2"] = fa2
    except Exception as exc:
        _FLASH_ERRORS["fa2"] = f"{type(exc).__name__}: {_first_line(exc, 120)}"
    return mods


def _flash_missing_reason() -> str:
    return "flash-attn not installed: pip install 'ablate[flash]' (FA2) or 'ablate[flash4]' (FA4, sm90+)"


def _flash_variant(q: Tensor, bias: Any = None) -> str:
    mods = _flash_modules()
    pinned = os.environ.get("ABLATE_FLASH_ATTN", "").strip().lower()
    if pinned:
        if pinned not in mods:
            raise UnavailableError(f"flash_attn: ABLATE_FLASH_ATTN={pinned} but that generation is not importable "
                                   f"({_FLASH_ERRORS.get(pinned, 'unknown variant')})")
        return pinned
    fa4_ok = "fa4" in mods and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] in (9, 10, 11)
    if fa4_ok and (bias is None or "fa2" not in mods):
        return "fa4"
    if "fa2" in mods:
        return "fa2"
    if "fa4" in mods:
        return "fa4" if fa4_ok else "fa4-unsupported-arch"
    raise UnavailableError(f"flash_attn: {_flash_missing_reason()}")


@functools.lru_cache(maxsize=None)
def _params(fn: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _flash_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
                scale: float | None) -> Tensor:
    variant = _flash_variant(q, bias)
    if variant not in _flash_modules():
        raise UnavailableError("flash_attn: FA4 needs an sm90/sm100 GPU and FlashAttention-2 is not installed")
    fn = _flash_modules()[variant]
    params = _params(fn)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D) views
    if variant == "fa4":
        qt, kt, vt = qt.contiguous(), kt.contiguous(), vt.contiguous()
    kw: dict[str, Any] = {"softmax_scale": scale, "causal": causal}
    if window is not None:
        if "window_size" not in params:
            raise UnavailableError(f"flash_attn ({variant}): this version has no window_size")
        kw["window_size"] = (window - 1, 0)
    if bias is not None:
        slopes = _bias_slopes(bias)
        if slopes is None or "alibi_slopes" not in params:
            raise UnavailableError(f"flash_attn ({variant}): no support for this score bias")
        kw["alibi_slopes"] = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    out = fn(qt, kt, vt, **kw)
    if isinstance(out, tuple):  # FA4 returns (out, lse)
        out = out[0]
    return out.transpose(1, 2)


def _flash_attn(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                scale: float | None = None) -> Tensor:
    check_call("flash_attn", q, k, v, causal, bias, window)
    return _flash_impl(q, k, v, causal, bias, window, scale)


def _probe_flash(dev: str) -> Availability:
    mods = _flash_modules()
    if not mods:
        return False, _flash_missing_reason()
    q, k, v = _tiny(dev, torch.bfloat16, t=128)
    variant = _flash_variant(q)
    if variant not in mods:
        return False, ("flash-attn-4 needs an sm90/sm100/sm110 GPU, FlashAttention-2 not installed: "
                       "pip install 'ablate[flash]'")
    _flash_impl(q, k, v, True, None, None, None)
    torch.cuda.synchronize()
    return True, ""


# ---------------------------------------------------------------------------------------------------------------
# xFormers memory_efficient_attention.


@functools.lru_cache(maxsize=None)
def _xformers_import() -> tuple[Any, str]:
    try:
        import xformers.ops as xops  # type: ignore[import-not-found]

        return xops, ""
    except Exception as exc:
        if isinstance(exc, ImportError):
            return None, "xformers not installed: pip install 'ablate[xformers]'"
        return None, f"xformers import failed ({type(exc).__name__}: {_first_line(exc, 150)})"


def _xformers_mask_bias(xops: Any, causal: bool, bias: Any, window: int | None) -> Any:
    """xFormers' structured causal / local mask when no score bias is involved; None: no mask or a dense one."""
    ab = getattr(getattr(xops, "fmha", None), "attn_bias", None)
    if bias is not None or not causal or ab is None:
        return None
    if window is None:
        return ab.LowerTriangularFromBottomRightMask() if hasattr(ab, "LowerTriangularFromBottomRightMask") else None
    if hasattr(ab, "LowerTriangularFromBottomRightLocalAttentionMask"):  # keys p - W < j <= p
        return ab.LowerTriangularFromBottomRightLocalAttentionMask(window)
    return None


def _xformers_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
                   scale: float | None) -> Tensor:
    xops, why = _xformers_import()
    if xops is None:
        raise UnavailableError(why)
    b, h, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = h // hkv
    attn_bias = _xformers_mask_bias(xops, causal, bias, window)
    if attn_bias is None and (bias is not None or causal):
        # dense additive tensor: bias (+ -inf outside the causal/window band); last dim padded to a multiple of 8
        # because the kernels need an aligned row stride
        if bias is not None:
            dense = _masked_dense_bias(bias, tq, tk, causal, window, q.device, q.dtype)
        else:
            allowed = allowed_mask(tq, tk, causal, window, q.device)
            dense = torch.zeros(1, tq, tk, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        hb = dense.shape[0]
        pad = (tk + 7) // 8 * 8
        buf = torch.empty(hb, tq, pad, dtype=q.dtype, device=q.device)
        buf[..., :tk] = dense
        dense = buf[..., :tk]
        if g > 1:
            dense = dense.view(hkv, g, tq, tk) if hb == h else dense.view(1, 1, tq, tk)
            attn_bias = dense.unsqueeze(0).expand(b, hkv, g, tq, tk)
        else:
            attn_bias = dense.unsqueeze(0).expand(b, h, tq, tk)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D)
    if g > 1:  # BMGHK: G = kv heads, H = query heads per kv head
        qt = qt.reshape(b, tq, hkv, g, d)
        kt = kt.unsqueeze(3).expand(b, tk, hkv, g, d)
        vt = vt.unsqueeze(3).expand(b, tk, hkv, g, v.shape[-1])
    out = xops.memory_efficient_attention(qt, kt, vt, attn_bias=attn_bias, scale=scale)
    return out.reshape(b, tq, h, v.shape[-1]).transpose(1, 2)


def _xformers(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
              scale: float | None = None) -> Tensor:
    check_call("xformers", q, k, v, causal, bias, window)
    return _xformers_impl(q, k, v, causal, bias, window, scale)


def _probe_xformers(dev: str) -> Availability:
    xops, why = _xformers_import()
    if xops is None:
        return False, why
    q, k, v = _tiny(dev, torch.float16)
    try:
        _xformers_impl(q, k, v, True, None, None, None)
        torch.cuda.synchronize()
    except Exception as exc:  # e.g. a wheel built for another torch: "No operator found for ..."
        return False, f"xformers imports but cannot run here (wheel built for another torch?): {_first_line(exc, 200)}"
    return True, ""


# ---------------------------------------------------------------------------------------------------------------
# FlexAttention.

_FLEX_COMPILED: dict[str, Callable[..., Any]] = {}
_BLOCK_MASKS = _LRU(32)


def _flex_mode(dev: str) -> str:
    if dev == "cuda" or os.environ.get("ABLATE_FLEX_COMPILE_CPU", "") not in ("", "0"):
        return "compiled"
    return "eager"


# Compiled flex specialises on shapes/dtype/GQA/score_mod (dynamic=False), so a sweep or a test matrix needs many
# graphs of the one flex_attention code object. Past dynamo's default recompile_limit (8) dynamo runs the frame
# *eagerly* (unfused, materialised scores) with only a log warning -- on the first H100 run every flex call after the
# 9th specialisation did, while reported as "flex:compiled". Compiled calls therefore run with this limit and
# fullgraph=True: past it (or on any graph break) they raise instead of degrading.
FLEX_RECOMPILE_LIMIT = 128


def _flex_callable(dev: str) -> Callable[..., Any]:
    from torch.nn.attention.flex_attention import flex_attention

    if _flex_mode(dev) == "eager":
        return flex_attention
    if "fn" not in _FLEX_COMPILED:
        _FLEX_COMPILED["fn"] = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    return _FLEX_COMPILED["fn"]


def _compile_guard(limit: int) -> Any:
    """Dynamo config for a compiled kernel call: at least ``limit`` recompilations, and a hard error (never a silent
    eager run) once the limit is reached."""
    cfg = torch._dynamo.config
    over: dict[str, Any] = {}
    for name in ("recompile_limit", "cache_size_limit"):  # older torch: cache_size_limit (later an alias)
        if hasattr(cfg, name):
            if getattr(cfg, name) < limit:
                over[name] = limit
            break
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(cfg, name):
            over[name] = True
            break
    return cfg.patch(**over)


def _run_compiled(key: str, fn: Callable[..., Tensor], *args: Any, **kw: Any) -> Tensor:
    """Call a torch.compile'd kernel under :func:`_compile_guard`; the two compile-time refusals that are limits of
    the machine or of the compile cache (not bugs in the request) become UnavailableError with the reason."""
    try:
        with _compile_guard(FLEX_RECOMPILE_LIMIT):
            return fn(*args, **kw)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if type(exc).__name__ == "FailOnRecompileLimitHit":
            raise UnavailableError(f"{key}: torch.compile cache full ({FLEX_RECOMPILE_LIMIT} specialisations of "
                                   f"flex_attention in this process; raise {__name__}.FLEX_RECOMPILE_LIMIT); "
                                   f"refusing to run it uncompiled") from exc
        if "out of resource" in text and "Hardware limit" in text:
            at = text.find("out of resource")
            raise UnavailableError(f"{key}: the Triton kernel compiled for these inputs does not fit this GPU's "
                                   f"shared memory ({_first_line(text[at:], 200)})") from exc
        raise


def _flex_block_mask(tq: int, tk: int, causal: bool, window: int | None, device: torch.device) -> Any:
    if not causal and window is None:
        return None
    from torch.nn.attention.flex_attention import create_block_mask

    off = tk - tq

    def make() -> Any:
        if window is None:
            def mask_mod(b, h, qi, kv):  # noqa: ANN001
                return kv <= qi + off
        else:
            def mask_mod(b, h, qi, kv):  # noqa: ANN001
                return (kv <= qi + off) & (kv > qi + off - window)
        return create_block_mask(mask_mod, None, None, tq, tk, device=device)

    return _BLOCK_MASKS.get_or((tq, tk, causal, window, str(device)), make)


def _flex_score_mod(bias: Any, tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Any:
    if bias is None:
        return None
    # flex computes scores in float32 (float64 for float64 inputs); ALiBi slopes are captured in that precision
    work = torch.float64 if dtype == torch.float64 else torch.float32
    off = tk - tq
    slopes = _bias_slopes(bias)
    if slopes is not None:
        sl = slopes.to(device=device, dtype=work)

        def alibi(score, b, h, qi, kv):  # noqa: ANN001
            return score - sl[h] * (qi + off - kv).abs()

        return alibi
    # A dense (Hb, Tq, Tk) bias is read tile by tile inside the kernel. It is kept in the input dtype for fp16/bf16
    # (as SDPA and naive add it): half the memory traffic and shared memory of a float32 copy. With a float32 bias the
    # compiled bf16 head_dim-64 kernel on H100 (torch 2.11) asked for 240 KiB of shared memory (limit 227 KiB).
    dense = bias.dense(tq, tk, device, dtype if dtype in (torch.float16, torch.bfloat16) else work)
    if dense.dim() == 2:
        dense = dense.unsqueeze(0)
    dense = dense.contiguous()
    if dense.shape[0] == 1:
        d2 = dense[0]

        def shared_bias(score, b, h, qi, kv):  # noqa: ANN001
            return score + d2[qi, kv]

        return shared_bias

    def head_bias(score, b, h, qi, kv):  # noqa: ANN001  (h: query head, also under GQA)
        return score + dense[h, qi, kv]

    return head_bias


def _flex_kernel_options(dev: str, bias: Any) -> dict[str, Any] | None:
    """Triton options for compiled CUDA flex. A dense score bias is a (BLOCK_M, BLOCK_N) tile loaded in every loop
    iteration, which Triton's software pipeliner may stage in shared memory once per pipeline stage; such kernels use
    2 stages (forward and backward) instead of the default 3 to keep a margin below the per-block limit (227 KiB on
    H100). Costs some speed on dense-bias (T5) flex only; ALiBi and masks keep the defaults."""
    if dev == "cuda" and bias is not None and _bias_slopes(bias) is None:
        return {"num_stages": 2}
    return None


def _flex_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
               scale: float | None) -> Tensor:
    tq, tk = q.shape[2], k.shape[2]
    dev = q.device.type
    fn = _flex_callable(dev)
    block_mask = _flex_block_mask(tq, tk, causal, window, q.device)
    score_mod = _flex_score_mod(bias, tq, tk, q.device, q.dtype)
    kw: dict[str, Any] = {"score_mod": score_mod, "block_mask": block_mask, "scale": scale}
    if q.shape[1] != k.shape[1]:
        kw["enable_gqa"] = True
    opts = _flex_kernel_options(dev, bias) if _flex_mode(dev) == "compiled" else None
    if opts:
        kw["kernel_options"] = opts
    if dev == "cpu" and not torch.is_grad_enabled():
        # torch refuses CPU flex for inputs that require grad even under no_grad; no graph is built anyway
        q, k, v = q.detach(), k.detach(), v.detach()
    if _flex_mode(dev) == "compiled":
        return _run_compiled("flex", fn, q, k, v, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return fn(q, k, v, **kw)


def _flex(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
          scale: float | None = None) -> Tensor:
    check_call("flex", q, k, v, causal, bias, window)
    return _flex_impl(q, k, v, causal, bias, window, scale)


def _probe_flex(dev: str) -> Availability:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False, f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs >= 2.5)"
    if dev == "cuda":
        try:
            import triton  # noqa: F401  # type: ignore[import-not-found]
        except ImportError:
            return False, "compiled FlexAttention needs triton (pip install triton)"
    return True, ""


# ---------------------------------------------------------------------------------------------------------------
# Sliding window: the fastest path available for the request.


def _sliding_plan(q: Tensor, k: Tensor, v: Tensor, bias: Any, window: int | None) -> str:
    """flash_attn (CUDA, fp16/bf16, no bias or FA2 ALiBi) > compiled flex (CUDA) > SDPA with a band mask."""
    if q.is_cuda:
        if q.dtype in (torch.float16, torch.bfloat16) and ATTENTION.get("flash_attn").available("cuda")[0]:
            try:
                flash_ok = _dynamic_refusal("flash_attn", q, k, v, True, bias, window) is None
            except UnavailableError:
                flash_ok = False
            if flash_ok:
                return "flash_attn"
        if ATTENTION.get("flex").available("cuda")[0] and q.dtype != torch.float64:
            return "flex"
    return "sdpa"


def _sliding_window(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                    scale: float | None = None) -> Tensor:
    check_call("sliding_window", q, k, v, causal, bias, window)
    plan = _sliding_plan(q, k, v, bias, window)
    if plan == "flash_attn":
        return _flash_impl(q, k, v, True, bias, window, scale)
    if plan == "flex":
        return _flex_impl(q, k, v, True, bias, window, scale)
    return _sdpa_impl("sdpa", q, k, v, True, bias, window, scale)


# ---------------------------------------------------------------------------------------------------------------
# Naive reference and linear attention.


def _naive(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
           scale: float | None = None) -> Tensor:
    """softmax(Q K^T * scale + bias + mask) V, materialised, in the input dtype."""
    check_call("naive", q, k, v, causal, bias, window)
    tq, tk = q.shape[2], k.shape[2]
    k, v = _expand_kv(k, v, q.shape[1])
    scores = (q @ k.transpose(-2, -1)) * _default_scale(q, scale)
    if bias is not None:
        scores = scores + bias.dense(tq, tk, q.device, q.dtype)
    allowed = allowed_mask(tq, tk, causal, window, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _phi(x: Tensor) -> Tensor:
    return F.elu(x) + 1.0


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, chunk_size: int = LINEAR_CHUNK) -> Tensor:
    """Katharopoulos et al. 2020 linear attention with feature map ``elu(x) + 1`` (no softmax, no scale).

    Non-causal: ``phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(K_j))``. Causal: the same with prefix sums over
    ``j <= p``, computed chunk by chunk (an intra-chunk masked ``C x C`` product plus a running ``D x Dv`` state),
    so memory is O(T*D + C*C) and no ``Tq x Tk`` matrix is ever formed. ``Tq < Tk``: queries are the last ``Tq``
    positions (the first ``Tk - Tq`` keys only feed the initial state). Half inputs accumulate in float32.
    """
    if chunk_size < 1:
        raise ConfigError(f"linear attention chunk_size must be >= 1, got {chunk_size}")
    b, h, tq, d = q.shape
    hkv, tk, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = h // hkv
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    fq = _phi(q.to(work)).reshape(b, hkv, g, tq, d)  # query heads grouped under their kv head
    fk = _phi(k.to(work))  # (B, Hkv, Tk, D)
    vv = v.to(work)
    tiny = torch.finfo(work).tiny
    if not causal:
        kv = fk.transpose(-2, -1) @ vv  # (B, Hkv, D, Dv)
        z = fk.sum(dim=-2)  # (B, Hkv, D)
        num = fq @ kv.unsqueeze(2)  # (B, Hkv, G, Tq, Dv)
        den = fq @ z[:, :, None, :, None]  # (B, Hkv, G, Tq, 1)
        out = num / den.clamp_min(tiny)
    else:
        p0 = tk - tq
        state = fk[:, :, :p0].transpose(-2, -1) @ vv[:, :, :p0]  # keys before the first query: (B, Hkv, D, Dv)
        z = fk[:, :, :p0].sum(dim=-2)  # (B, Hkv, D)
        tri = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
        outs = []
        for s in range(0, tq, chunk_size):
            e = min(s + chunk_size, tq)
            qc = fq[:, :, :, s:e]  # (B, Hkv, G, c, D)
            kc = fk[:, :, p0 + s:p0 + e]  # (B, Hkv, c, D)
            vc = vv[:, :, p0 + s:p0 + e]
            a = (qc @ kc.transpose(-2, -1).unsqueeze(2)).masked_fill(~tri[: e - s, : e - s], 0.0)  # (.., c, c)
            num = a @ vc.unsqueeze(2) + qc @ state.unsqueeze(2)
            den = a.sum(dim=-1, keepdim=True) + qc @ z[:, :, None, :, None]
            outs.append(num / den.clamp_min(tiny))
            state = state + kc.transpose(-2, -1) @ vc
            z = z + kc.sum(dim=-2)
        out = torch.cat(outs, dim=-2)
    return out.reshape(b, h, tq, dv).to(q.dtype)


def _linear(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
            scale: float | None = None) -> Tensor:
    """Linear attention; ``scale`` has no meaning without a softmax and is ignored."""
    check_call("linear", q, k, v, causal, bias, window)
    return linear_attention(q, k, v, causal=causal, chunk_size=LINEAR_CHUNK)


# ---------------------------------------------------------------------------------------------------------------
# backend_of: what really runs.

_BACKEND_CACHE = _LRU(256)


def _signature(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> tuple:
    return (key, tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, str(q.device),
            tuple(t.is_contiguous() for t in (q, k, v)),
            torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)), causal, window,
            None if bias is None else ("alibi" if _bias_slopes(bias) is not None else getattr(bias, "kind", "dense")),
            os.environ.get("ABLATE_FLASH_ATTN", ""), os.environ.get("ABLATE_FLEX_COMPILE_CPU", ""))


def _xformers_op_name(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    try:  # what xformers' dispatcher picks for an equivalent causal/non-causal call
        from xformers.ops import fmha  # type: ignore[import-not-found]

        ke, ve = _expand_kv(k, v, q.shape[1])
        qt, kt, vt = (x.transpose(1, 2) for x in (q, ke, ve))
        ab = fmha.attn_bias.LowerTriangularFromBottomRightMask() if causal else None
        op = fmha.dispatch._dispatch_fw(fmha.Inputs(query=qt, key=kt, value=vt, attn_bias=ab), False)
        return str(getattr(op, "NAME", op.__name__))
    except Exception:
        return ""


def _expand_suffix(key: str, q: Tensor, k: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    expand = _sdpa_route(key, q.device.type, q.shape[1], k.shape[1], q.shape[2], k.shape[2], causal,
                         bias is not None, window)[1]
    return "+expand_kv" if expand else ""


def backend_of(key: str, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None,
               window: int | None = None) -> str:
    """Name what really runs for these inputs, e.g. ``"sdpa:flash"``, ``"sdpa:math"``, ``"flash_attn:fa4"``,
    ``"flex:eager"``, ``"sliding_window:sdpa:flash_cpu"``. Raises like :func:`check_call` when it cannot run.
    ``"+expand_kv"`` marks an SDPA call whose K/V heads were materialised for GQA/MQA (e.g.
    ``"sdpa:efficient+expand_kv"``), see :func:`_sdpa_route`.

    For the SDPA family the call is executed once under a dispatch recorder and the aten kernel actually reached is
    read off (cached by shape/dtype/device/flags)."""
    check_call(key, q, k, v, causal, bias, window)
    sig = _signature(key, q, k, v, causal, bias, window)
    if sig in _BACKEND_CACHE:
        return _BACKEND_CACHE[sig]
    fn = attention_fn(key)
    if key == "naive":
        name = "naive"
    elif key.startswith("sdpa"):
        name = "sdpa:" + _sdpa_kernel_name(lambda: fn(q, k, v, causal=causal, bias=bias, window=window))
        name += _expand_suffix(key, q, k, causal, bias, window)
    elif key == "flash_attn":
        name = "flash_attn:" + _flash_variant(q, bias)
    elif key == "xformers":
        op = _xformers_op_name(q, k, v, causal, bias, window)
        name = "xformers:" + op if op else "xformers"
    elif key == "flex":
        name = "flex:" + _flex_mode(q.device.type)
    elif key == "sliding_window":
        plan = _sliding_plan(q, k, v, bias, window)
        if plan == "sdpa":
            name = "sliding_window:sdpa:" + _sdpa_kernel_name(
                lambda: _sdpa_impl("sdpa", q, k, v, True, bias, window, None))
            name += _expand_suffix("sdpa", q, k, True, bias, window)
        elif plan == "flash_attn":
            name = "sliding_window:flash_attn:" + _flash_variant(q, bias)
        else:
            name = f"sliding_window:flex:{_flex_mode(q.device.type)}"
    elif key == "linear":
        name = "linear:chunked" if causal else "linear:parallel"
    else:  # pragma: no cover - every key is handled above
        name = key
    _BACKEND_CACHE[sig] = name
    return name


# ---------------------------------------------------------------------------------------------------------------
# Registration.

_DESCRIPTIONS: dict[str, tuple[str, str, Callable[..., Tensor], Callable[..., Availability]]] = {
    "naive": ("materialised softmax(QK^T*scale + bias + mask)V in the input dtype (the reference)",
              "Vaswani et al. 2017", _naive, _availability("naive")),
    "sdpa": ("torch scaled_dot_product_attention with PyTorch's default kernel dispatch",
             "Vaswani et al. 2017 (PyTorch SDPA)", _make_sdpa("sdpa"), _availability("sdpa")),
    "sdpa_flash": ("SDPA forced to its FlashAttention kernel (FA2 inside PyTorch on CUDA; flash_cpu on CPU)",
                   "Dao 2023 FlashAttention-2", _make_sdpa("sdpa_flash"),
                   _availability("sdpa_flash", _probe_sdpa("sdpa_flash"))),
    "sdpa_efficient": ("SDPA forced to its memory-efficient (xFormers/CUTLASS) kernel",
                       "Rabe & Staats 2021; Lefaudeux et al. 2022 xFormers", _make_sdpa("sdpa_efficient"),
                       _availability("sdpa_efficient", _probe_sdpa("sdpa_efficient"))),
    "sdpa_cudnn": ("SDPA forced to its cuDNN fused-attention kernel",
                   "NVIDIA cuDNN 9 fused attention (Shah et al. 2024 FlashAttention-3 style)",
                   _make_sdpa("sdpa_cudnn"), _availability("sdpa_cudnn", _probe_sdpa("sdpa_cudnn"))),
    "sdpa_math": ("SDPA forced to its unfused math (reference) implementation",
                  "Vaswani et al. 2017", _make_sdpa("sdpa_math"), _availability("sdpa_math")),
    "flash_attn": ("Dao's flash-attn package: FA4 (CuTe DSL) if importable on sm90+, else FlashAttention-2",
                   "Dao 2023 FlashAttention-2; Shah et al. 2024 FlashAttention-3/Dao FA4", _flash_attn,
                   _availability("flash_attn", _probe_flash)),
    "xformers": ("xFormers memory_efficient_attention (BMGHK layout for GQA)",
                 "Lefaudeux et al. 2022 xFormers", _xformers, _availability("xformers", _probe_xformers)),
    "flex": ("FlexAttention: block_mask for causal/window, score_mod for ALiBi/bias (compiled on CUDA, eager on CPU)",
             "Dong et al. 2024 FlexAttention", _flex, _availability("flex", _probe_flex)),
    "sliding_window": ("local causal attention over the last W keys via the fastest path (flash_attn, flex, SDPA mask)",
                       "Beltagy et al. 2020 Longformer / Child et al. 2019", _sliding_window,
                       _availability("sliding_window")),
    "linear": ("linear attention, feature map elu(x)+1, chunked causal prefix sums (O(n) memory; scale unused)",
               "Katharopoulos et al. 2020", _linear, _availability("linear")),
}

for _key in KEYS:
    _desc, _paper, _fn, _avail = _DESCRIPTIONS[_key]
    ATTENTION.register(_key, description=_desc, paper=_paper, available=_avail, **_static_supports(_key))(_fn)
del _key, _desc, _paper, _fn, _avail
