"""Latency: speed, memory and FLOP/s of every attention kernel, position variant and model choice, measured honestly.

    ablate run --suite latency                          # `tiny` preset on CPU (<= 3 min on 2 cores), `gpu` on CUDA
    ablate run --suite latency --preset gpu --out runs    # rows in runs/latency/cuda-gpu.jsonl (<device>-<preset>)
    ablate run --suite latency --preset micro --set kernels.keys=sdpa,naive
    ablate report results/latency/gpu.jsonl --out reports/latency/gpu   # the committed H100 run

Six parts, each a list of measurements written as rows as they finish (see ``docs/latency.md``):

* ``kernel``: every attention key x pass (``fwd``, ``bwd``, ``fwd_bwd``) x shape. Shapes: sequence lengths at a fixed
  number of tokens per batch (batch = tokens / n), heads = hidden / head_dim, causal and not, MHA; plus feature
  shapes (GQA, MQA, a second dtype, ALiBi bias, sliding window) at one length. Every kernel is first checked against
  the ``naive`` reference on the same inputs (a slice of batch 0 and the first heads, in float32 on CUDA / float64 on
  CPU; ``linear`` against an O(n²) formulation of linear attention); a kernel off by more than the tolerance gets an
  ``error`` row and is not timed, so a fast wrong kernel cannot win. Unavailable keys get one ``unavailable`` row.
* ``position``: each position variant's hooks on their own (RoPE family ``rotate`` of q and k, ALiBi / T5 dense bias
  build, absolute ``embed``), and all hooks together.
* ``train``: one training step (forward, backward, grad clipping, AdamW) of the reference model for a few
  attention / position / norm / activation choices: tokens/s, MFU (against the bf16 peak of ``ablate.core.flops``; the
  peak used is in the row) and peak memory.
* ``decode``: per-token latency with the KV cache at several context lengths for MHA / GQA / MQA, the cache's
  measured bytes next to what the attention layer's spec states (``ablate.core.flops.cache_bytes``; the standard
  layer: ``2 · layers · kv_heads · head_dim · n · bytes`` × batch).
* ``prefill``: latency of the forward pass that fills the cache, vs prompt length.
* ``stream``: what one more token costs after a long stream with each of StreamingLLM's caches (``dense``,
  ``window``, ``sinks``, and ``recompute``, the sliding window with re-computation): per-token latency and the
  cache's measured bytes vs tokens streamed; the report's claims: memory flat with length, faster than
  re-computation.

Rows: ``metric="time_ms"``, ``value`` = median milliseconds (``unit="ms"``), ``p20_ms`` / ``p80_ms`` the spread,
plus part-specific metrics (``tflops``, ``peak_mem_bytes``, ``rel_err``, ``backend``, ``tokens_per_s``, ``mfu``,
``kv_bytes``...). Key fields: ``part`` and the shape / variant fields, ``device`` and ``device_name``.

Modules: ``constants`` (names both sides share), ``config`` (sweeps, presets, ``resolve``, the kernel plan),
``harness`` (run context, time budget, ``Ctx.measure``), ``reference`` (the correctness check), ``kernels``,
``model_parts`` (position, train), ``decode`` (decode, prefill), ``stream`` and ``suite`` (``tasks``, ``run``); the
report side, without torch: ``tables``, ``decode_cache``, ``stream_report``, ``figures`` and ``reporting``
(``report``). The names below are reachable as ``ablate.suites.latency.<name>``; a side's modules are imported on
first use of one of its names, so ``ablate report`` never imports torch through this package.
"""

from __future__ import annotations

from ablate.plan.suitekit import lazy_package

from .constants import (BASELINE_ATTENTION, DECODE_MODES, FLOPS_FA, LAYOUTS, MASKS, PARTS,  # noqa: F401
                        PASS_ORDER, PASSES, SUITE, SWEEPS)

# The measurement side (torch, imported together) and the report side (no torch), and the names each module gives
# the package.
_MEASURE = ("config", "reference", "harness", "kernels", "model_parts", "decode", "stream", "suite")
_REPORT = ("tables", "decode_cache", "stream_report", "figures", "reporting")
_EXPORTS: dict[str, tuple[str, ...]] = {
    "config": ("KernelSweep", "PositionSweep", "TrainSweep", "DecodeSweep", "StreamSweep", "LatencyConfig", "PRESETS",
               "DEFAULT_TRAIN_CHOICES", "DTYPES", "DTYPE_ALIASES", "default_preset", "resolve", "Shape",
               "kernel_keys", "kernel_passes", "plan_kernels", "attention_spec"),
    "reference": ("Reference", "FWD_TOL", "GRAD_TOL"),
    "harness": ("Clock", "Ctx", "model_id", "bench"),
    "kernels": ("run_kernels", "kernel_flops", "bench_calls", "no_donated_buffers", "time_backward"),
    "model_parts": ("run_positions", "run_train", "train_flops"),
    "decode": ("run_decode", "run_prefill"),
    "stream": ("run_stream",),
    "suite": ("RUNNERS", "results_file", "tasks", "run"),
    "tables": ("MIB", "TFLOPS_FOOTNOTE", "kernel_tables", "tflops_pivot", "best_table", "status_table",
               "position_table", "train_table", "decode_table", "prefill_table"),
    "figures": ("fig_tflops", "fig_memory", "fig_decode", "fig_prefill", "fig_stream"),
    "stream_report": ("stream_table", "stream_claims"),
    "decode_cache": ("cache_table", "cache_claims", "mixed_decode"),
    "reporting": ("report",),
}
__all__ = ["SUITE", "PARTS", "PASSES", "LAYOUTS", "KernelSweep", "PositionSweep", "TrainSweep", "DecodeSweep",
           "LatencyConfig", "PRESETS", "resolve", "run", "report", "plan_kernels", "Shape", "Reference",
           "attention_spec", "results_file", "default_preset", "kernel_tables", "tflops_pivot", "best_table"]

lazy_package(__name__, _MEASURE, _REPORT, _EXPORTS)
