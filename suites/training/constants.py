"""Names the measurement side and the report side share (no torch)."""

from __future__ import annotations

from typing import Any

SUITE = "training"
BUDGET_KINDS = ("tokens", "flops", "time")
# `ablate run --sweep KEY=V1,V2` (ablate.plan.sweep): any model or training setting becomes an axis of a factorial grid
# over the model.* base (ablate.plan.grid validates the key and values).
SWEEPS = {"model.*": "grid.axes", "train.*": "grid.axes"}
VARIANT_COLUMNS = ("norm", "norm_placement", "activation", "position", "attention", "n_kv_heads", "window")

# Model fields added after results were committed, with the value that reproduces the behaviour from before they
# existed: left out of the hashes at that value, so adding a field does not change (and retrain) every config_id.
ID_OMIT_AT: dict[str, Any] = {"scale_embeddings": False, "t5_max_distance": None}
PROTOCOL = 3  # what a row measures; v2: held-out documents + corpus hash, fairseq init for sinusoidal points;
#              v3: final loss and curves on test documents drawn across the split (ablate.core.evalset), one embedding
#              treatment for every point, GQA at equal parameters, T5's bias table without weight decay

STUCK_MARGIN = 0.1  # nats: a final val loss within this of the unigram loss means no context was learned

# Convergence: a run whose validation loss still falls by more than this over the last CONVERGENCE_WINDOW of its
# steps (least-squares slope of the curve points there) is flagged "still improving": an undertrained point.
CONVERGENCE_DROP = 0.02  # nats (the equivalence margin of the verdicts, ablate.analysis.claims.LOSS_MARGIN)
CONVERGENCE_WINDOW = 0.2  # the last 20% of the steps
