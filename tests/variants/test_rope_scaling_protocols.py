"""RoPE-scaling protocols of the extrapolation suite (issue 19 item 5): fixed scales beside the ideal one, the
fine-tuning stage, what the rows say ran, the embedding treatment and the cost the dry run counts."""

from __future__ import annotations

import json
import math

import pytest

import ablate.suites.extrapolation as ex
from ablate.core.checkpoint import load_checkpoint
from ablate.io.data import load_corpus
from ablate.errors import AblateError
from ablate.plan.runner import RunOptions


def _plan(preset: str, overrides: list[str]):
    cfg = ex.resolve(preset, overrides)
    corpus = load_corpus(None, default=cfg.data.corpus, val_frac=cfg.data.val_frac)
    return cfg, ex.plan_jobs(cfg, preset, corpus, "cpu", [0])


def test_fixed_scales_beside_the_ideal_one_in_the_plan():
    cfg, jobs = _plan("micro", ["positions=rope", "eval.rope_scales=ideal,2,8"])
    (job,) = jobs
    L0 = cfg.model.train_len
    got = {(r.key["position"], r.key["eval_len"], r.key.get("rope_scale_mode"), r.key["rope_scale"]) for r in job.rows}
    for L in cfg.eval_lens:
        assert ("rope", L, None, 1.0) in got
        for key in ("rope_pi", "rope_ntk", "rope_yarn"):
            assert {(m, s) for p, n, m, s in got if p == key and n == L} == {("ideal", L / L0), ("fixed", 2.0),
                                                                               ("fixed", 8.0)}
        # dynamic NTK finds its scale itself: one row per length, whatever eval.rope_scales says
        assert {(m, s) for p, n, m, s in got if p == "rope_dynamic_ntk" and n == L} == {("dynamic", L / L0)}
    assert len(got) == len(job.rows)  # every row its own key
    assert all(r.scale == r.key["rope_scale"] for r in job.rows)
    assert ex.rope_scale_specs(cfg) == [("ideal", None), ("fixed", 2.0), ("fixed", 8.0)]


@pytest.mark.parametrize("value", ["0.5", "abc", "ideal,ideal", "4,4.0", "", "inf", "nan"])
def test_bad_fixed_scales_are_refused_in_one_line(value):
    with pytest.raises(AblateError) as ei:
        ex.resolve("micro", [f"eval.rope_scales={value}"])
    assert "\n" not in str(ei.value) and "eval.rope_scales" in str(ei.value)


