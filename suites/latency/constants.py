"""Names every module of the latency suite shares, torch-free (the report side imports them too)."""

from __future__ import annotations

from ablate.core.config import ModelConfig

SUITE = "latency"
PARTS = ("kernel", "position", "train", "decode", "prefill", "stream")
# The setting that holds each part's time budget (`--set KEY=seconds`; 0: none); `budget_s` limits the whole run.
PART_BUDGETS = {"kernel": "kernels.budget_s", "position": "positions.budget_s", "train": "train.budget_s",
                "decode": "decode.budget_s", "prefill": "decode.budget_s", "stream": "stream.budget_s"}
PASSES = ("fwd", "bwd", "fwd_bwd")
PASS_ORDER = {p: i for i, p in enumerate(PASSES)}
LAYOUTS = ("mha", "gqa", "mqa")
# How a decode step runs (ablate.core.decode.MODES): eager calls, a captured CUDA graph replayed, torch.compile.
DECODE_MODES = ("eager", "graph", "compile")
# How a stream decodes past its cache budget (ablate.variants.attention.streaming.MODES, StreamingLLM's four
# settings): no eviction, window attention, attention sinks + recent tokens, sliding window with re-computation.
STREAM_MODES = ("dense", "window", "sinks", "recompute")
DENSE, WINDOW, SINKS, RECOMPUTE = STREAM_MODES
# How a training step runs: the model as written, or torch.compile(model).
TRAIN_MODES = ("eager", "compiled")
MASKS = ("causal", "full")
FLOPS_FA = "fa"  # FlashAttention convention (ablate.core.flops.attention_flops)
# Kernel tables compare every key with the model's default attention ("× sdpa", speedup_vs_sdpa).
BASELINE_ATTENTION = ModelConfig.attention
# `ablate run --sweep KEY=V1,V2` (ablate.plan.sweep): the attention kernels and the position variants measured.
SWEEPS = {"model.attention": "kernels.keys", "model.position": "positions.keys"}
