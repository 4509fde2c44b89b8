"""The attention contract: one call signature, the capability vocabulary, request validation, masks, and the
:class:`AttentionSpec` through which every key is registered in :data:`ablate.registry.keys.ATTENTION`.

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
``backend_of`` (package level) names what really runs (e.g. the SDPA kernel PyTorch dispatched to, with
``+expand_kv`` where K/V heads are materialised for GQA because that kernel path has no ``enable_gqa``:
``sdpa_efficient`` on CUDA, and the bottom-right-causal ``CausalBias`` path of ``sdpa_flash``/``sdpa_efficient``).

Registration. Each backend module declares one :class:`AttentionSpec` per key next to its code and calls
:meth:`AttentionSpec.register`; the spec is the one place that states everything about the key (capabilities per
device, availability, FLOP count, reference, required settings, what ``backend_of`` reports). :data:`SPECS` and
:func:`spec` look them up; nothing outside this package needs to branch on key names.

Environment knobs: ``ABLATE_FLEX_COMPILE_CPU=1`` compiles FlexAttention on CPU too (with torch 2.13 it works for
float32/16/bf16 -- not float64 -- but costs 7-19 s of compilation per new shape on 2 cores, so the CPU default is the
eager, unfused path, reported as ``"flex:eager"``); ``ABLATE_FLASH_ATTN=fa2|fa4`` pins the flash-attn generation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor

from ablate.errors import ConfigError, UnavailableError, UnknownKeyError
from ablate.core.attention_cost import attention_flops
from ablate.registry.keys import ATTENTION, Availability, Registry

__all__ = [
    "BUILTIN", "FEATURES", "SETTINGS", "ScoreBiasLike", "AttentionSpec", "SPECS", "LAYER_KERNELS", "spec", "attention_fn", "check_call",
    "supports", "allowed_mask", "fa_flops", "FLOPS_FA", "FLOPS_LINEAR", "full_caps", "LAYOUTS",
]

FEATURES: tuple[str, ...] = ("causal", "bidirectional", "bias", "alibi", "window", "gqa", "kv_cache", "backward",
                             "bias_grad")  # bias_grad: backpropagates into a learned score bias (T5)
# Call settings a key may require (AttentionSpec.requires), each with how a model config sets it; the names are also
# ModelConfig fields.
SETTINGS: dict[str, str] = {"window": "cfg.window=W"}
# Memory layouts of q/k/v a package's own function takes: (batch, heads, tokens, dim) or (batch, tokens, heads, dim).
LAYOUTS: tuple[str, ...] = ("bhtd", "bthd")

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
                torch.float64: "float64"}
HALF = ("float16", "bfloat16")
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")

FLOPS_FA = "fa"  # FlashAttention convention (ablate.core.flops.attention_flops)
FLOPS_LINEAR = "linear"  # the linear-attention algorithm that ran (ablate.core.flops.linear_attention_flops)


class ScoreBiasLike(Protocol):
    """What attention needs from ``ablate.variants.positions.ScoreBias``."""

    alibi_slopes: Tensor | None
    kind: str

    def dense(self, tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Tensor: ...


class FlopsFn(Protocol):
    """FLOPs of one pass (``fwd`` / ``bwd`` / ``fwd_bwd``) of self-attention over ``seq_len`` tokens and the
    convention they follow (:data:`FLOPS_FA`, :data:`FLOPS_LINEAR`). ``chunk`` overrides an algorithm's chunk size
    (recomputing rows measured with another one); None = the kernel's own; kernels without chunks ignore it."""

    def __call__(self, pass_: str, *, batch: int, n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int,
                 causal: bool, window: int | None, chunk: int | None = None) -> tuple[float, str]: ...


def fa_flops(pass_: str, *, batch: int, n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int, causal: bool,
             window: int | None, chunk: int | None = None) -> tuple[float, str]:
    """The FlashAttention-convention count of softmax attention (:func:`ablate.core.flops.attention_flops`)."""
    return (attention_flops(batch, n_heads, seq_len, seq_len, head_dim, causal=causal, window=window, mode=pass_),
            FLOPS_FA)


_FULL = dict(causal=True, bidirectional=True, bias=True, alibi=True, window=True, gqa=True, kv_cache=True,
             backward=True, bias_grad=True)


