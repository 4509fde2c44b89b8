"""The recall suite's sliding-window claim on synthetic rows: a window point that never learned recall inside its
window (or has no query beyond its reach) is left out of the verdict and named, not allowed to flip it; with no
point left the claim is not testable. And a point label names its heads when there is more than one."""

from __future__ import annotations

import pandas as pd

from ablate.suites.recall import recall_claims

WINDOW = "Sliding-window attention loses recall once queries reach beyond its window"
GQA = "GQA/MQA recall as well as multi-head attention at equal d_model"


def _row(att, window, seed, inside, beyond, *, d=32, heads=1, kv=1, far=True):
    dist, correct, total = ([2, 20], [int(500 * inside), int(500 * beyond)], [500, 500]) if far else \
        ([2], [int(500 * inside)], [500])
    acc = sum(correct) / sum(total)
    return {"suite": "recall", "status": "ok", "attention": att, "position": "rope", "d_model": d, "n_heads": heads,
            "n_kv_heads": kv, "window": window, "seq_len": 32, "kv_pairs": 4, "lr": 3e-3, "seed": seed,
            "n_layers": 2, "accuracy": acc, "val_accuracy": acc, "val_loss": 1.0, "correct": sum(correct),
            "answers": sum(total), "state_form": "window" if window else "kv", "state_kind": "window",
            "state_bytes": 100, "params": 1, "steps": 10, "still_improving": False, "dist.dist": dist,
            "dist.dist_correct": correct, "dist.dist_total": total}


def _claim(rows, claim):
    t = recall_claims(pd.DataFrame(rows))
    return t[t["claim"] == claim].iloc[0]


def _seeds(**kw):
    return [_row(seed=s, **{**kw, "inside": kw["inside"] - 0.01 * s, "beyond": kw["beyond"] + 0.005 * s})
            for s in range(3)]


def test_a_window_point_that_never_learned_is_left_out_not_counted():
    learned = _seeds(att="sliding_window", window=8, inside=0.99, beyond=0.03)
    stuck = _seeds(att="sliding_window", window=4, inside=0.02, beyond=0.04)  # 'better' beyond: noise, not recall
    c = _claim(learned + stuck, WINDOW)
    assert c["verdict"] == "reproduced", c["detail"]
    assert "left out of the verdict: sliding_window W=4 d=32 T=32/4: did not learn recall inside its window" \
        in c["detail"]
    assert c["caveats"].startswith("left out")
    only_stuck = _claim(stuck, WINDOW)
    assert only_stuck["verdict"] == "not testable" and "W=4" in only_stuck["detail"]


def test_a_learned_window_with_no_drop_is_not_reproduced():
    flat = _seeds(att="sliding_window", window=8, inside=0.99, beyond=0.97)
    assert _claim(flat, WINDOW)["verdict"] == "not reproduced"


def test_a_window_with_no_far_query_is_left_out():
    near_only = [_row("sliding_window", 8, s, 0.99, 0.0, far=False) for s in range(3)]
    learned = _seeds(att="sliding_window", window=8, inside=0.99, beyond=0.03, d=64)
    c = _claim(near_only + learned, WINDOW)
    assert c["verdict"] == "reproduced" and "no query reaches beyond W" in c["detail"]


def test_labels_name_the_heads():
    mha = [_row("sdpa", None, s, 1.0, 1.0, d=64, heads=4, kv=4) for s in range(3)]
    mqa = [_row("sdpa", None, s, 1.0, 1.0, d=64, heads=4, kv=1) for s in range(3)]
    c = _claim(mha + mqa, GQA)
    ours = c["ours (95% CI)"]
    assert "sdpa h=4 kv_heads=1 d=64" in ours and "MHA 1.000" in ours