def test_finetune_jobs_are_keyed_with_what_runs():
    cfg, jobs = _plan("tiny", [])
    ft_jobs = [j for j in jobs if j.finetune is not None]
    assert [j.name for j in ft_jobs] == ["ft-rope_pi-x4-rope-s0", "ft-rope_ntk-x4-rope-s0", "ft-rope_yarn-x4-rope-s0"]
    L0 = cfg.model.train_len
    for j in ft_jobs:
        ft = j.finetune
        assert (ft.scale, ft.seq_len, ft.batch_size, ft.steps) == (4.0, 4 * L0, cfg.train.batch_size // 4, 40)
        assert ft.steps == cfg.train.steps // 10 and ft.lr == cfg.train.min_lr and ft.warmup == 2
        assert [r.eval_len for r in j.rows] == cfg.eval_lens
        for r in j.rows:
            assert r.key["position"] == ft.scaling == r.evaluated and r.key["trained_position"] == "rope"
            assert (r.key["rope_scale_mode"], r.key["rope_scale"], r.scale) == ("fixed", 4.0, 4.0)
            assert (r.key["finetune_steps"], r.key["finetune_len"], r.key["finetune_lr"]) == (40, 4 * L0, 3e-4)
    plain = [r.key for j in jobs if j.finetune is None for r in j.rows]
    assert not any("finetune_steps" in k for k in plain)
    all_keys = [json.dumps(r.key, sort_keys=True) for j in jobs for r in j.rows]
    assert len(set(all_keys)) == len(all_keys)
    tcfg = ex.finetune_train_config(cfg, ft_jobs[0].finetune, 7)
    assert (tcfg.steps, tcfg.batch_size, tcfg.seq_len, tcfg.lr, tcfg.min_lr, tcfg.weight_decay, tcfg.seed) == \
        (40, 8, 256, 3e-4, 3e-4, 0.0, 7)
    assert tcfg.batch_size * tcfg.seq_len == cfg.train.batch_size * cfg.train.seq_len  # tokens per step kept


def test_finetune_follows_the_scored_scalings_and_refuses_what_it_cannot_do():
    cfg = ex.resolve("tiny", ["rope_scalings=rope_ntk"])
    assert cfg.finetune.scalings == ("rope_ntk",)
    assert ex.resolve("tiny", ["model.position=alibi"]).finetune.scalings == ()
    assert ex.resolve("tiny", ["model.position=rope_yarn"]).finetune.scalings == ("rope_yarn",)
    assert ex.resolve("micro").finetune.scalings == ()
    for bad in (["finetune.steps=5"],  # no stage in micro
                ["finetune.scalings=rope_dynamic_ntk"], ["finetune.scalings=alibi"],
                ["finetune.scalings=rope_pi", "positions=alibi", "rope_scalings="],
                ["finetune.scalings=rope_pi", "finetune.scale=1"], ["finetune.scalings=rope_pi", "finetune.steps=0"],
                ["finetune.scalings=rope_pi,rope_pi"], ["finetune.scalings=rope_pi", "finetune.lr=-1"]):
        with pytest.raises(AblateError) as ei:
            ex.resolve("micro", bad)
        assert "\n" not in str(ei.value), bad


def test_dry_run_counts_the_finetuning_and_each_distinct_scale():
    base = ex.resolve("tiny", ["positions=rope", "rope_scalings=rope_pi", "finetune.scalings=",
                               "eval.rope_scales=ideal"])
    with_fixed = ex.resolve("tiny", ["positions=rope", "rope_scalings=rope_pi", "finetune.scalings=",
                                     "eval.rope_scales=ideal,4,16"])
    with_ft = ex.resolve("tiny", ["positions=rope", "rope_scalings=rope_pi", "finetune.scalings=rope_pi",
                                  "eval.rope_scales=ideal"])
    jobs0, evals0 = ex.train_jobs(base, [0])
    jobs1, evals1 = ex.train_jobs(with_fixed, [0])
    jobs2, evals2 = ex.train_jobs(with_ft, [0])
    n = len(base.eval_lens)
    assert len(jobs0) == len(jobs1) == 1 and len(evals0) == 2 * n
    # fixed 4 and 16 coincide with the ideal scale at 4x and 16x: one forward there, two elsewhere
    assert len(evals1) == 2 * n + 2 * n - 2
    (ft,) = [j for j in jobs2 if j.label.startswith("ft-")]
    assert (ft.batch, ft.seq_len, ft.steps) == (8, 256, 40) and len(evals2) == 2 * n + n


def test_series_labels_keep_protocols_apart():
    assert ex.series({"position": "rope_pi"}) == "rope_pi"
    assert ex.series({"position": "rope_pi", "rope_scale_mode": "ideal", "rope_scale": 4.0}) == "rope_pi"
    assert ex.series({"position": "rope_pi", "rope_scale_mode": "fixed", "rope_scale": 4.0}) == "rope_pi s=4"
    row = {"position": "rope_yarn", "rope_scale_mode": "fixed", "rope_scale": 4.0, "finetune_steps": 50,
           "finetune_len": 256}
    assert ex.series(row) == "rope_yarn s=4 ft50@256" and ex.fine_tuned(row)
    assert not ex.fine_tuned({"position": "rope", "finetune_steps": 0})


def _rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_micro_run_finetunes_caches_and_says_what_ran(tmp_path):
    over = ("positions=rope", "rope_scalings=rope_pi,rope_yarn,rope_yarn_notemp", "eval.rope_scales=ideal,4",
            "finetune.scalings=rope_pi,rope_yarn", "finetune.steps=4", "cpu_threads=1")
    opts = RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu", progress=False,
                      overrides=over)
    path = ex.run(opts)
    rows = [r for r in _rows(path) if r["status"] == "ok"]
    L0 = 16
    by = {(r["position"], r["eval_len"], r.get("rope_scale_mode"), r.get("finetune_steps")): r for r in rows}
    assert len(by) == len(rows) == 3 + 3 * 3 * 2 - 3 + 2 * 3 + 3  # rope; 3 scalings x 3 lengths x 2 scales; ft
    for L in (16, 32, 64):
        ideal, fixed = by[("rope_yarn", L, "ideal", 0)], by[("rope_yarn", L, "fixed", 0)]
        ft = by[("rope_yarn", L, "fixed", 4)]
        assert ideal["rope_scale"] == L / L0 and fixed["rope_scale"] == 4.0 == ft["rope_scale"]
        assert fixed["attention_factor"] == pytest.approx(0.1 * math.log(4) + 1) and fixed["rope_temperature"]
        notemp = by[("rope_yarn_notemp", L, "fixed", 0)]
        assert notemp["attention_factor"] == 1.0 and notemp["rope_temperature"] is False
        assert notemp["value"] != fixed["value"]  # the temperature changes what is scored
        assert ft["finetune_len"] == 4 * L0 and ft["finetune_tokens"] == 4 * 2 * 64 and ft["finetune_batch"] == 2
        assert ft["value"] != fixed["value"]  # the fine-tuned weights are other weights
        assert ft["train_steps"] == 30 and ft["scale_embeddings"] is True
        if L == 4 * L0:  # the fixed scale equals the ideal one here: one computation, the same number
            assert fixed["value"] == ideal["value"]
        else:
            assert fixed["value"] != ideal["value"]
    assert by[("rope_pi", 32, "fixed", 4)]["attention_factor"] == 1.0
    ckpts = sorted(p.name for p in (tmp_path / "extrapolation.ckpt").iterdir())
    assert [c.split("-")[0] for c in ckpts] == ["ft", "ft", "rope"]
    payload = load_checkpoint(next((tmp_path / "extrapolation.ckpt").glob("ft-rope_yarn-*.pt")))
    assert payload["finetune"]["seq_len"] == 64 and payload["finetune"]["steps"] == 4
    assert payload["history"][-1]["tokens"] == 4 * 2 * 64
    # resume from the cached checkpoints: no training, the same numbers
    path.unlink()
    rows2 = {(r["position"], r["eval_len"], r.get("rope_scale_mode"), r.get("finetune_steps")): r
             for r in _rows(ex.run(opts)) if r["status"] == "ok"}
    for k, r in by.items():
        assert rows2[k]["value"] == r["value"] and rows2[k]["from_checkpoint"] is True, k


