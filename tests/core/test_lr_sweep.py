"""ablate.core.lr_sweep: log-spaced candidates, a short run per candidate scored on tune documents disjoint from the test
documents, the lowest tune loss chosen, the choice cached; the training suite's wiring and its dry-run cost."""

from __future__ import annotations

import json
import math

import pytest

import ablate.suites.training as training
from ablate.core.config import ModelConfig
from ablate.io.data import load_corpus
from ablate.errors import ConfigError
from ablate.plan.estimate import estimate_lines
from ablate.core.evalset import draw
from ablate.core.lr_sweep import SweepSettings, sweep, sweep_jobs, sweep_steps, tune_set
from ablate.store.results import read_rows
from ablate.plan.runner import RunOptions, run_suite
from ablate.core.train import TrainConfig

MODEL = ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=64)
TRAIN = TrainConfig(steps=16, batch_size=8, seq_len=16, lr=3e-3, min_lr=3e-4, warmup=4, log_every=4, amp=None)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(None)


def test_candidates_are_log_spaced_around_the_configured_rate():
    assert SweepSettings(points=3, spacing=2.0).candidates(3e-3) == (1.5e-3, 3e-3, 6e-3)
    c = SweepSettings(points=4, spacing=10.0).candidates(1e-3)
    assert len(c) == 4 and all(b / a == pytest.approx(10.0, rel=1e-3) for a, b in zip(c, c[1:]))
    assert math.sqrt(c[1] * c[2]) == pytest.approx(1e-3, rel=1e-3)  # centred on train.lr
    assert sweep_steps(300, SweepSettings(points=3, fraction=0.25)) == 75
    for bad in (SweepSettings(points=1), SweepSettings(points=2, spacing=1.0), SweepSettings(points=2, fraction=0)):
        with pytest.raises(ConfigError):
            bad.check()


def test_tune_documents_never_overlap_the_test_documents(corpus):
    test = draw(corpus, 512, role="test", reserve=512)
    tune = tune_set(corpus, SweepSettings(points=2, tokens=512), test_tokens=512, max_doc_tokens=test.max_doc_tokens)
    assert tune.role == "tune" and not set(tune.ids) & set(test.ids) and tune.hash != test.hash


def test_sweep_picks_the_lowest_tune_loss_and_caches_it(corpus, tmp_path, monkeypatch):
    settings = SweepSettings(points=3, spacing=10.0, fraction=0.5, tokens=512)
    cache = tmp_path / "sweep.json"
    res = sweep(MODEL, TRAIN, corpus, settings, test_tokens=512, cache=cache)
    assert list(res.losses) == list(settings.candidates(TRAIN.lr)) and res.steps == 8
    finite = {lr: v for lr, v in res.losses.items() if v is not None}
    assert res.lr == min(finite, key=finite.get) and res.chosen_by == "tune loss"
    assert res.min_lr == pytest.approx(res.lr * TRAIN.min_lr / TRAIN.lr, rel=1e-3)
    assert res.at_edge == (res.lr in (min(res.losses), max(res.losses)))
    tune = tune_set(corpus, settings, test_tokens=512)
    assert res.tune_set == tune.hash and res.tune_tokens == tune.tokens
    # the cache answers a second call without training
    import ablate.core.lr_sweep as mod

    monkeypatch.setattr(mod, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    again = sweep(MODEL, TRAIN, corpus, settings, test_tokens=512, cache=cache)
    assert again.cached and again.lr == res.lr and again.losses == pytest.approx(res.losses, rel=1e-4)
    assert len(json.loads(cache.read_text())) == 1
    # another seed of the same point is another sweep (its key differs); so is another model
    with pytest.raises(AssertionError, match="trained again"):
        sweep(MODEL, TRAIN.__class__(**{**TRAIN.__dict__, "batch_size": 4}), corpus, settings, test_tokens=512,
              cache=cache)


def test_a_diverging_candidate_is_never_chosen(corpus, monkeypatch):
    """A rate whose run diverges is out of the choice; when every candidate diverges the configured rate stays."""
    import ablate.core.lr_sweep as mod
    from ablate.core.train import TrainResult

    real = mod.train
    settings = SweepSettings(points=3, spacing=2.0, fraction=0.5, tokens=512)
    cands = settings.candidates(TRAIN.lr)
    bad = {cands[0], cands[2]}

    def fake(model, cfg, *a, **k):
        return TrainResult(status="diverged", reason="nan") if cfg.lr in bad else real(model, cfg, *a, **k)

    monkeypatch.setattr(mod, "train", fake)
    res = sweep(MODEL, TRAIN, corpus, settings, test_tokens=512)
    assert res.lr == cands[1] and res.losses[cands[0]] is None and res.losses[cands[2]] is None
    assert not res.at_edge
    bad.add(cands[1])
    res = sweep(MODEL, TRAIN, corpus, settings, test_tokens=512)
    assert res.chosen_by == "fallback" and res.lr == TRAIN.lr and not res.at_edge


def test_sweep_jobs_price_the_candidates():
    jobs, evals = sweep_jobs(MODEL, TRAIN, SweepSettings(points=3, fraction=0.25, tokens=1000), "p")
    assert [j.steps for j in jobs] == [4, 4, 4] and all(j.label.startswith("lr_sweep:p:") for j in jobs)
    assert [w.tokens for w in evals] == [1000] * 3
    assert sweep_jobs(MODEL, TRAIN, SweepSettings(points=0)) == ([], [])


def test_training_suite_sweeps_once_per_point_and_reports_the_rate(tmp_path):
    over = ("lr_sweep.points=2", "lr_sweep.tokens=512", "lr_sweep.fraction=0.5", "grid.only=original,modern")
    opts = RunOptions(suite="training", preset="micro", out=tmp_path / "out", device="cpu", progress=False, seeds=2,
                      overrides=over)
    path = run_suite(opts)
    rows = read_rows(path)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    cache = path.with_name(path.stem + ".lr_sweep.json")
    assert len(json.loads(cache.read_text())) == 2  # one sweep per point, shared by both seeds
    for r in rows:
        assert r["lr"] == r["lr_sweep.lr"] == r["config.train.lr"] in r["lr_sweep.lrs"]
        assert len(r["lr_sweep.losses"]) == 2 and r["lr_sweep.tune_set"] != r["eval_set"]
    by_point = {}
    for r in rows:
        by_point.setdefault(r["point"], set()).add(r["lr"])
    assert all(len(v) == 1 for v in by_point.values())
    # the sweep changes the point's config_id (a row without it is another measurement)
    cfg0, cfg1 = training.resolve("micro"), training.resolve("micro", list(over))
    c = load_corpus(None)
    p0, p1 = training.grid_points(cfg0)[0][0], training.grid_points(cfg1)[0][0]
    assert training.config_id(cfg0, p0, c) != training.config_id(cfg1, p1, c)
    # the dry-run estimate prices the sweep
    jobs, evals = training.train_jobs(cfg1, [0, 1])
    sweep_runs = [j for j in jobs if j.label.startswith("lr_sweep:")]
    assert len(sweep_runs) == 2 * 2 and all(j.steps == 6 for j in sweep_runs)
    assert any("learning-rate sweep: 4 short run(s)" in line for line in estimate_lines(jobs, evals))


def test_sweep_settings_without_a_sweep_are_refused():
    with pytest.raises(ConfigError, match="lr_sweep.points=N"):
        training.resolve("micro", ["lr_sweep.fraction=0.5"])
    assert training.resolve("small").lr_sweep.enabled and not training.resolve("micro").lr_sweep.enabled
