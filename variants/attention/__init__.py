"""Attention layers and the kernels behind them, registered in :data:`ablate.registry.keys.ATTENTION`.

An attention key names a *layer* (:mod:`.layer`: :class:`LayerSpec`, :func:`layer_spec`; projections, q/k hooks,
cache layout, parameter count, cache bytes, FLOPs); every kernel below is the kernel of the standard multi-head
layer. Caches (growing, static, rolling, sink-keeping) are in :mod:`.cache`.

The contract (call signature, capabilities, validation, masks, :class:`AttentionSpec`) is in
:mod:`ablate.variants.attention.contract`; each backend module declares the spec of its key(s) next to its code:

* :mod:`.reference` -- ``naive`` (the reference of every softmax kernel);
* :mod:`.sdpa` -- ``sdpa``, ``sdpa_flash``, ``sdpa_efficient``, ``sdpa_cudnn``, ``sdpa_math`` (routing, forced
  kernels, the dispatch recorder);
* :mod:`.flash` -- ``flash_attn`` (FA2 / FA4); :mod:`.xformers` -- ``xformers``; :mod:`.flex` -- ``flex``;
* :mod:`.sliding` -- ``sliding_window``; :mod:`.linear` -- ``linear`` (``linear_attention``, ``LINEAR_CHUNK``).

Ask :func:`spec` for what a key needs and how it is counted (``spec(key).requires``, ``.flops``, ``.compiled`` /
``.is_compiled(device)``, ``.reference``, ``.materialises_scores``, ``.native_bias``) instead of branching on key
names. :func:`backend_of` names what really runs.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

# registration order = the order of KEYS (and of `ablate list`)
from ablate.variants.attention import reference, sdpa, flash, xformers, flex, sliding, linear  # noqa: E401,I001
from ablate.variants.attention.contract import (FEATURES, SETTINGS, SPECS, AttentionSpec, ScoreBiasLike, bias_slopes,
                                                expand_kv_heads, LRUCache, allowed_mask, attention_fn, check_call, spec,
                                                supports)
from ablate.variants.attention.linear import LINEAR_CHUNK, linear_attention, linear_reference
from ablate.variants.attention.cache import CACHES, CacheLayout, KVCache, RollingKVCache, SinkKVCache, StaticKVCache
from ablate.variants.attention.layer import KV_LAYOUT, LAYERS, LayerSpec, MultiHeadAttention, kernel_keys, layer_spec
# layers of their own (registered after the kernels they call)
from ablate.variants.attention import qknorm, sinks, diff, mla, based  # noqa: E401,F401,I001
from ablate.variants.attention import sink_token  # noqa: E401,F401,I001  (the prepended sink token)

__all__ = [
    "KEYS", "FEATURES", "ScoreBiasLike", "attention_fn", "check_call", "supports", "backend_of",
    "linear_attention", "allowed_mask", "LINEAR_CHUNK", "SPECS", "spec", "AttentionSpec", "SETTINGS",
    "linear_reference", "LayerSpec", "LAYERS", "layer_spec", "MultiHeadAttention", "KV_LAYOUT", "kernel_keys",
    "CacheLayout", "KVCache", "StaticKVCache", "RollingKVCache", "SinkKVCache", "CACHES",
]

KEYS: tuple[str, ...] = tuple(SPECS)

_BACKEND_CACHE = LRUCache(256)


def _signature(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> tuple:
    return (key, tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, str(q.device),
            tuple(t.is_contiguous() for t in (q, k, v)),
            torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)), causal, window,
            None if bias is None else ("alibi" if bias_slopes(bias) is not None else getattr(bias, "kind", "dense")),
            os.environ.get("ABLATE_FLASH_ATTN", ""), os.environ.get("ABLATE_FLEX_COMPILE_CPU", ""))


def backend_of(key: str, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None,
               window: int | None = None) -> str:
    """Name what really runs for these inputs, e.g. ``"sdpa:flash"``, ``"sdpa:math"``, ``"flash_attn:fa4"``,
    ``"flex:eager"``, ``"sliding_window:sdpa:flash_cpu"``. Raises like :func:`check_call` when it cannot run.
    ``"+expand_kv"`` marks an SDPA call whose K/V heads were materialised for GQA/MQA (e.g.
    ``"sdpa:efficient+expand_kv"``), see :func:`ablate.variants.attention.sdpa._sdpa_route`.

    For the SDPA family the call is executed once under a dispatch recorder and the aten kernel actually reached is
    read off (cached by shape/dtype/device/flags)."""
    check_call(key, q, k, v, causal, bias, window)
    sig = _signature(key, q, k, v, causal, bias, window)
    return _BACKEND_CACHE.get_or(sig, lambda: SPECS[key].backend_name(q, k, v, causal, bias, window))

