"""The QK-norm LR-sensitivity claim (suites/training/lr_sensitivity.py) on rows built here: the sensitivity formula
(Wortsman et al. 2023: mean over rates of min(L, L0) minus the best), pairing by everything but attention and rate,
the verdict's direction, and no row without enough rates."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ablate.suites.training.findings import findings_table
from ablate.suites.training.lr_sensitivity import CLAIM, MIN_LRS, lr_sensitivity, lr_sensitivity_rows

LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
V = 64


def _rows(loss_of, lrs=LRS, seeds=(0, 1, 2, 3)):
    rows = []
    for att, qk in (("sdpa", False), ("qknorm", True)):
        for lr in lrs:
            for s in seeds:
                loss = loss_of(att, lr, s)
                rows.append({"point": f"{att}/lr={lr:g}", "seed": s, "status": "ok" if loss is not None else "diverged",
                             "val_loss": loss, "attention_qk_norm": qk, "max_attn_logit": 50.0 if not qk else 4.0,
                             "config.model.attention": att, "config.train.lr": lr, "config.train.seed": s,
                             "config.model.vocab_size": V, "config.model.d_model": 32, "config.train.steps": 10,
                             "curve.val_step": None, "curve.val_loss": None, "unigram_loss": 4.0, "params": 1000,
                             "point_index": 0})
    return pd.DataFrame(rows)


def test_sensitivity_is_the_mean_excess_over_the_best_rate_capped_at_the_initial_loss():
    assert lr_sensitivity({1: 3.0, 2: 3.5, 3: 4.0}, 10.0) == pytest.approx((0 + 0.5 + 1.0) / 3)
    assert lr_sensitivity({1: 3.0, 2: float("nan"), 3: None, 4: 99.0}, 5.0) == pytest.approx((0 + 2 + 2 + 2) / 4)


def test_qk_norm_flat_over_the_rates_is_reproduced_and_the_reverse_is_not():
    def flat_qk(att, lr, s):
        base = 3.0 + 0.01 * s
        if att == "qknorm":
            return base + 0.01 * math.log10(lr / 1e-2) ** 2
        return None if lr == 1e-1 else base + 0.3 * math.log10(lr / 1e-2) ** 2  # sdpa diverges at the top

    (row,) = lr_sensitivity_rows(_rows(flat_qk))
    assert row["published claim"] == CLAIM and row["verdict"] == "reproduced" and row["comparison"].startswith("qknorm")
    assert "max attention logit at lr 0.1: sdpa 50, qknorm 4" in row["detail"]
    (rev,) = lr_sensitivity_rows(_rows(lambda a, lr, s: flat_qk("sdpa" if a == "qknorm" else "qknorm", lr, s)))
    assert rev["verdict"] == "not reproduced"
    assert CLAIM in set(findings_table(_rows(flat_qk))["published claim"])  # it reaches the claims table


def test_no_row_without_enough_shared_rates_or_the_fact():
    df = _rows(lambda a, lr, s: 3.0, lrs=LRS[:MIN_LRS - 1])
    assert lr_sensitivity_rows(df) == []
    assert lr_sensitivity_rows(_rows(lambda a, lr, s: 3.0).drop(columns=["attention_qk_norm"])) == []


def test_a_side_still_improving_at_its_best_rate_makes_the_claim_not_testable_with_the_measured_verdict_kept():
    def flat_qk(att, lr, s):
        base = 3.0 + 0.01 * s
        if att == "qknorm":
            return base + 0.01 * math.log10(lr / 1e-2) ** 2
        return None if lr == 1e-1 else base + 0.3 * math.log10(lr / 1e-2) ** 2

    df = _rows(flat_qk)
    steps = [2, 4, 6, 8, 10]
    falling = [3.4, 3.3, 3.2, 3.1, 3.0]  # -0.1 nats a curve point: +0.1 over the last 20% of 10 steps
    flat = [3.4, 3.1, 3.0, 3.0, 3.0]
    best = (df["config.model.attention"] == "sdpa") & (df["config.train.lr"] == 1e-2)
    df["curve.val_step"] = [steps] * len(df)
    df["curve.val_loss"] = [falling if b else flat for b in best]
    (row,) = lr_sensitivity_rows(df)
    assert row["verdict"] == "not testable"
    assert row["caveats"].startswith("undertrained: sdpa still improving at its best lr 0.01")
    assert "qknorm" not in row["caveats"] and "(measured: reproduced;" in row["detail"]
    df["curve.val_loss"] = [flat] * len(df)  # every best-rate run flat at its end: signed again
    (row,) = lr_sensitivity_rows(df)
    assert row["verdict"] == "reproduced" and row["caveats"] == "—"
