"""The attention *layer* is what an attention key names: its projections, the q/k transform hooks, the kernel it
calls, its cache layout, parameter count, cache bytes and FLOPs, stated once in a :class:`LayerSpec`.

Every kernel of :mod:`ablate.variants.attention` (``naive``, ``sdpa*``, ``flash_attn``, ``xformers``, ``flex``,
``sliding_window``, ``linear``) is the kernel of the standard layer, :class:`MultiHeadAttention` (q / kv / out
projections, grouped KV heads, ``k, v`` cached as ``(B, Hkv, T, D)``): :func:`layer_spec` gives that layer for any
kernel key. A different layer (a latent-KV attention, QK-norm, learned sinks) is one module: an ``nn.Module`` built
as ``cls(cfg)`` with ``forward(x, pos, bias, cache, layer)``, plus ``LayerSpec(...).register()`` -- from a plugin
too (docs/adding-a-variant.md). ``flops``, ``validate`` and the latency suite read counts and capabilities from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

from ablate.errors import UnknownKeyError
from ablate.registry.keys import ATTENTION, Registry
from ablate.variants.attention.cache import CacheLayout
from ablate.variants.attention.contract import (FEATURES, FLOPS_LINEAR, LAYER_KERNELS, SPECS, AttentionSpec, spec,
                                                supports)

__all__ = ["LayerSpec", "LAYERS", "layer_spec", "MultiHeadAttention", "KV_LAYOUT", "mha_params", "standard_layer",
           "kernel_keys"]

LAYERS: dict[str, "LayerSpec"] = {}  # layers registered explicitly; kernel keys get the standard layer on demand


def _kv_shapes(cfg: Any, batch: int, n: int) -> tuple[tuple[int, ...], ...]:
    shape = (batch, cfg.kv_heads, n, cfg.head_dim)
    return shape, shape


KV_LAYOUT = CacheLayout(names=("k", "v"), shapes=_kv_shapes, time_dim=2,
                        description="k and v, (B, Hkv, T, head_dim) each")


def mha_params(cfg: Any) -> int:
    """The standard layer's parameters: q ``d·H·hd``, kv ``d·2·Hkv·hd``, out ``H·hd·d`` (+ biases)."""
    d, h, hd, hkv = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.kv_heads
    return d * h * hd + d * 2 * hkv * hd + h * hd * d + ((h * hd + 2 * hkv * hd + d) if cfg.bias else 0)