def test_report_keeps_fixed_scale_and_fine_tuned_rows_apart():
    """The summary groups by series: a fixed-scale or fine-tuned row never enters the ideal-scale cell of its
    position (before, all three averaged into one 'rope_pi' cell)."""
    import pandas as pd

    base = {"metric": "ppl", "status": "ok", "trained_position": "rope", "train_len": 16, "seed": 0, "mode": "nonoverlap",
            "tokens": 512, "preset": "micro", "data": "topics", "device": "cpu", "config_id": "x", "stride": None}
    rows = [{**base, "position": "rope", "eval_len": 32, "value": 9.0},
            {**base, "position": "rope_pi", "rope_scale_mode": "ideal", "rope_scale": 2.0, "eval_len": 32, "value": 5.0},
            {**base, "position": "rope_pi", "rope_scale_mode": "fixed", "rope_scale": 4.0, "eval_len": 32, "value": 7.0},
            {**base, "position": "rope_pi", "rope_scale_mode": "fixed", "rope_scale": 4.0, "eval_len": 32, "value": 3.0,
             "finetune_steps": 5, "finetune_len": 64, "finetune_lr": 3e-4}]
    s = ex.ppl_summary(pd.DataFrame(rows))
    got = dict(zip(s["position"], s["mean"]))
    assert got == {"rope": 9.0, "rope_pi": 5.0, "rope_pi s=4": 7.0, "rope_pi s=4 ft5@64": 3.0}
    assert (s["seeds"] == 1).all()
    assert ex.series({"position": "rope_pi s=4", "rope_scale_mode": "fixed", "rope_scale": 4.0}) == "rope_pi s=4"


def test_estimate_counts_finetuning_apart_and_takes_the_rate_from_extrapolation_rows(tmp_path):
    from ablate.plan.estimate import estimate_lines, measured_rate

    cfg = ex.resolve("tiny")
    jobs, evals = ex.train_jobs(cfg, [0])
    lines = estimate_lines(jobs, evals)
    assert lines[0].startswith("estimate: 5 model(s) of 0.11 M") and "819 k training tokens each" in lines[0]
    assert lines[1].startswith("estimate: of which fine-tuning: 3 run(s) of 40 steps x 8 x 256 tokens")
    base = {"status": "ok", "suite": "extrapolation", "device": "cpu", "env.cpu": "CPU X"}
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {**base, "train_flops": 4e11, "train_s": 2.0}, {**base, "train_flops": 6e11, "train_s": 2.0},
        {**base, "train_flops": 5e11, "train_s": 2.0}, {**base, "train_s": 2.0}]))  # the last: no FLOPs, no rate
    r = measured_rate("cpu", where=[tmp_path], cpu="CPU X")
    assert r is not None and r.flops_per_s == pytest.approx(2.5e11) and "extrapolation" in r.source
