"""Names the measurement side and the report side of the recall suite share (no torch)."""

from __future__ import annotations

SUITE = "recall"
PROTOCOL = 1  # what a row measures: MQAR test accuracy at the answer positions, lr chosen per point on validation

# `ablate run --sweep KEY=V1,V2` (ablate.plan.sweep): the setting varied -> the suite setting holding its values.
SWEEPS = {"model.attention": "grid.attentions", "model.d_model": "grid.d_models", "model.window": "grid.windows",
          "model.n_kv_heads": "grid.kv_heads", "train.lr": "grid.lrs", "data.seq_len": "data.seq_lens",
          "data.kv_pairs": "data.kv_pairs"}

# A point's identity without learning rate and seed (the report picks the learning rate per point on validation).
POINT_COLUMNS = ("attention", "position", "d_model", "n_heads", "n_kv_heads", "window", "seq_len", "kv_pairs")

SOLVED = 0.99  # accuracy at which MQAR counts as solved (Zoology's early-stopping threshold, Figure 2's top)
ACC_MARGIN = 0.02  # equivalence margin on accuracy (a fraction) for parity verdicts
LEARNED = 0.1  # below this accuracy a point has not started to recall (undertrained: a claim on it is not testable)
# A point within this of 1/kv_pairs answers with one of the example's values but not the right one (the MQAR plateau
# every run starts on): it has not started to recall either.
GUESS_MARGIN = 0.05
DROP_MARGIN = 0.05  # the smallest accuracy drop counted as "falls" (sliding window beyond its reach)
# Convergence: a run whose validation accuracy still rose by more than this over the last CONVERGENCE_WINDOW of its
# steps (and is not solved) is flagged "still improving": an undertrained point.
CONVERGENCE_RISE = 0.02
CONVERGENCE_WINDOW = 0.2

ZOOLOGY = "Arora et al. 2023 (Zoology), Figure 2; zoology/experiments/paper_configs/iclr24_zoology_figure2"
BASED = ("Arora et al. 2024 (Based: simple linear attention ... recall-throughput tradeoff), Figure 2; "
         "zoology/experiments/paper_configs/arxiv24_based_figure2")
GQA = "Ainslie et al. 2023 (GQA): grouped-query attention close to multi-head quality"
DIFF = ("Ye et al. 2024 (Differential Transformer), multi-needle retrieval (sec. 3.4); microsoft/unilm "
        "Diff-Transformer")
# The variants the DIFF claim compares, named as data (the claim is about these keys): DIFF vs the standard layer
# over the default softmax kernel at the same d_model, heads, length and pairs.
DIFF_KEYS = ("diff",)
STANDARD_SOFTMAX = ("sdpa",)
# The Based-style layers (a 2nd-order Taylor feature map after a short causal convolution; Arora et al. 2024), named as
# data: the Based claims are about these keys (their feature dimension f: 8, 16, 24); every other layer with a
# recurrent state (``linear``, elu+1) keeps the linear-attention claims.
BASED_KEYS = ("based", "based_f8", "based_f24")
