"""``eval.bca_block`` in the extrapolation suite: xPos's blockwise causal attention at evaluation (Sun et al. 2022).
The micro preset end to end (every perplexity row keyed with the block, the rows past the block changed and the
rows up to it equal to a plain run's, the report's protocol line and the xPos claim naming it), and each refusal in
one line."""

from __future__ import annotations

import pytest

import ablate.suites.extrapolation as ex
from ablate.analysis.claims import Context, extrapolation_claims
from ablate.errors import ConfigError
from ablate.plan.runner import RunOptions
from ablate.store.results import read_rows, to_frame
from ablate.suites.extrapolation.config import resolve

XPOS_CLAIM = "xPos has lower perplexity than RoPE past the training length"


def _opts(tmp_path, *overrides):
    return RunOptions(suite="extrapolation", preset="micro", overrides=overrides, out=tmp_path, device="cpu",
                      progress=False)


def test_micro_rows_carry_the_block_and_change_past_it_only(tmp_path):
    base = ("positions=rope,xpos", "rope_scalings=", "finetune.scalings=")
    plain = {(r["position"], r["eval_len"]): r for r in read_rows(ex.run(_opts(tmp_path / "a", *base)))}
    path = ex.run(_opts(tmp_path / "b", *base, "eval.bca_block=16"))
    rows = [r for r in read_rows(path) if r["metric"] == "ppl"]
    assert rows and all(r["bca_block"] == 16 and r["status"] == "ok" for r in rows)
    assert all("bca_block" not in r for r in plain.values())
    for r in rows:
        p = plain[(r["position"], r["eval_len"])]
        if r["eval_len"] <= 16:  # the reference attends a sequence no longer than the block in full
            assert r["value"] == pytest.approx(p["value"], rel=1e-5)
        else:
            assert abs(r["value"] - p["value"]) > 1e-6 * p["value"]
    ex.report(to_frame(path), tmp_path / "rep")
    idx = (tmp_path / "rep" / "extrapolation_index.md").read_text()
    assert "blockwise causal attention past 16 tokens" in idx


def test_the_xpos_claim_says_whether_bca_was_on():
    cells = {(p, L): {s: v * (1 + 0.003 * s) for s in range(4)}
             for p, vals in (("rope", (6.0, 9.0, 14.0)), ("xpos", (6.0, 6.6, 7.2))) for L, v in zip((64, 128, 256), vals)}
    off = [c for c in extrapolation_claims(cells, 64) if c.claim == XPOS_CLAIM][0]
    on = [c for c in extrapolation_claims(cells, 64, Context(bca_block=64)) if c.claim == XPOS_CLAIM][0]
    assert "without the paper's blockwise causal attention" in off.caveats
    assert "blockwise causal attention at evaluation, block 64 tokens" in on.caveats and "without the paper's" not in on.caveats


@pytest.mark.parametrize("overrides, match", [
    (["eval.bca_block=7"], "must be even"),
    (["eval.bca_block=0"], "eval.bca_block"),
    (["eval.bca_block=32"], "exceeds train_len=16"),
    (["eval.bca_block=16", "eval.factors=1"], "no eval_len exceeds it"),
    (["positions=rope", "rope_scalings=rope_dynamic_ntk", "eval.bca_block=16"], "cannot apply to 'rope_dynamic_ntk'"),
])
def test_bad_bca_settings_are_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        resolve("micro", overrides)
    assert "\n" not in str(e.value)


def test_off_by_default_and_the_paper_block_is_accepted():
    assert resolve("micro").eval.bca_block is None
    with pytest.raises(ConfigError, match="rope_scalings=rope_pi,rope_ntk,rope_yarn"):  # the preset's dynamic NTK
        resolve("micro", ["eval.bca_block=16"])
    assert resolve("micro", ["eval.bca_block=16", "rope_scalings=rope_pi,rope_ntk,rope_yarn"]).eval.bca_block == 16
