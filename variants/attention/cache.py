"""The cache protocol of attention layers: what a layer keeps per token, and the caches that keep it.

A layer's :class:`CacheLayout` names the tensors it caches per layer and their shapes (``k``/``v`` of
``(B, Hkv, T, D)`` for the standard multi-head layer; a latent layer's ``(B, T, r)`` latent, ...), all sharing one
time dimension. Every cache takes any layout and offers ``update(layer, *new) -> all kept``, ``length`` (tokens
seen: the next position), ``held()`` (tokens kept), ``tensors()`` and ``nbytes()`` (bytes of the tokens kept):

* :class:`KVCache` -- growing (capacity doubles, returns views);
* :class:`StaticKVCache` -- allocated once at ``max_len``, written in place (graph-safe);
* :class:`RollingKVCache` -- evicting: keeps the last ``window`` tokens (a sliding-window layer's whole need);
* :class:`SinkKVCache` -- evicting: keeps ``sinks`` first tokens and the last ``window - 1`` (StreamingLLM).

The model advances ``length`` once per forward, after every layer has updated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ablate.errors import ConfigError

__all__ = ["CacheLayout", "KVCache", "StaticKVCache", "RollingKVCache", "SinkKVCache", "CACHES"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class CacheLayout:
    """What one layer caches: ``names`` of its tensors, their ``shapes(cfg, batch, n_tokens)`` (one per name) and
    the ``time_dim`` they share. Bytes and element counts derive from ``shapes``, the same shapes a static cache
    allocates."""

    names: tuple[str, ...]
    shapes: Callable[[Any, int, int], tuple[Shape, ...]]
    time_dim: int
    description: str = ""

    def per_token(self, cfg: Any) -> int:
        """Elements one token adds to one layer's cache (all tensors, batch 1)."""
        return sum(math.prod(s) for s in self.shapes(cfg, 1, 1))


class KVCache:
    """Per-layer cached tensors for incremental decoding; grows by doubling, returns views.

    ``KVCache(n_layers)`` holds the standard layer's ``k, v`` (time dim 2); pass a layer's ``layout`` for another."""

    kind = "growing"

    def __init__(self, n_layers: int, layout: CacheLayout | None = None):
        self.n_layers = n_layers
        self.time_dim = 2 if layout is None else layout.time_dim
        self.n_tensors = 2 if layout is None else len(layout.names)
        self.buffers: list[list[Tensor | None]] = [[None] * n_layers for _ in range(self.n_tensors)]
        self.length = 0  # tokens already seen (the next token's position)

    @property
    def k(self) -> list[Tensor | None]:
        return self.buffers[0]

    @property
    def v(self) -> list[Tensor | None]:
        return self.buffers[1]

    def held(self) -> int:
        """Tokens kept per layer (all of them: nothing is evicted)."""
        return self.length

    def window(self) -> int | None:
        """The most recent tokens a query may still see through this cache (None: all)."""
        return None

    def update(self, layer: int, *new: Tensor) -> tuple[Tensor, ...]:
        """Append ``new`` (one tensor per layout name) at position ``self.length``; return all kept so far."""
        td, start, t = self.time_dim, self.length, new[0].shape[self.time_dim]
        bufs = [self.buffers[i][layer] for i in range(len(new))]
        if bufs[0] is None or bufs[0].shape[td] < start + t:
            cap = max(16, 2 * (start + t))
            for i, x in enumerate(new):
                shape = list(x.shape)
                shape[td] = cap
                grown = x.new_empty(shape)
                if bufs[i] is not None:
                    grown.narrow(td, 0, start).copy_(bufs[i].narrow(td, 0, start))
                bufs[i] = self.buffers[i][layer] = grown
        for buf, x in zip(bufs, new):
            buf.narrow(td, start, t).copy_(x)
        return tuple(buf.narrow(td, 0, start + t) for buf in bufs)

    def tensors(self) -> list[Tensor]:
        """Every buffer allocated (all layers, all layout tensors)."""
        return [b for bufs in self.buffers for b in bufs if b is not None]

    def nbytes(self) -> int:
        """Bytes of the tokens kept (the first ``held()`` positions of every buffer)."""
        n = self.held()
        return sum(b.narrow(self.time_dim, 0, n).numel() * b.element_size() for b in self.tensors())