class MultiHeadAttention(nn.Module):
    """The standard layer: ``q``, ``kv`` and ``out`` projections around the kernel of ``kernel`` (default
    ``cfg.attention``). Hooks, in order: :meth:`project` (x -> q, k, v), :meth:`transform_q` / :meth:`transform_k`
    (applied separately: the position's ``rotate_q`` / ``rotate_k``; a subclass adds QK-norm or per-head scales
    here), the cache's ``update``, :meth:`attend` (the kernel), ``out``."""

    def __init__(self, cfg: Any, kernel: str | None = None):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.attn = ATTENTION.get(kernel or cfg.attention).fn
        self.causal, self.window = cfg.causal, cfg.window

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.n_kv, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def transform_q(self, q: Tensor, pos: Any, offset: int, seq_len: int) -> Tensor:
        return pos.rotate_q(q, offset, seq_len)

    def transform_k(self, k: Tensor, pos: Any, offset: int, seq_len: int) -> Tensor:
        return pos.rotate_k(k, offset, seq_len)

    def attend_window(self, cache: Any) -> int | None:
        """The window the kernel masks with: the layer's own, narrowed by an evicting cache's."""
        held = cache.window() if cache is not None else None
        return self.window if held is None else min(w for w in (self.window, held) if w is not None)

    def forward(self, x: Tensor, pos: Any, bias: Any, cache: Any, layer: int) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.project(x)
        offset = cache.length if cache is not None else 0
        seq_len = offset + t
        if cache is not None and getattr(cache, "reposition", False):
            # StreamingLLM: raw keys kept; the n kept and new tokens sit at positions 0..n-1 within the cache.
            k, v = cache.update(layer, k, v)
            n = k.shape[2]
            q, k = self.transform_q(q, pos, n - t, n), self.transform_k(k, pos, 0, n)
        elif cache is not None and pos.needs_raw_cache:
            # Length-dependent rotation (dynamic NTK): keep raw keys, rotate all of them at the current length.
            q = self.transform_q(q, pos, offset, seq_len)
            k, v = cache.update(layer, k, v)
            k = self.transform_k(k, pos, 0, seq_len)
        else:
            q = self.transform_q(q, pos, offset, seq_len)
            k = self.transform_k(k, pos, offset, seq_len)
            if cache is not None:
                k, v = cache.update(layer, k, v)
        y = self.attend(q, k, v, bias, self.attend_window(cache), layer)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Any, window: int | None, layer: int) -> Tensor:
        """The attention core over the kept keys, ``(B, H, Tq, Dv)``: the kernel (a subclass adds sink logits or a
        second softmax map here; ``layer`` is the block's index)."""
        return self.attn(q, k, v, causal=self.causal, bias=bias, window=window)


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """Everything about one attention layer. Fields:

    * ``key`` (what ``model.attention`` names), ``module`` (built as ``module(cfg)``), ``kernel`` (the kernel key
      it calls: capabilities, availability, FLOP convention and reference come from that kernel's
      :class:`AttentionSpec`), ``description``, ``paper``;
    * ``params``: ``cfg -> int``, the parameters of one layer (what ``module(cfg)`` allocates);
    * ``cache``: its :class:`CacheLayout` (bytes per token derive from it);
    * ``flops``: ``(pass_, cfg, batch, seq_len, chunk) -> (FLOPs, convention)`` of one layer's attention core (the
      projections are counted as matmul parameters); default the kernel's count;
    * ``unsupported``: kernel features (:data:`FEATURES`) this layer does not offer although its kernel does;
    * ``check``: ``cfg -> reason | None``, a configuration the layer refuses (a one-line ConfigError);
    * ``materialises`` / ``native_bias``: override the kernel's ``materialises_scores`` / ``native_bias``;
    * ``state`` / ``state_description``: ``cfg -> int``, the elements of the fixed-size state one layer keeps per
      sequence when it decodes recurrently (a linear-attention layer), and what it is; default: the standard
      layer over a kernel whose FLOPs follow the linear-attention algorithm keeps ``d_k x d_v + d_k`` per KV head.
    """

    key: str
    module: Callable[[Any], nn.Module]
    kernel: str
    description: str = ""
    paper: str = ""
    params: Callable[[Any], int] = mha_params
    cache: CacheLayout = KV_LAYOUT
    flops: Callable[..., tuple[float, str]] | None = None
    unsupported: tuple[str, ...] = ()
    check: Callable[[Any], "str | None"] | None = None
    materialises: bool | None = None
    native_bias_: bool | None = field(default=None)
    state: Callable[[Any], int] | None = None
    state_description: str = ""

    def __post_init__(self) -> None:
        bad = set(self.unsupported) - set(FEATURES)
        if bad:
            raise ValueError(f"attention layer {self.key!r}: unknown features {sorted(bad)}; known: {list(FEATURES)}")

    # -- what the layer is made of -------------------------------------------------------------------------------

    @property
    def kernel_spec(self) -> AttentionSpec:
        return spec(self.kernel)

    @property
    def materialises_scores(self) -> bool:
        """Builds the ``(B, H, Tq, Tk)`` score matrix (O(T^2) memory per head)."""
        return self.kernel_spec.materialises_scores if self.materialises is None else self.materialises

    @property
    def native_bias(self) -> bool:
        """Takes a position's score bias without building the dense ``(H, Tq, Tk)`` tensor."""
        return self.kernel_spec.native_bias if self.native_bias_ is None else self.native_bias_

    def build(self, cfg: Any) -> nn.Module:
        return self.module(cfg)

    def cache_kinds(self) -> tuple[str, ...]:
        """The caches (:data:`ablate.variants.attention.cache.CACHES`) this layer decodes with: growing, static and
        sink-keeping (no mask needed) always, rolling where it can mask a window."""
        return ("growing", "static", "sink") + (("rolling",) if self.supports().get("window") else ())

    # -- counts ----------------------------------------------------------------------------------------------------

    def param_count(self, cfg: Any) -> int:
        """Parameters of one layer."""
        return int(self.params(cfg))

    def cache_per_token(self, cfg: Any) -> int:
        """Elements one token adds to one layer's cache."""
        return self.cache.per_token(cfg)

    def cache_bytes(self, cfg: Any, n_tokens: int, el_bytes: int, batch: int = 1) -> int:
        """Bytes of the cache of all ``cfg.n_layers`` layers holding ``n_tokens`` tokens of ``batch`` sequences."""
        return cfg.n_layers * self.cache_per_token(cfg) * n_tokens * el_bytes * batch

    def attention_flops(self, pass_: str, cfg: Any, *, batch: int, seq_len: int,
                        chunk: int | None = None) -> tuple[float, str]:
        """(FLOPs of one pass of one layer's attention core over ``seq_len`` tokens, convention)."""
        if self.flops is not None:
            return self.flops(pass_, cfg, batch=batch, seq_len=seq_len, chunk=chunk)
        return self.kernel_spec.flops(pass_, batch=batch, n_heads=cfg.n_heads, n_kv_heads=cfg.kv_heads,
                                      seq_len=seq_len, head_dim=cfg.head_dim, causal=cfg.causal, window=cfg.window,
                                      chunk=chunk)

    def recurrent_state(self, cfg: Any) -> tuple[int, str] | None:
        """(elements of one layer's fixed-size decode state per sequence, what it is), or None for a layer whose
        decode state is its cache (softmax attention: :meth:`cache_bytes`)."""
        if self.state is not None:
            return int(self.state(cfg)), self.state_description or "recurrent state"
        if self.attention_flops("fwd", cfg, batch=1, seq_len=1)[1] == FLOPS_LINEAR:
            d = cfg.head_dim
            return cfg.kv_heads * (d * d + d), "recurrent state (d_k x d_v + d_k per KV head)"
        return None

    def supports_on(self, feature: str, device: Any = None) -> bool:
        """Whether the layer offers ``feature`` on ``device``: its kernel does there (:func:`supports`) and the
        layer does not rule it out (:attr:`unsupported`)."""
        return feature not in self.unsupported and supports(self.kernel, feature, device)

    # -- registration ----------------------------------------------------------------------------------------------

    def supports(self) -> dict[str, Any]:
        """``Entry.supports``: the kernel's, less :attr:`unsupported`."""
        out = dict(self.kernel_spec.static_supports())
        for f in self.unsupported:
            out[f] = False
        return out

    def register(self, table: Registry | None = None) -> "LayerSpec":
        """Put the key into ``table`` (default :data:`ablate.registry.keys.ATTENTION`, what a plugin does; the
        registered callable is the kernel's) and into :data:`LAYERS`."""
        ks = self.kernel_spec
        (ATTENTION if table is None else table).register(
            self.key, description=self.description or ks.description, paper=self.paper or ks.paper,
            available=ks.available, **self.supports())(ks.fn)
        LAYERS[self.key] = self
        LAYER_KERNELS[self.key] = self.kernel
        return self


_STANDARD: dict[str, LayerSpec] = {}


def standard_layer(kernel: str) -> LayerSpec:
    """The standard multi-head layer over ``kernel``."""
    if kernel not in _STANDARD:
        ks = SPECS[kernel]
        _STANDARD[kernel] = LayerSpec(key=kernel, module=lambda cfg: MultiHeadAttention(cfg), kernel=kernel,
                                      description=ks.description, paper=ks.paper)
    return _STANDARD[kernel]


def layer_spec(key: str) -> LayerSpec:
    """The :class:`LayerSpec` attention ``key`` names (a kernel key: the standard layer over it)."""
    if key in LAYERS:
        return LAYERS[key]
    if key in SPECS:
        return standard_layer(key)
    ATTENTION.get(key)  # unknown: UnknownKeyError lists the registered keys
    if key in LAYERS:  # registered by a plugin the lookup just loaded
        return LAYERS[key]
    raise UnknownKeyError("attention layer", key, list(LAYERS) + list(SPECS)) from None


def kernel_keys() -> list[str]:
    """Attention keys whose layer is the standard one over a kernel of that key (what a kernel benchmark times)."""
    return [k for k in ATTENTION.keys() if k in SPECS and k not in LAYERS]

