"""The Based claims of the recall suite (suites/recall/claims.py) on synthetic rows: recall grows with the Based
state (every Based key of a length, smallest vs largest state), Based below softmax attention at equal d_model
(ceiling not testable); plain ``linear`` keeps its own claims, and no Based row appears without a Based point."""

from __future__ import annotations

import pandas as pd

from ablate.suites.recall import recall_claims
from ablate.suites.recall.constants import BASED_KEYS
from ablate.variants.attention.based import FEATURE_DIMS

NAME = "Based (Taylor linear attention + short conv)"
GROWS = f"{NAME} recall grows with its recurrent state (feature dimension f, d_model)"
BELOW = f"At equal d_model, {NAME} recalls less than softmax attention (it needs more width)"
LIN_GROWS = "Linear attention's recall grows with its feature dimension (d_model / heads)"
LIN_BELOW = "At equal d_model, linear attention recalls less than softmax attention (it needs more width)"


def _rows(acc: dict, seeds=(0, 1, 2), improving=False) -> pd.DataFrame:
    """Synthetic ok rows: (attention, d_model, state_form, state_bytes) -> accuracy (1 head, T=32, 4 pairs)."""
    out = []
    for (att, d, form, sb), a in acc.items():
        for s in seeds:
            a_s = min(1.0, max(0.0, a + 0.002 * (s - 1)))
            out.append({"suite": "recall", "status": "ok", "attention": att, "position": "rope", "d_model": d,
                        "n_heads": 1, "n_kv_heads": 1, "window": None, "seq_len": 32, "kv_pairs": 4, "lr": 3e-3,
                        "seed": s, "n_layers": 2, "accuracy": a_s, "val_accuracy": a_s, "val_loss": 1.0,
                        "correct": int(1000 * a_s), "answers": 1000, "state_form": form, "state_kind": form,
                        "state_bytes": sb, "params": 1, "steps": 10, "still_improving": improving,
                        "dist.dist": [2, 20], "dist.dist_correct": [int(500 * a_s)] * 2, "dist.dist_total": [500, 500]})
    return pd.DataFrame(out)


def _claim(df, claim):
    t = recall_claims(df)
    return t[t["claim"] == claim].iloc[0]


def test_based_keys_are_the_registered_based_layers():
    assert set(BASED_KEYS) == set(FEATURE_DIMS)


def test_grows_with_state_across_based_keys_and_widths():
    # f=8 at d=32 (smallest state) vs f=24 at d=32 (largest): a feature-dimension sweep at one width
    df = _rows({("based_f8", 32, "recurrent", 100): 0.6, ("based", 32, "recurrent", 300): 0.8,
                ("based_f24", 32, "recurrent", 900): 0.95})
    r = _claim(df, GROWS)
    ours = r["ours (95% CI)"]
    assert r["verdict"] == "reproduced" and "based_f8 d=32" in ours and "based_f24 d=32 0.95" in ours
    assert _claim(_rows({("based", 32, "recurrent", 100): 0.9, ("based", 64, "recurrent", 200): 0.6}),
                  GROWS)["verdict"] == "not reproduced"
    solved = _claim(_rows({("based", 32, "recurrent", 100): 1.0, ("based", 64, "recurrent", 200): 1.0}), GROWS)
    assert solved["verdict"] == "not testable" and "already solved at the smallest state" in solved["detail"]
    assert _claim(_rows({("based", 32, "recurrent", 100): 0.8}), GROWS)["verdict"] == "not testable"


def test_below_softmax_and_its_ceiling():
    below = _rows({("sdpa", 32, "kv", 50): 1.0, ("based", 32, "recurrent", 100): 0.7})
    assert _claim(below, BELOW)["verdict"] == "reproduced"
    both = _claim(_rows({("sdpa", 32, "kv", 50): 1.0, ("based", 32, "recurrent", 100): 1.0}), BELOW)
    assert both["verdict"] == "not testable" and "ceiling" in both["caveats"] and "both solve" in both["detail"]


def test_linear_claims_ignore_based_points_and_no_based_rows_without_them():
    df = _rows({("sdpa", 32, "kv", 50): 1.0, ("linear", 32, "recurrent", 100): 0.27,
                ("linear", 64, "recurrent", 400): 0.28, ("based", 32, "recurrent", 300): 0.9,
                ("based", 64, "recurrent", 600): 1.0})
    lin = _claim(df, LIN_GROWS)
    # linear on the plateau, the Based points apart
    assert lin["verdict"] == "not testable" and "based" not in lin["ours (95% CI)"]
    assert _claim(df, GROWS)["verdict"] == "reproduced"
    assert "vs linear 0.27" in _claim(df, LIN_BELOW)["ours (95% CI)"]
    assert "vs based 0.9" in _claim(df, BELOW)["ours (95% CI)"]
    t = recall_claims(_rows({("sdpa", 32, "kv", 50): 1.0, ("linear", 32, "recurrent", 100): 0.5}))
    assert GROWS not in set(t["claim"]) and BELOW not in set(t["claim"]) and len(t) == 5
