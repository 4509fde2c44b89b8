"""Part 6, ``stream``: what one more token costs once ``tokens`` tokens have streamed through the model, with each
of StreamingLLM's cache settings (Xiao et al. 2023, *Efficient Streaming Language Models with Attention Sinks*,
Fig. 10; the caches are :mod:`ablate.variants.attention.streaming`'s, the ones the extrapolation suite scores):

* ``dense`` -- no eviction: the cache holds every token, so memory and the step's reads grow with the stream;
* ``window`` -- the last ``budget`` tokens (a rolling cache);
* ``sinks`` -- the first ``sinks`` tokens and the recent ones, ``budget`` keys per query, the kept keys re-placed
  at positions within the cache every step (StreamingLLM's reference ``StartRecentKVCache``);
* ``recompute`` -- no cache: a fresh forward over the last ``budget`` tokens for every token (the quality baseline).

Each point fills its cache with ``tokens`` random tokens (in chunks: the step's cost depends on what the cache
holds, not on the values), then times eager steps, each from that same state (the cache's tensors and length are
restored before every step, untimed). A row records the step's time, the cache's measured bytes (``nbytes()``, the
tokens it keeps between steps) next to the closed form of the layer's spec, and the tokens kept."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch

from ablate.core.config import ModelConfig, flatten
from ablate.core.flops import cache_bytes
from ablate.core.timing import bench_calls, free_memory, sync
from ablate.variants.attention.streaming import new_stream_cache

from .decode import PREFILL_CHUNK, LayoutRun, decode_model_config, layout_runs, observed_backend
from .constants import DENSE, RECOMPUTE, SINKS, WINDOW
from .harness import Ctx, timing_metrics

__all__ = ["run_stream", "stream_model_config", "stream_fields"]


def stream_model_config(ctx_cfg: Any, layout: str) -> ModelConfig:
    """The decode part's model in ``layout``, long enough for the longest stream (positions run to ``tokens``)."""
    m = decode_model_config(ctx_cfg.decode, layout)
    return replace(m, max_len=max(m.max_len, max(ctx_cfg.stream.tokens) + 8))


def stream_fields(ss: Any, mode: str) -> dict[str, Any]:
    """A stream row's mode key fields: the budget where the mode has one, the sinks where it keeps them (a setting
    that does not change what a mode runs is not in its key)."""
    return {"stream_mode": mode, **({} if mode == DENSE else {"stream_budget": ss.budget}),
            **({"stream_sinks": ss.sinks} if mode == SINKS else {})}


def run_stream(ctx: Ctx) -> None:
    ss, batch = ctx.cfg.stream, ctx.cfg.decode.batch
    for run in layout_runs(ctx, "stream", ss.tokens, "tokens", batch, ss.modes, layouts=ss.layouts,
                            model_config=partial(stream_model_config, ctx.cfg),
                            mode_fields=partial(stream_fields, ss)):
        for L, mode in run.todo:
            ctx.measure("stream", run.keys[(L, mode)], partial(_time_stream, ctx, run, L, mode),
                        {"model": flatten(run.mcfg), "stream": flatten(ss)},
                        info=f"stream {run.layout} {mode} after {L} tokens", cleanup=partial(free_memory, ctx.device))


class _Restore:
    """``restore()`` puts a filled cache back in the state it had after ``L`` tokens: evicting caches replace their
    tensors every step, so the kept ones come back by reference, and the length is reset. ``keep_grown()``: a
    growing cache may re-allocate on its first step, then writes in place at length ``L``; keep the grown buffers."""

    def __init__(self, cache: Any, length: int):
        self.cache, self.length = cache, length
        self.keep_grown()

    def keep_grown(self) -> None:
        self.buffers = [list(b) for b in self.cache.buffers]

    def __call__(self) -> None:
        self.cache.buffers = [list(b) for b in self.buffers]
        self.cache.length = self.length


def _filled(ctx: Ctx, run: LayoutRun, L: int, mode: str) -> tuple[Any, _Restore]:
    """(cache, restore): ``mode``'s cache after ``L`` tokens, and the callable that puts it back in that state."""
    ss, batch, model = ctx.cfg.stream, ctx.cfg.decode.batch, run.model
    cache = new_stream_cache(model, mode, ss.budget, ss.sinks)
    prompt = torch.randint(0, run.mcfg.vocab_size, (batch, L), device=ctx.device, generator=run.gen)
    chunk = PREFILL_CHUNK if mode == DENSE else ss.budget  # an evicting cache: a chunk sees at most 2·budget keys
    with torch.no_grad():
        for s in range(0, L, chunk):
            model(prompt[:, s:s + chunk], cache)
    return cache, _Restore(cache, L)


def _time_stream(ctx: Ctx, run: LayoutRun, L: int, mode: str) -> dict[str, Any]:
    """One streamed token after ``L`` tokens in ``mode``, timed; the stream row's metrics."""
    ss, ds, device, model, mcfg = ctx.cfg.stream, ctx.cfg.decode, ctx.device, run.model, run.mcfg
    tok = torch.randint(0, mcfg.vocab_size, (ds.batch, 1), device=device, generator=run.gen)
    before: _Restore | None = None
    if mode == RECOMPUTE:
        recent = torch.randint(0, mcfg.vocab_size, (ds.batch, ss.budget), device=device, generator=run.gen)
        cache = None

        def step():
            with torch.no_grad():
                return model(recent)
    else:
        cache, before = _filled(ctx, run, L, mode)

        def step():
            with torch.no_grad():
                return model(tok, cache)
    backend = None
    for i in range(ss.warmup_steps):
        if before is not None:
            before()
        if i == 0:
            backend = observed_backend(model, step)  # what the kernel really ran, read off the first warm-up step
            if mode == DENSE:
                before.keep_grown()  # type: ignore[union-attr]  # in place from now on
        else:
            step()
    sync(device)
    t = bench_calls(step, device, n=ss.steps, before=before)
    el = next(model.parameters()).element_size()
    out = {**timing_metrics(t), "tokens_per_s": ds.batch / (t.median_ms / 1e3), "decode_backend": "eager",
           "kv_el_bytes": el, "head_dim": mcfg.head_dim}
    if cache is None:
        keys = ss.budget
        out.update(kv_bytes=None, kv_bytes_closed_form=None, kv_match=None, kv_tokens=None, cache_kind="none",
                   kv_note=f"no cache: a forward over the last {ss.budget} tokens per token")
    else:
        before()  # type: ignore[misc]
        window = {DENSE: None, WINDOW: ss.budget, SINKS: ss.budget - ss.sinks}[mode]
        closed = cache_bytes(mcfg, L, el, ds.batch, window=window, sinks=ss.sinks if mode == SINKS else None)
        kv = int(cache.nbytes())
        keys = cache.held() + 1 if mode == DENSE else ss.budget  # window: the mask drops its oldest kept key
        out.update(kv_bytes=kv, kv_bytes_closed_form=closed, kv_match=kv == closed, kv_tokens=int(cache.held()),
                   cache_kind=cache.kind)
    out["attn_keys"] = keys  # keys one query of the timed step attends
    out["attn_backend"] = backend
    return out
