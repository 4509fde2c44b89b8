"""Parts 4 and 5, ``decode`` and ``prefill``: per-token latency with the KV cache at several contexts for MHA / GQA /
MQA (the cache's measured bytes next to what the layer's spec states), and the forward pass that fills the cache.

A decode step runs on a static KV cache (:class:`ablate.core.model.StaticKVCache`) in each of ``decode.modes``
(:class:`ablate.core.decode.DecodeStep`: eager calls, a replayed CUDA graph, torch.compile); its row records the bytes a
step must move (parameters + the KV cache, :func:`ablate.core.flops.decode_step_bytes`), the achieved GB/s and, on a GPU
with a known peak, the fraction of the memory bandwidth. Eager rows keep the keys they had before modes existed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Iterable

import torch

from ablate.core.config import ModelConfig, flatten
from ablate.core.decode import DecodeStep
from ablate.core.flops import cache_bytes, decode_step_bytes, peak_bandwidth
from ablate.core.model import Transformer
from ablate.core.timing import bench_calls, free_memory, is_cuda, peak_memory_and_ms, sync
from ablate.variants.attention import backend_of, layer_spec

from .config import DTYPES, DecodeSweep
from .harness import Ctx, timing_metrics, model_id

PREFILL_CHUNK = 1024  # tokens per forward when filling the cache before a decode step (only the step is timed)


def decode_model_config(ds: DecodeSweep, layout: str) -> ModelConfig:
    h = ds.model.n_heads
    kv = {"mha": None, "gqa": h // ds.gqa_group, "mqa": 1}[layout]
    return replace(ds.model, n_kv_heads=kv, causal=True,
                   max_len=max(ds.model.max_len, max(ds.contexts + ds.prompt_lens) + ds.steps + 8))


def _decode_dtype(ctx: Ctx) -> str:
    return ctx.cfg.decode.dtype if is_cuda(ctx.device) else "float32"


def observed_backend(model: Any, call: Callable[[], Any]) -> str | None:
    """What the first block's attention kernel really ran in ``call()`` (a forward of ``model``): the layer's first
    kernel call is intercepted and named by :func:`ablate.variants.attention.backend_of` with the tensors and flags
    it got. A layer's kernel call need not have its config's shapes (MLA attends over a latent of ``d_c + d_R``
    with one shared head, DIFF reads values of ``2·hd`` in two halves, a sink layer adds a dense bias), so the
    backend is read off the call itself, not a probe of the config's shapes. None when no kernel was called."""
    layer = model.blocks[0].attn
    inner = getattr(layer, "attn", None)
    if inner is None:
        return None
    seen: list = []

    def spy(q, k, v, **kw):
        if not seen:
            seen.append((q, k, v, kw))
        return inner(q, k, v, **kw)

    layer.attn = spy
    try:
        with torch.no_grad():
            call()
    finally:
        layer.attn = inner
    if not seen:
        return None
    q, k, v, kw = seen[0]
    try:
        return backend_of(layer_spec(model.cfg.attention).kernel, q, k, v, causal=kw.get("causal", True),
                          bias=kw.get("bias"), window=kw.get("window"))
    except Exception as exc:
        return f"? ({type(exc).__name__})"


@dataclass
class LayoutRun:
    """One decode layout (MHA / GQA / MQA) to measure: its model and the lengths still owed."""

    layout: str
    mcfg: ModelConfig
    model: Any
    keys: dict[tuple[int, str], dict]
    todo: list[tuple[int, str]]
    gen: torch.Generator
    dtype: torch.dtype


def _decode_mode_fields(mode: str) -> dict[str, Any]:
    return {} if mode == "eager" else {"decode_mode": mode}


def layout_runs(ctx: Ctx, part: str, lengths: Iterable[int], length_field: str, batch: int,
                 modes: Iterable[str] = ("eager",), *, layouts: Iterable[str] | None = None,
                 model_config: Callable[[str], ModelConfig] | None = None,
                 mode_fields: Callable[[str], dict[str, Any]] = _decode_mode_fields):
    """For each layout (default ``decode.layouts``), build the model (default :func:`decode_model_config`) once and
    yield a :class:`LayoutRun` owing ``(length, mode)`` points (``mode_fields(mode)``: the mode's key fields; for
    decode a non-eager mode is ``decode_mode``); a model that cannot be built turns every owed row into a status
    row. The model is released after the caller's iteration."""
    cfg, device = ctx.cfg, ctx.device
    dname = _decode_dtype(ctx)
    dt = DTYPES[dname]
    points = [(L, m) for L in lengths for m in modes]
    for layout in (cfg.decode.layouts if layouts is None else layouts):
        mcfg = (model_config or partial(decode_model_config, cfg.decode))(layout)
        keys = {(L, m): {**ctx.base_key(part), "attention": mcfg.attention, "position": mcfg.position,
                         "layout": layout, "n_heads": mcfg.n_heads, "n_kv_heads": mcfg.kv_heads,
                         "d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "batch": batch, length_field: L,
                         "dtype": dname, "model_id": model_id(mcfg), **mode_fields(m)}
                for L, m in points}
        todo = [p for p in points if not ctx.done(keys[p])]
        ctx.advance(len(points) - len(todo))
        if not todo:
            continue
        try:
            torch.manual_seed(cfg.seed)
            model = Transformer(mcfg).to(device=device, dtype=dt).eval()
        except Exception as exc:
            ctx.write_failure(exc, [keys[L] for L in todo], {"model": flatten(mcfg)})
            ctx.advance(len(todo))
            continue
        run = LayoutRun(layout, mcfg, model, keys, todo, torch.Generator(device=device).manual_seed(cfg.seed), dt)
        del model
        yield run
        run.model = None
        free_memory(device, collect=True)


