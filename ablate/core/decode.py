"""One decode step at a fixed context, run the way serving stacks run it: eagerly, captured once as a CUDA graph and
replayed, or compiled (``torch.compile``; ``mode="reduce-overhead"`` on CUDA, i.e. compiled *and* graphed).

Eager decoding of a small model is host-bound: every step launches a few hundred kernels from Python, which costs
more than reading the KV cache until contexts are long. A graph replay launches them all at once, so the step is
bound by what it must read (:func:`ablate.core.flops.decode_step_bytes`): parameters once, the KV cache once.

The step is benchmark-shaped: each call resets the cache to ``context`` tokens and decodes one more, so every call
does the same work (the cache is a :class:`~ablate.core.model.StaticKVCache`: fixed buffers, no allocation, graph-safe).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ablate.errors import ConfigError, UnavailableError
from ablate.core.model import StaticKVCache, Transformer

__all__ = ["MODES", "DecodeStep"]

MODES: tuple[str, ...] = ("eager", "graph", "compile")


class DecodeStep:
    """``step()`` -> logits ``(B, 1, vocab)`` of decoding ``token`` ``(B, 1)`` after ``context`` cached tokens.

    ``mode``: ``eager`` (plain calls), ``graph`` (CUDA only: captured after ``warmup`` eager calls on a side stream,
    then replayed; the returned logits tensor is the graph's static output, overwritten by the next call), or
    ``compile`` (``torch.compile`` with ``dynamic=False``; ``reduce-overhead`` on CUDA). ``backend`` names what ran.
    """

    def __init__(self, model: Transformer, cache: StaticKVCache, token: Tensor, context: int, *,
                 mode: str = "eager", warmup: int = 3):
        if mode not in MODES:
            raise ConfigError(f"unknown decode mode {mode!r}; valid: {', '.join(MODES)}")
        if not isinstance(cache, StaticKVCache):
            raise ConfigError("a decode step needs a StaticKVCache (model.new_cache(static_len=...))")
        if context < 0 or context + token.shape[1] > cache.max_len:
            raise ConfigError(f"context {context} + {token.shape[1]} token(s) does not fit the cache's "
                              f"max_len={cache.max_len}")
        cuda = token.device.type == "cuda"
        if mode == "graph" and not cuda:
            raise UnavailableError("decode mode 'graph' needs CUDA (CUDA graphs); use eager or compile")
        self.model, self.cache, self.token, self.context, self.mode = model, cache, token, context, mode
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: Tensor | None = None
        self._fn: Callable[[], Tensor] = self._eager
        if mode == "compile":
            self.backend = "compiled:reduce-overhead" if cuda else "compiled:default"
            self._fn = torch.compile(self._eager, mode="reduce-overhead" if cuda else None, dynamic=False)
        elif mode == "graph":
            self.backend = "cuda_graph"
            self._capture(warmup)
        else:
            self.backend = "eager"

    def _eager(self) -> Tensor:
        self.cache.length = self.context
        with torch.no_grad():
            return self.model(self.token, self.cache)

    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream(device=self.token.device)
        side.wait_stream(torch.cuda.current_stream(self.token.device))
        with torch.cuda.stream(side):  # lazily built tables (rotary cos/sin, ...) exist before the capture
            for _ in range(max(1, warmup)):
                self._eager()
        torch.cuda.current_stream(self.token.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = self._eager()

    def __call__(self) -> Tensor:
        if self._graph is not None:
            self._graph.replay()
            return self._out  # type: ignore[return-value]
        return self._fn()
