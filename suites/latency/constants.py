"""Names every module of the latency suite shares, torch-free (the report side imports them too)."""

from __future__ import annotations

from ablate.config import ModelConfig

SUITE = "latency"
PARTS = ("kernel", "position", "train", "decode", "prefill")
PASSES = ("fwd", "bwd", "fwd_bwd")
PASS_ORDER = {p: i for i, p in enumerate(PASSES)}
LAYOUTS = ("mha", "gqa", "mqa")
MASKS = ("causal", "full")
COMPILED_KEYS = ("flex",)  # keys that compile once per new shape (on CUDA; on CPU only with ABLATE_FLEX_COMPILE_CPU=1)
FLOPS_FA = "fa"  # FlashAttention convention (ablate.flops.attention_flops)
# Kernel tables compare every key with the model's default attention ("× sdpa", speedup_vs_sdpa).
BASELINE_ATTENTION = ModelConfig.attention
# `ablate run --sweep KEY=V1,V2` (ablate.sweep): the attention kernels and the position variants measured.
SWEEPS = {"model.attention": "kernels.keys", "model.position": "positions.keys"}
