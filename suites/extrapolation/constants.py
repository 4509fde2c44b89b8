"""Names every module of the extrapolation suite shares, torch-free (the report side imports them too)."""

from __future__ import annotations

SUITE = "extrapolation"
POSITIONS = ("none", "sinusoidal", "learned", "rope", "alibi", "t5_bias")
ROPE_SCALINGS = ("rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn")
# `ablate run --sweep KEY=V1,V2` (ablate.plan.sweep): the trained position variants, and the inference-time scalings
# swapped into a trained model at evaluation.
SWEEPS = {"model.position": "positions", "eval.position": "rope_scalings"}
METRIC_PPL = "ppl"
METRIC_PASSKEY = "passkey_acc"
METRIC_STREAM = "stream_ppl"  # StreamingLLM's streaming evaluation (stream.py)
# its modes (ablate.variants.attention.streaming.MODES), named here for the report side: the keep-the-first-tokens mode
# shares its name with the `sinks` attention layer, so code compares against these names, never a literal
DENSE, WINDOW, SINKS, RECOMPUTE = "dense", "window", "sinks", "recompute"
FAIR_TOL = 0.10  # report: a trained variant more than 10% above the best perplexity at train_len is undertrained
PROTOCOL = 3  # what a row measures; v3: documents drawn across the held-out split, exchangeable multikey needles,
# fairseq embedding scale for every variant, T5 table without weight decay (v2: held-out documents, corpus hash, fairseq
# sinusoidal init, reference YaRN)
# Key fields that make rows comparable: the report and the terminal summary group rows by them.
PROTOCOL_COLS = ("preset", "config_id", "train_len", "mode", "stride", "tokens", "eval_set", "data", "device",
                 "bca_block")  # bca_block: blockwise causal attention at evaluation (absent: off)
# The retrieval probes (ablate.core.evaluate.PROBES, in its order, named here without importing torch) and their titles.
PROBE_TITLES = {"passkey": "Passkey retrieval (one needle, digit-free filler)",
                "multikey": "Multi-key needle in a haystack (RULER-style: labelled needles, numbers in the filler)"}
PROBE_TASKS = tuple(PROBE_TITLES)