def full_caps(**over: Any) -> dict[str, Any]:
    """Every feature on, with ``over`` applied (``dtypes=...`` is required by a spec)."""
    d = dict(_FULL)
    d.update(over)
    return d


# ---------------------------------------------------------------------------------------------------------------
# Small helpers shared by the backends.


def _device_type(device: Any = None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def first_line(x: Any, limit: int = 300) -> str:
    s = " ".join(str(x).split())
    return s[:limit]


def bias_slopes(bias: Any) -> Tensor | None:
    return None if bias is None else getattr(bias, "alibi_slopes", None)


def default_scale(q: Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def expand_kv_heads(k: Tensor, v: Tensor, h: int) -> tuple[Tensor, Tensor]:
    g = h // k.shape[1]
    if g == 1:
        return k, v
    return k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)


def tiny_inputs(dev: str, dtype: torch.dtype, t: int = 64, d: int = 64, h: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Small fixed inputs for availability probes."""
    g = torch.Generator(device="cpu").manual_seed(0)
    return tuple(torch.randn(1, h, t, d, generator=g).to(device=dev, dtype=dtype) for _ in range(3))  # type: ignore


class LRUCache(OrderedDict):
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


_MASKS = LRUCache(32)


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


def masked_dense_bias(bias: Any, tq: int, tk: int, causal: bool, window: int | None, device: torch.device,
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
# The spec: everything about one key, stated where the key is registered.

Refusal = Callable[[Tensor, Tensor, Tensor, bool, Any, "int | None"], "str | None"]
BackendName = Callable[[Tensor, Tensor, Tensor, bool, Any, "int | None"], str]

SPECS: dict[str, "AttentionSpec"] = {}
# layer key -> the kernel key it calls (filled by ``LayerSpec.register`` in the layer module, which imports this one)
LAYER_KERNELS: dict[str, str] = {}
BUILTIN = Registry("attention")  # the built-in keys; ablate.registry.keys.build() copies them into ATTENTION
_AVAIL: dict[tuple[str, str], Availability] = {}  # availability probes, cached per key and device type


@dataclass(frozen=True, eq=False)
class AttentionSpec:
    """Everything about one attention key. Fields:

    * ``key``, ``fn`` (the registered callable, with the signature above), ``description``, ``paper`` (one line
      each, shown by ``ablate list``);
    * ``caps``: per device type the features of :data:`FEATURES` it serves (bool) and its ``dtypes``;
      ``Entry.supports`` is derived from it (:meth:`static_supports`);
    * ``no_device_reason``: why it cannot run on a device type missing from ``caps``: device type (or ``"*"`` for
      any) -> a reason, or a callable ``(device) -> reason`` (when it depends on what is installed); default
      ``"does not run on <device>"``;
    * ``probe``: ``(device) -> (ok, reason)`` run once per device type the key has caps for (None: always there);
    * ``flops``: :class:`FlopsFn`, the FLOPs of the algorithm that runs, with its convention;
    * ``reference``: the implementation its outputs and gradients are compared against (same signature; run on
      upcast inputs): ``naive`` for softmax kernels (``naive`` itself is checked against an independent loop in the
      tests), the O(n^2) form of linear attention for ``linear``;
    * ``backend_name``: ``(q, k, v, causal, bias, window) -> str``, what really runs (for ``backend_of``; inputs
      already checked);
    * ``compiled``: compiles once per new shape (``torch.compile``) where :meth:`is_compiled` says so -- on CUDA,
      on CPU only with ``ABLATE_FLEX_COMPILE_CPU=1``; ``compiles_on``: ``(device type) -> bool`` for that;
    * ``requires``: call settings (:data:`SETTINGS`) it cannot run without, e.g. ``("window",)``;
    * ``refusal``: ``(q, k, v, causal, bias, window) -> reason | None``, limits that depend on the inputs or on
      what is installed (checked last by :func:`check_call`);
    * ``feature_check``: ``(feature, device type) -> bool``, a further condition on a feature its caps grant
      (e.g. ``flash_attn``'s ALiBi needs FlashAttention-2 installed), used by :func:`supports`;
    * ``reference_name``: how result rows name the reference (``check_ref``);
    * ``chunk``: the algorithm's chunk size where its FLOPs depend on one (rows record it as ``linear_chunk``);
    * ``layout``: the memory layout the package's own function takes, ``"bhtd"`` (the registry's signature, SDPA's)
      or ``"bthd"`` (flash-attn, xFormers); ``native``: that function as a callable on contiguous tensors in
      ``layout`` (``(q, k, v, *, causal, bias, window, scale) -> out`` in ``layout``), so a benchmark can time the
      package's own call with no layout copies inside (``fn`` = convert, ``native``, convert back);
      ``native_name``: what ``native`` calls (e.g. ``flash_attn.cute.flash_attn_func``);
    * ``materialises_scores``: builds the ``(B, H, Tq, Tk)`` score matrix (O(T^2) memory per head);
    * ``native_bias``: takes a position's score bias without building the dense ``(H, Tq, Tk)`` tensor.
    """

    key: str
    fn: Callable[..., Tensor]
    description: str
    paper: str
    caps: Mapping[str, Mapping[str, Any]]
    flops: FlopsFn
    reference: Callable[..., Tensor]
    backend_name: BackendName
    no_device_reason: Mapping[str, "str | Callable[[str], str]"] = field(default_factory=dict)
    probe: Callable[[str], Availability] | None = None
    compiled: bool = False
    compiles_on: Callable[[str], bool] | None = None
    requires: tuple[str, ...] = ()
    refusal: Refusal | None = None
    feature_check: Callable[[str, str], bool] | None = None
    materialises_scores: bool = False
    native_bias: bool = False
    reference_name: str = "naive"
    chunk: int | None = None
    layout: str = "bhtd"
    native: Callable[..., Tensor] | None = None
    native_name: str = ""

    def __post_init__(self) -> None:
        caps = {}
        for dev, c in self.caps.items():
            unknown = set(c) - set(FEATURES) - {"dtypes"}
            if unknown or "dtypes" not in c:
                raise ValueError(f"attention {self.key!r} caps[{dev!r}]: unknown {sorted(unknown)} or no dtypes")
            caps[dev] = MappingProxyType({**{f: bool(c.get(f, False)) for f in FEATURES}, "dtypes": tuple(c["dtypes"])})
        object.__setattr__(self, "caps", MappingProxyType(caps))
        object.__setattr__(self, "no_device_reason", MappingProxyType(dict(self.no_device_reason)))
        object.__setattr__(self, "requires", tuple(self.requires))
        if set(self.requires) - set(SETTINGS):
            raise ValueError(f"attention {self.key!r} requires unknown settings {self.requires}; "
                             f"known: {list(SETTINGS)}")
        if self.compiled and self.compiles_on is None:
            raise ValueError(f"attention {self.key!r} is compiled: say where (compiles_on)")
        if self.layout not in LAYOUTS:
            raise ValueError(f"attention {self.key!r}: layout {self.layout!r}; valid: {', '.join(LAYOUTS)}")
        if self.layout != "bhtd" and self.native is None:
            raise ValueError(f"attention {self.key!r}: a {self.layout} layout needs its native callable")

    # -- derived views -------------------------------------------------------------------------------------------

    def static_supports(self) -> dict[str, Any]:
        """``Entry.supports``: per feature True (every device), a tuple of device types, or False; dtypes, devices."""
        devs = tuple(self.caps)
        out: dict[str, Any] = {}
        for f in FEATURES:
            yes = tuple(d for d in devs if self.caps[d].get(f))
            out[f] = True if yes == devs else (yes if yes else False)
        dtypes: list[str] = []
        for d in devs:
            dtypes += [x for x in self.caps[d]["dtypes"] if x not in dtypes]
        out["dtypes"] = tuple(dtypes)
        out["devices"] = devs
        return out

    def available(self, device: Any = None) -> Availability:
        """(ok, reason) for running on ``device`` (None: cuda if available, else cpu); probed once per device type."""
        dev = _device_type(device)
        ck = (self.key, dev)
        if ck not in _AVAIL:
            if dev not in self.caps:
                why = self.no_device_reason.get(dev, self.no_device_reason.get("*", f"does not run on {dev}"))
                res: Availability = (False, why(dev) if callable(why) else why)
            elif dev == "cuda" and not torch.cuda.is_available():
                res = (False, "needs CUDA (torch.cuda.is_available() is False)")
            elif self.probe is None:
                res = (True, "")
            else:
                try:
                    res = self.probe(dev)
                except Exception as exc:  # a probe must never take the caller down
                    res = (False, f"probe failed: {type(exc).__name__}: {first_line(exc)}")
            _AVAIL[ck] = res
        return _AVAIL[ck]

    def is_compiled(self, device: Any) -> bool:
        """Whether calls on ``device`` run a ``torch.compile``'d kernel (compiling once per new shape)."""
        return bool(self.compiled and self.compiles_on is not None and self.compiles_on(_device_type(device)))

    def register(self, table: Registry | None = None) -> "AttentionSpec":
        """Put the key into ``table`` -- the built-in modules pass :data:`BUILTIN`, which
        :func:`ablate.registry.keys.build` copies into :data:`ablate.registry.keys.ATTENTION`; a plugin leaves it out and
        registers in ``ATTENTION`` directly (duplicates rejected there) -- and into :data:`SPECS`."""
        (ATTENTION if table is None else table).register(self.key, description=self.description, paper=self.paper, available=self.available,
                           **self.static_supports())(self.fn)
        SPECS[self.key] = self
        return self


def spec(key: str) -> AttentionSpec:
    """The :class:`AttentionSpec` of ``key``'s kernel (a layer key: the kernel its layer calls; UnknownKeyError
    lists the valid keys)."""
    try:
        return SPECS[key]
    except KeyError:
        ATTENTION.get(key)  # unknown: UnknownKeyError lists the registered keys
        if key in LAYER_KERNELS:
            return SPECS[LAYER_KERNELS[key]]
        raise UnknownKeyError("attention spec", key, list(SPECS)) from None  # registered without a spec


def attention_fn(key: str) -> Callable[..., Tensor]:
    """The callable registered under ``key`` (UnknownKeyError lists the valid keys)."""
    return ATTENTION.get(key).fn


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


def check_call(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any = None,
               window: int | None = None) -> None:
    """Raise :class:`ConfigError` / :class:`UnavailableError` (one-line reason) if ``key`` cannot serve this call."""
    entry = ATTENTION.get(key)  # UnknownKeyError lists the valid keys
    s = spec(key)
    _validate(q, k, v, causal, bias, window)
    dev = q.device.type
    caps = s.caps.get(dev)
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
        slopes = bias_slopes(bias)
        if slopes is not None:
            if not (caps.get("alibi") or caps.get("bias")):
                raise UnavailableError(f"{key} does not support ALiBi or additive score bias on {dev}")
        elif not caps.get("bias"):
            raise UnavailableError(f"{key} does not support an additive score bias "
                                   f"({getattr(bias, 'kind', 'dense')}) on {dev}")
    given = {"window": window}
    for name in s.requires:
        if given[name] is None:
            raise ConfigError(f"{key} needs a {name} ({SETTINGS[name]})")
    why = s.refusal(q, k, v, causal, bias, window) if s.refusal is not None else None
    if why:
        raise UnavailableError(why)


def supports(key: str, feature: str | torch.dtype, device: Any = None) -> bool:
    """Whether ``key`` supports ``feature`` on ``device`` (None: cuda if available, else cpu).

    ``feature`` is one of :data:`FEATURES`, a dtype (``torch.bfloat16`` or ``"bfloat16"``) or a device type.
    """
    s = spec(key)
    dev = _device_type(device)
    if isinstance(feature, torch.dtype):
        feature = _DTYPE_NAMES.get(feature, str(feature))
    if feature in ("cpu", "cuda", "mps", "xpu"):
        return feature in s.caps
    caps = s.caps.get(dev)
    if feature in ALL_DTYPES:
        return caps is not None and feature in caps["dtypes"]
    if feature not in FEATURES:
        raise ConfigError(f"unknown attention feature {feature!r}; valid: {', '.join(FEATURES)}, a dtype or a device")
    if caps is None or not caps.get(feature):
        return False
    if s.feature_check is not None:
        return bool(s.feature_check(feature, dev))
    return True