class StaticKVCache(KVCache):
    """Buffers allocated once at ``max_len`` (the layout's shapes): a step writes in place and attends over a view
    of the first ``length + t`` positions, so nothing is allocated or copied while decoding, and a step at a given
    length can be captured once as a CUDA graph and replayed (:class:`ablate.core.decode.DecodeStep`)."""

    kind = "static"

    def __init__(self, n_layers: int, *, layout: CacheLayout, cfg: Any, batch: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str):
        super().__init__(n_layers, layout)
        if max_len < 1:
            raise ConfigError(f"a static KV cache needs max_len >= 1, got {max_len}")
        self.max_len = max_len
        shapes = layout.shapes(cfg, batch, max_len)
        self.buffers = [[torch.zeros(s, dtype=dtype, device=device) for _ in range(n_layers)] for s in shapes]

    def update(self, layer: int, *new: Tensor) -> tuple[Tensor, ...]:
        td, start, t = self.time_dim, self.length, new[0].shape[self.time_dim]
        if start + t > self.max_len:
            raise ConfigError(f"static KV cache full: {start} + {t} tokens > max_len={self.max_len}")
        out = []
        for i, x in enumerate(new):
            buf = self.buffers[i][layer]
            buf.narrow(td, start, t).copy_(x)
            out.append(buf.narrow(td, 0, start + t))
        return tuple(out)


class RollingKVCache(KVCache):
    """An evicting cache that keeps only the last ``window`` tokens per layer (a rolling buffer, Mistral-style).

    A step sees the kept tokens plus its own (``window - 1 + t`` at most) and the layer masks each query to its last
    ``window`` keys, so decoding equals full attention restricted to the window; memory stays ``window`` tokens
    however long the sequence. (A latent cache
    is any layout of its own: the protocol takes it.)"""

    kind = "rolling"

    def __init__(self, n_layers: int, window: int, layout: CacheLayout | None = None):
        super().__init__(n_layers, layout)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"a rolling KV cache needs a window >= 1, got {window!r}")
        self.size = window

    def held(self) -> int:
        return min(self.length, self.size)

    def window(self) -> int | None:
        return self.size

    def update(self, layer: int, *new: Tensor) -> tuple[Tensor, ...]:
        td = self.time_dim
        out = []
        for i, x in enumerate(new):
            old = self.buffers[i][layer]
            seen = x if old is None else torch.cat([old, x], dim=td)
            keep = min(seen.shape[td], self.size)
            self.buffers[i][layer] = seen.narrow(td, seen.shape[td] - keep, keep).clone()
            out.append(seen)
        return tuple(out)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.tensors())


class SinkKVCache(RollingKVCache):
    """An evicting cache that keeps the first ``sinks`` tokens (attention sinks) and the last ``window - 1``
    (StreamingLLM, Xiao et al. 2023): a step sees them plus its own tokens, unmasked, so a decoded token attends to
    the sinks and to its last ``window`` tokens (a prompt attends to itself in full). Keys keep the positions they
    were transformed at (``reposition=True``: StreamingLLM's positions within the cache instead); the kept keys are not contiguous, so a score bias (which assumes they are) is refused by
    :meth:`ablate.core.model.Transformer.new_cache`."""

    kind = "sink"

    def __init__(self, n_layers: int, window: int, sinks: int, layout: CacheLayout | None = None, *,
                 reposition: bool = False):
        super().__init__(n_layers, window, layout)
        if isinstance(sinks, bool) or not isinstance(sinks, int) or sinks < 1:
            raise ConfigError(f"a sink-keeping cache needs sinks >= 1, got {sinks!r}")
        self.sinks = sinks
        # StreamingLLM's positions: keys are kept raw and every step places the kept ones at 0..n-1 (positions
        # within the cache, not in the text), so no query-key distance exceeds the cache (the standard layer)
        self.reposition = bool(reposition)

    def held(self) -> int:
        return min(self.length, self.sinks + self.size - 1)

    def window(self) -> int | None:
        return None  # every kept key is visible: the eviction is the mask

    def update(self, layer: int, *new: Tensor) -> tuple[Tensor, ...]:
        td, cap = self.time_dim, self.sinks + self.size - 1
        out = []
        for i, x in enumerate(new):
            old = self.buffers[i][layer]
            seen = x if old is None else torch.cat([old, x], dim=td)
            n = seen.shape[td]
            kept = seen if n <= cap else torch.cat([seen.narrow(td, 0, self.sinks),
                                                    seen.narrow(td, n - (self.size - 1), self.size - 1)], dim=td)
            self.buffers[i][layer] = kept.clone()
            out.append(seen)
        return tuple(out)


CACHES: dict[str, type[KVCache]] = {c.kind: c for c in (KVCache, StaticKVCache, RollingKVCache, SinkKVCache)}