def run_decode(ctx: Ctx) -> None:
    ds = ctx.cfg.decode
    for run in layout_runs(ctx, "decode", ds.contexts, "context", ds.batch, ds.modes):
        for L, mode in run.todo:
            ctx.measure("decode", run.keys[(L, mode)], partial(_time_decode, ctx, run, L, mode),
                        {"model": flatten(run.mcfg)}, info=f"decode {run.layout} {mode} context {L}",
                        cleanup=partial(free_memory, ctx.device))


def _time_decode(ctx: Ctx, run: LayoutRun, L: int, mode: str) -> dict[str, Any]:
    """One decode step at context ``L`` run in ``mode`` (each call resets the static cache to ``L`` tokens), timed;
    the decode row's metrics, with the bytes a step must move and the bandwidth that achieves."""
    device, ds = ctx.device, ctx.cfg.decode
    mcfg, model, gen = run.mcfg, run.model, run.gen
    prompt = torch.randint(0, mcfg.vocab_size, (ds.batch, L), device=device, generator=gen)
    tok = torch.randint(0, mcfg.vocab_size, (ds.batch, 1), device=device, generator=gen)
    cache = model.new_cache(static_len=L + 1, batch=ds.batch)
    with torch.no_grad():  # the context in chunks: a layer whose prefill forms the scores (MLA's absorbed path)
        for s in range(0, L, PREFILL_CHUNK):  # would need B·H·L² of them at once (34 GB at 32k)
            model(prompt[:, s:s + PREFILL_CHUNK], cache)
    sync(device)
    kv_bytes = cache.nbytes()
    buffers = cache.tensors()
    allocated = sum(b.numel() * b.element_size() for b in buffers)
    el = buffers[0].element_size()
    closed = cache_bytes(mcfg, L, el, ds.batch)  # what the attention layer's spec says it holds
    backend = observed_backend(model, lambda: model(tok, cache))  # one eager step, untimed
    cache.length = L
    step = DecodeStep(model, cache, tok, L, mode=mode, warmup=ds.warmup_steps)  # graph: captured here
    for _ in range(ds.warmup_steps):  # compile: compiles on the first call
        step()
    t = bench_calls(step, device, n=ds.steps)
    cache.length = L
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    moved = decode_step_bytes(param_bytes, kv_bytes, mcfg, el_bytes=el, batch=ds.batch)
    gbps = moved / (t.median_ms / 1e3) / 1e9
    peak = peak_bandwidth() if is_cuda(device) else None
    return {**timing_metrics(t), "tokens_per_s": ds.batch / (t.median_ms / 1e3),
            "kv_bytes": kv_bytes, "kv_bytes_closed_form": closed, "kv_bytes_allocated": allocated,
            "kv_match": kv_bytes == closed, "kv_dtype": str(buffers[0].dtype).replace("torch.", ""),
            # what the layer caches (its CacheLayout's tensors) and the units the report's per-token bytes use
            "cache_tensors": ",".join(layer_spec(mcfg.attention).cache.names), "kv_el_bytes": el,
            "head_dim": mcfg.head_dim,
            "attn_backend": backend,
            "decode_backend": step.backend, "param_bytes": param_bytes, "bytes_per_step": moved,
            "achieved_gbps": gbps, "peak_gbps": peak.tflops if peak else None,
            "peak_gbps_source": peak.source if peak else "no bandwidth peak for CPU",
            "bw_util": gbps / peak.tflops if peak and peak.tflops else None}


def run_prefill(ctx: Ctx) -> None:
    ds = ctx.cfg.decode
    for run in layout_runs(ctx, "prefill", ds.prompt_lens, "prompt_len", ds.prefill_batch):
        for L, _ in run.todo:
            ctx.measure("prefill", run.keys[(L, "eager")], partial(_time_prefill, ctx, run, L), {"model": flatten(run.mcfg)},
                        info=f"prefill {run.layout} {L}", cleanup=partial(free_memory, ctx.device))


def _time_prefill(ctx: Ctx, run: LayoutRun, L: int) -> dict[str, Any]:
    """The forward pass that fills a fresh cache with a prompt of ``L`` tokens, timed; the prefill row's metrics."""
    device, ds = ctx.device, ctx.cfg.decode
    mcfg, model = run.mcfg, run.model
    prompt = torch.randint(0, mcfg.vocab_size, (ds.prefill_batch, L), device=device, generator=run.gen)

    def fill():
        with torch.no_grad():
            return model(prompt, model.new_cache())

    backend = observed_backend(model, fill)  # the first call, untimed
    mem, est = peak_memory_and_ms(fill, device)
    t = ctx.bench(fill, est_ms=est)
    return {**timing_metrics(t), "tokens_per_s": ds.prefill_batch * L / (t.median_ms / 1e3),
            "peak_mem_bytes": mem, "mem_note": None if mem is not None else "n/a on cpu",
            "attn_backend": backend}
