"""The attention-layer claims of the training suite (DIFF: lower loss at the same size and tokens; MLA: at equal
parameters at least as good as MHA) on rows built here, and the grid that puts MLA at equal parameters
(``ablate.plan.grid.reference_model``: a layer larger than the standard one gives the difference up from its FFN)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from ablate.core.config import ModelConfig
from ablate.plan.grid import EQUAL_PARAMS_TOL, GridSpec, build_grid, ffn_width, param_count, reference_model
from ablate.suites.training.findings import findings_table

DIFF = "DIFF Transformer reaches a lower loss than a Transformer of the same size and tokens"
MLA = "MLA at equal parameters is at least as good as MHA"
MODEL = ModelConfig(d_model=64, n_layers=2, n_heads=4, train_len=16, max_len=64, vocab_size=64)


@pytest.mark.parametrize("key", ["mla", "mla_q"])
def test_mla_points_get_the_standard_layers_parameter_count(key):
    pts = {p.name: p.model for p in build_grid(MODEL, GridSpec(axes=f"attention=sdpa,{key}", base="preset"))}
    base, mla = pts["sdpa"], pts[key]
    plain = replace(base, attention=key)
    assert abs(param_count(plain) / param_count(base) - 1) > EQUAL_PARAMS_TOL  # what the resizing fixes
    assert reference_model(mla) == replace(mla, attention="sdpa")
    assert abs(param_count(mla) / param_count(base) - 1) < EQUAL_PARAMS_TOL
    assert ffn_width(mla) != ffn_width(base)
    off = {p.name: p.model for p in build_grid(MODEL, GridSpec(axes=f"attention=sdpa,{key}", base="preset",
                                                                     gqa_equal_params=False))}
    assert off[key] == plain  # the knob turns it off


def test_layers_on_par_with_the_standard_layer_are_left_alone():
    pts = {p.name: p.model for p in build_grid(MODEL, GridSpec(axes="attention=sdpa,diff,qknorm,sinks", base="preset"))}
    for key in ("diff", "qknorm", "sinks"):
        assert pts[key] == replace(pts["sdpa"], attention=key)
        assert abs(param_count(pts[key]) / param_count(pts["sdpa"]) - 1) < EQUAL_PARAMS_TOL
    assert reference_model(pts["diff"]) == pts["diff"]


def _rows(loss_of, params_of=lambda att: 10_000, seeds=(0, 1, 2, 3), drop=0.0):
    rows = []
    for i, att in enumerate(("sdpa", "diff", "mla")):
        for s in seeds:
            loss = loss_of(att, s)
            rows.append({"point": att, "seed": s, "status": "ok", "val_loss": loss, "value": loss, "attention": att,
                         "attention_standard": att == "sdpa", "attention_qk_norm": False,
                         "config.model.attention": att, "config.model.ffn_mult": 4.0 if att != "mla" else 3.1,
                         "config.train.seed": s, "config.model.d_model": 64, "config.train.steps": 100,
                         "config.train.lr": 1e-3, "curve.val_step": [60, 80, 100],
                         "curve.val_loss": [loss + 2 * drop, loss + drop, loss], "steps": 100,
                         "unigram_loss": 5.0, "params": params_of(att), "point_index": i})
    return pd.DataFrame(rows)


def _row(df, claim):
    (row,) = [r for _, r in findings_table(df).iterrows() if r["published claim"] == claim]
    return row


def test_diff_lower_loss_is_reproduced_and_the_reverse_is_not():
    lower = _rows(lambda att, s: 3.0 + 0.01 * s - (0.1 + 0.005 * s if att == "diff" else 0.0))
    row = _row(lower, DIFF)
    assert row["verdict"] == "reproduced" and row["comparison"] == "diff vs sdpa"
    higher = _rows(lambda att, s: 3.0 + 0.01 * s + (0.1 + 0.005 * s if att == "diff" else 0.0))
    assert _row(higher, DIFF)["verdict"] == "not reproduced"
    same = _rows(lambda att, s: 3.0 + 0.01 * s + 0.001 * (s % 2))
    assert _row(same, DIFF)["verdict"] == "not reproduced"  # equivalent: no difference of the claimed kind


def test_mla_on_par_is_reproduced_only_at_equal_parameters():
    def on_par(att, s):
        return 3.0 + 0.01 * s + (0.001 * (s % 2) if att == "mla" else 0.0)

    assert _row(_rows(on_par), MLA)["verdict"] == "reproduced"
    bigger = _row(_rows(on_par, params_of=lambda att: 11_000 if att == "mla" else 10_000), MLA)
    assert bigger["verdict"] == "not testable" and "parameters not on par" in bigger["detail"]
    assert "measured: reproduced" in bigger["detail"] and "+10% params" in bigger["caveats"]
    worse = _rows(lambda att, s: 3.0 + 0.01 * s + (0.2 + 0.01 * s if att == "mla" else 0.0))
    assert _row(worse, MLA)["verdict"] == "not reproduced"


def test_a_point_still_improving_makes_the_layer_claims_not_testable():
    df = _rows(lambda att, s: 3.0 + 0.01 * s - (0.1 if att == "diff" else 0.0), drop=0.1)
    row = _row(df, DIFF)
    assert row["verdict"] == "not testable" and "measured: reproduced" in row["detail"]


def test_rows_without_the_standard_layer_fact_make_no_layer_claim():
    df = _rows(lambda att, s: 3.0 + 0.01 * s).drop(columns=["attention_standard"])
    claims = set(findings_table(df)["published claim"])
    assert DIFF not in claims and MLA not in claims
