"""The DIFF multi-needle claim of the recall suite (suites/recall/claims.py) on synthetic rows: DIFF vs the standard
softmax layer at the same width, length and pairs; no row at all without a DIFF point (the other claims unchanged)."""

from __future__ import annotations

import pandas as pd

from ablate.suites.recall import recall_claims

CLAIM = "Differential attention retrieves better than softmax attention (multi-needle)"


def _rows(acc: dict, seeds=(0, 1, 2), improving=False) -> pd.DataFrame:
    """Synthetic ok rows: acc maps attention -> accuracy (d_model 32, 2 heads, T=64, 4 pairs)."""
    out = []
    for att, a in acc.items():
        for s in seeds:
            a_s = min(1.0, max(0.0, a + 0.002 * (s - 1)))
            out.append({"suite": "recall", "status": "ok", "attention": att, "position": "rope", "d_model": 32,
                        "n_heads": 2, "n_kv_heads": 2, "window": None, "seq_len": 64, "kv_pairs": 4, "lr": 3e-3,
                        "seed": s, "n_layers": 2, "accuracy": a_s, "val_accuracy": a_s, "val_loss": 1.0,
                        "correct": int(1000 * a_s), "answers": 1000, "state_form": "kv", "state_kind": "kv",
                        "state_bytes": 1000, "params": 1, "steps": 10, "still_improving": improving,
                        "dist.dist": [2, 40], "dist.dist_correct": [int(500 * a_s)] * 2, "dist.dist_total": [500, 500]})
    return pd.DataFrame(out)


def _verdict(df):
    t = recall_claims(df)
    return t[t["claim"] == CLAIM].iloc[0]


def test_diff_better_is_reproduced_worse_or_equal_is_not():
    assert _verdict(_rows({"sdpa": 0.5, "diff": 0.8}))["verdict"] == "reproduced"
    assert _verdict(_rows({"sdpa": 0.8, "diff": 0.5}))["verdict"] == "not reproduced"
    assert _verdict(_rows({"sdpa": 0.6, "diff": 0.6}))["verdict"] == "not reproduced"


def test_ceiling_and_undertrained_points_are_not_testable():
    both = _verdict(_rows({"sdpa": 1.0, "diff": 1.0}))
    assert both["verdict"] == "not testable" and "ceiling" in both["caveats"]
    slow = _verdict(_rows({"sdpa": 0.5, "diff": 0.8}, improving=True))
    assert slow["verdict"] == "not testable" and "measured: reproduced" in slow["detail"]
    alone = _verdict(_rows({"diff": 0.8}))
    assert alone["verdict"] == "not testable" and "no standard softmax point" in alone["detail"]


def test_no_diff_point_no_diff_row():
    t = recall_claims(_rows({"sdpa": 0.5}))
    assert CLAIM not in set(t["claim"]) and len(t) == 5


def test_a_diff_point_is_not_the_softmax_side_of_the_other_claims():
    """DIFF keeps a KV cache like softmax attention; "softmax attention solves MQAR" is about the standard layer,
    so a DIFF point that did not solve leaves it as it was."""
    solves = "Softmax attention solves MQAR (accuracy >= 0.99) at every d_model and length"
    t = recall_claims(_rows({"sdpa": 1.0, "diff": 0.5}))
    row = t[t["claim"] == solves].iloc[0]
    assert row["verdict"] == "reproduced" and "diff" not in row["ours (95% CI)"]
