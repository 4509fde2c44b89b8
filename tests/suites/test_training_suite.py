"""The training suite on the micro preset (CPU, seconds): schema, seeds aggregation, divergence, resume, report,
budgets, grid overrides and one-line errors."""

import json
import math

import pytest
import torch

from ablate.errors import AblateError, ConfigError
from ablate.store.results import read_rows, row_key, to_frame
from ablate.plan.runner import RunOptions, results_path, run_suite
from ablate.analysis.stats import summarize, t_ppf
from ablate.suites import training

TWO = "grid.only=original,original+swiglu"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models are tiny: one thread is fastest, and immune to other processes on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(tmp_path, *overrides, seeds=1, resume=True, name="out"):
    opts = RunOptions(suite="training", preset="micro", overrides=tuple(overrides), out=tmp_path / name,
                      seeds=seeds, resume=resume, device="cpu", progress=False)
    return run_suite(opts)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """original and original+swiglu, two seeds each."""
    tmp = tmp_path_factory.mktemp("training")
    path = _run(tmp, TWO, seeds=2)
    return tmp, path, read_rows(path)


def test_schema(two_seeds):
    tmp, path, rows = two_seeds
    assert path == tmp / "out" / "training" / "cpu-micro.jsonl"  # <out>/<suite>/<device>-<preset>.jsonl
    opts = RunOptions(suite="training", preset="micro", out=tmp / "out", device="cpu")
    assert path == results_path(opts) == training.results_file(opts, "cpu", "micro")  # the one rule, and its old name
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert len({r["row_key"] for r in rows}) == 4
    for r in rows:
        assert r["suite"] == "training" and r["schema_version"] == 1
        assert r["key_fields"] == ["config_id", "data", "device", "point", "preset", "seed"]
        assert r["row_key"] == row_key({k: r[k] for k in r["key_fields"]})
        for col in ("val_loss", "val_ppl", "val_bpb", "train_loss", "params", "params_non_embedding", "steps",
                    "tokens", "tokens_per_s", "step_ms", "flops_per_step", "tflops", "peak_mem_bytes",
                    "peak_mem_kind", "baseline", "change", "group", "point_index", "grid_id", "budget_kind",
                    "budget_value", "norm", "activation", "position", "attention", "mfu", "mfu_peak",
                    "config.model.d_model", "config.train.steps", "config.budget.kind", "config.grid.axes",
                    "env.torch", "env.git_commit"):
            assert col in r, col
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2))
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
        assert r["mfu"] is None and r["budget_kind"] == "tokens"
        assert r["steps"] == r["config.train.steps"] == 12 and r["tokens"] == 12 * 8 * 16
        # the curve: compact lists in the row
        assert r["curve.step"] == [1, 4, 8, 12] and len(r["curve.train_loss"]) == 4
        assert r["curve.tokens"] == [s * 8 * 16 for s in r["curve.step"]]
        assert r["curve.val_step"] == [6, 12] and len(r["curve.val_loss"]) == 2
        assert all(math.isfinite(v) for v in r["curve.val_loss"] + r["curve.train_loss"])
    by = {(r["point"], r["seed"]): r for r in rows}
    o, s = by[("original", 0)], by[("original+swiglu", 0)]
    # what the report needs to know about the variant is in the row (the report side imports no torch)
    assert o["activation_glu"] is False and s["activation_glu"] is True
    assert (o["activation"], s["activation"]) == ("relu", "swiglu")
    assert s["baseline"] == "original" and o["baseline"] is None
    assert abs(s["params"] - o["params"]) / o["params"] < 0.01  # GLU hidden 2/3: parameters matched
    assert o["grid_id"] == s["grid_id"] and o["config_id"] != s["config_id"]
    # seeds differ (init and data order), points share the data order of a seed
    assert by[("original", 0)]["val_loss"] != by[("original", 1)]["val_loss"]
    json.dumps(rows)  # strict JSON
    # the context-free reference: unigram loss of the training split on the scored test documents
    import numpy as np

    from ablate.io.data import load_corpus
    from ablate.core.evalset import draw

    c = load_corpus(None)
    es = draw(c, 512, role="test")
    counts = np.bincount(np.asarray(c.train), minlength=256) + 1.0
    p = counts / counts.sum()
    want = float(-np.log(p[np.asarray(es.stream[1:])]).mean())
    assert all(r["unigram_loss"] == pytest.approx(want) for r in rows)
    # the final loss and the curve score the same test documents (the curve: the first of them), named in the row
    for r in rows:
        assert r["eval_set"] == es.hash and r["eval_doc_ids"] == list(es.ids) and r["eval_tokens"] == es.tokens
        assert r["curve_eval_tokens"] == es.subsample(256).tokens and r["curve_eval_docs"] >= 1
        assert len(r["doc_loss"]) == len(es.ids)
        assert sum(r["doc_loss"]) / es.tokens == pytest.approx(r["val_loss"], rel=1e-3)
        # the last curve point and the final loss are the same model at the same step, on the same documents
        if r["curve_eval_tokens"] == r["eval_tokens"]:
            assert r["curve.val_loss"][-1] == pytest.approx(r["val_loss"], rel=1e-4)
    stats = training.point_stats(to_frame(path))
    assert all(s["stuck"] == (s["val"].mean > want - training.STUCK_MARGIN) for s in stats)


def test_seeds_aggregation_matches_hand_computed_interval(two_seeds):
    _, path, rows = two_seeds
    df = to_frame(path)
    stats = {s["point"]: s for s in training.point_stats(df)}
    for name in ("original", "original+swiglu"):
        vals = [r["val_loss"] for r in rows if r["point"] == name]
        mean = sum(vals) / 2
        std = math.sqrt(sum((v - mean) ** 2 for v in vals))  # n - 1 = 1
        hw = math.tan(math.pi * 0.475) * std / math.sqrt(2)  # t_{0.975, 1} = tan(0.475 pi)
        s = stats[name]["val"]
        assert s.n == 2 and s.mean == pytest.approx(mean) and s.half_width == pytest.approx(hw, rel=1e-9)
    table = training.summary_table(df)
    row = table[table["variant"] == "original+swiglu"].iloc[0]
    assert row["val loss"] == stats["original+swiglu"]["val"].fmt(".4f")
    comp = training.compare_points(stats["original"], stats["original+swiglu"])
    assert comp.method == "paired"
    d = [stats["original+swiglu"]["val_by_seed"][k] - stats["original"]["val_by_seed"][k] for k in (0, 1)]
    assert comp.delta == pytest.approx(sum(d) / 2)
    assert comp.hi - comp.delta == pytest.approx(t_ppf(0.975, 1) * summarize(d).sem)
    assert row["Δ vs baseline"].startswith(f"{comp.delta:+.4f}") and row["vs"] == "original"
    assert row["seeds"] == "2"


def test_report_files(two_seeds, tmp_path):
    _, path, _ = two_seeds
    files = training.report(to_frame(path), tmp_path / "rep")
    folder = tmp_path / "rep" / "cpu-micro"
    names = {f.name for f in files}
    for n in ("training_table.md", "training_table.tex", "training_findings.md", "training_curves.png",
              "training_curves.svg", "training_pareto.png", "training_pareto.svg", "index.md"):
        assert n in names and (folder / n).is_file()
    md = (folder / "training_table.md").read_text()
    assert "original+swiglu" in md and "±" in md
    assert "GLU FFN beats a non-GLU FFN" in (folder / "training_findings.md").read_text()
    index = (folder / "index.md").read_text()
    assert "Pareto-optimal" in index and "training_curves.png" in index and "seeds: 0, 1 (2)" in index


def test_divergence_row_and_grid_goes_on(tmp_path, monkeypatch):
    """A NaN loss at the third step of one point: a `diverged` row with the step; the next point still runs."""
    calls = {"n": 0}
    real = training.lm_loss

    def loss(model, x, y):
        out = real(model, x, y)
        if model.cfg.activation == "relu":  # the "original" point
            calls["n"] += 1
            if calls["n"] >= 3:
                return out * float("nan")
        return out

    monkeypatch.setattr(training, "lm_loss", loss)
    path = _run(tmp_path, TWO)
    rows = {r["point"]: r for r in read_rows(path)}
    d = rows["original"]
    assert d["status"] == "diverged" and d["diverged_step"] == 2
    assert "step 2" in d["reason"] and d["val_loss"] is None
    assert d["curve.step"] == [1]  # the curve up to the divergence
    assert rows["original+swiglu"]["status"] == "ok"
    # terminal: a re-run does not retrain it
    monkeypatch.setattr(training, "lm_loss", real)
    _run(tmp_path, TWO)
    assert len(read_rows(path)) == 2
    table = training.summary_table(to_frame(path))
    assert table.set_index("variant").loc["original", "seeds"] == "0/1 (1 diverged @ step 2)"


def test_resume_after_interruption(tmp_path, monkeypatch):
    real = training.run_point
    trained: list[tuple[str, int]] = []

    def interrupt_second(cfg, point, seed, *a, **kw):
        if len(trained) == 1:
            raise KeyboardInterrupt
        trained.append((point.name, seed))
        return real(cfg, point, seed, *a, **kw)

    monkeypatch.setattr(training, "run_point", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, TWO, seeds=2)
    path = tmp_path / "out" / "training" / "cpu-micro.jsonl"
    assert [(r["point"], r["seed"]) for r in read_rows(path)] == [("original", 0)]

    def counting(cfg, point, seed, *a, **kw):
        trained.append((point.name, seed))
        return real(cfg, point, seed, *a, **kw)

    monkeypatch.setattr(training, "run_point", counting)
    trained.clear()
    _run(tmp_path, TWO, seeds=2)
    # seed-major order; the finished run is skipped
    assert trained == [("original+swiglu", 0), ("original", 1), ("original+swiglu", 1)]
    rows = read_rows(path)
    assert len(rows) == 4 and len({r["row_key"] for r in rows}) == 4
    trained.clear()
    _run(tmp_path, TWO, seeds=2)
    assert trained == []  # all done
    _run(tmp_path, TWO, seeds=2, resume=False)
    assert len(trained) == 4  # --no-resume re-measures


def test_changed_settings_are_new_measurements(tmp_path):
    path = _run(tmp_path, "grid.only=original")
    _run(tmp_path, "grid.only=original", "train.lr=1e-2")
    rows = read_rows(path)
    assert len(rows) == 2 and rows[0]["config_id"] != rows[1]["config_id"]
    assert rows[0]["grid_id"] != rows[1]["grid_id"]


def test_budget_kinds(tmp_path):
    path = _run(tmp_path, "grid.only=original,modern+linear", "budget.kind=flops", name="flops")
    rows = {r["point"]: r for r in read_rows(path)}
    ref = rows["original"]
    assert ref["steps"] == 12  # the reference point gets train.steps
    assert ref["budget_value"] == pytest.approx(ref["flops_per_step"] * 12)
    for r in rows.values():
        assert r["budget_kind"] == "flops" and r["flops"] <= r["budget_value"]
        assert r["flops"] + r["flops_per_step"] > r["budget_value"]
    path = _run(tmp_path, "grid.only=original", "budget.kind=time", "budget.seconds=0.5", name="time")
    (r,) = read_rows(path)
    assert r["budget_kind"] == "time" and r["budget_value"] == 0.5 and r["calib_tokens_per_s"] > 0
    assert r["steps"] == int(0.5 * r["calib_tokens_per_s"] // 128)
    path = _run(tmp_path, "grid.only=original", "budget.tokens=640", name="tokens")
    (r,) = read_rows(path)
    assert r["steps"] == 5 and r["tokens"] == 640


def test_grid_override_factorial_and_unsupported_rows(tmp_path):
    """--set grid=... (factorial); an invalid combination writes an `unsupported` row and the grid goes on."""
    path = _run(tmp_path, "grid=attention=sdpa,linear;position=rope,alibi", "train.steps=4")
    rows = {r["point"]: r for r in read_rows(path)}
    assert list(rows) == ["sdpa/rope", "sdpa/alibi", "linear/rope", "linear/alibi"]
    assert rows["linear/alibi"]["status"] == "unsupported"
    assert "alibi" in rows["linear/alibi"]["reason"]
    assert all(rows[n]["status"] == "ok" for n in ("sdpa/rope", "sdpa/alibi", "linear/rope"))
    assert rows["linear/rope"]["baseline"] == "sdpa/rope" and rows["linear/rope"]["axis.attention"] == "linear"


@pytest.mark.parametrize("overrides, match", [
    (("grid=foo=1,2",), "unknown grid axis 'foo'; valid: "),
    (("grid.axes=norm=layernorm,bogus",), "unknown norm 'bogus'; valid: layernorm, rmsnorm"),
    (("grid.only=original,gpt2",), "unknown grid point 'gpt2' in grid.only; valid: original, original+prenorm"),
    (("budget.kind=dollars",), "unknown budget.kind 'dollars'; valid: tokens, flops, time"),
    (("budget.wallclock=3",), "unknown setting 'budget.wallclock'; valid: "),
    (("model.train_len=32", "train.seq_len=8"), "model.train_len=32 and train.seq_len=8 conflict"),
])
def test_errors_are_one_line(tmp_path, overrides, match):
    with pytest.raises(AblateError) as info:
        _run(tmp_path, *overrides)
    assert "\n" not in str(info.value) and match in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_unknown_preset_and_cli_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown training preset 'huge'; valid: micro, tiny, small, gpu"):
        training.resolve("huge")
    from ablate.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--suite", "training", "--preset", "micro", "--device", "cpu", "--out", str(tmp_path),
              "--set", "grid=norm=layernorm,rmsnorm;colour=red"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ablate: error: unknown grid axis 'colour'; valid: ")


def test_presets_resolve_and_tiny_grid():
    for name in training.PRESETS:
        cfg = training.resolve(name)
        pts, ref = training.grid_points(cfg)
        assert len(pts) == 14 and ref.name == "original"
        assert cfg.model.train_len == cfg.train.seq_len
    assert training.resolve("gpu").train.amp == "bf16" and training.resolve("tiny").train.amp is None


def test_flops_per_step_conventions():
    from ablate.core.config import ModelConfig
    from ablate.core.flops import matmul_params
    from ablate.core.model import Transformer
    from ablate.core.train import TrainConfig

    mc = ModelConfig(d_model=32, n_layers=2, n_heads=2, train_len=16)
    tc = TrainConfig(batch_size=4, seq_len=16)
    torch.manual_seed(0)
    m = Transformer(mc)
    n = matmul_params(m)
    full = training.flops_per_step(m, mc, tc)
    assert full == pytest.approx(6 * n * 64 + 3 * 2 * 4 * 4 * 2 * 16 * 16 * 16 / 2)
    lin = ModelConfig(d_model=32, n_layers=2, n_heads=2, train_len=16, attention="linear")
    from ablate.core.flops import linear_attention_flops
    from ablate.variants.attention import LINEAR_CHUNK

    one_layer = linear_attention_flops(4, 2, 2, 16, 16, 16, causal=True, chunk=LINEAR_CHUNK, mode="fwd")
    assert training.flops_per_step(m, lin, tc) == pytest.approx(6 * n * 64 + 3 * 2 * one_layer)


def test_findings_pair_points_that_isolate_one_change(tmp_path):
    path = _run(tmp_path, "grid=activation=relu,swiglu;norm=layernorm,rmsnorm", "train.steps=4", seeds=2)
    df = to_frame(path)
    pairs = {(claim.split()[0], old, new) for claim, old, new, *_ in training.finding_pairs(df)}
    assert pairs == {("GLU", "relu/layernorm", "swiglu/layernorm"), ("GLU", "relu/rmsnorm", "swiglu/rmsnorm"),
                     ("RMSNorm", "relu/layernorm", "relu/rmsnorm"), ("RMSNorm", "swiglu/layernorm", "swiglu/rmsnorm")}
    table = training.findings_table(df)
    assert len(table) == 4  # every pair gets a verdict, derived from the rows
    assert set(table["verdict"]) <= {"reproduced", "not reproduced", "inconclusive"}
    assert all(table["published"].astype(bool)) and "holds" not in " ".join(table["detail"])


def test_findings_pair_points_each_at_its_own_tuned_rate_over_the_same_candidates(tmp_path):
    """A learning-rate sweep gives each point its own rate (config.train.lr): the pair still isolates the change
    when both were tuned over the same candidates; not when the candidates differ, nor when the rates were set."""
    path = _run(tmp_path, "grid=activation=relu,swiglu", "train.steps=4", seeds=1)
    df = to_frame(path)
    assert len(training.finding_pairs(df)) == 1
    df["config.train.lr"] = [1e-3 if a == "relu" else 2e-3 for a in df["config.model.activation"]]
    assert training.finding_pairs(df) == []  # rates set apart: not a one-change pair
    df["lr_sweep.lrs"] = [[5e-4, 1e-3, 2e-3]] * len(df)
    assert [p[:3] for p in training.finding_pairs(df)] == [(training.FINDINGS[0].claim, "relu", "swiglu")]
    df["lr_sweep.lrs"] = [[5e-4, 1e-3, 2e-3] if a == "relu" else [1e-3, 2e-3, 4e-3]
                          for a in df["config.model.activation"]]
    assert training.finding_pairs(df) == []  # tuned over other candidates


def test_report_borrows_points_measured_by_another_grid(tmp_path):
    """A second grid sharing a point (same name and settings) skips it on resume; its report still shows it."""
    first = _run(tmp_path, "grid.only=modern,modern-swiglu→relu", "train.steps=4", seeds=2)
    _run(tmp_path, "grid=activation=swiglu,geglu", "grid.mode=oat", "train.steps=4", seeds=2)
    rows = read_rows(first)
    assert len(rows) == 6  # modern was not retrained
    groups = dict(training.group_dirs(to_frame(first)))
    assert set(groups) == {"cpu-micro", f"cpu-micro-{rows[-1]['grid_id'][:6]}"}
    oat = training.point_stats(groups[f"cpu-micro-{rows[-1]['grid_id'][:6]}"])
    assert [(s["point"], s["n"], s["baseline"]) for s in oat] == [("modern", 2, None), ("modern+geglu", 2, "modern")]


def test_time_limit_stops_starting_runs(tmp_path, capsys):
    path = _run(tmp_path, TWO, "time_limit_s=1e-9", seeds=2)
    assert read_rows(path, missing_ok=True) == []
    assert "time_limit_s=1e-09 reached: 4 run(s) left" in " ".join(capsys.readouterr().out.split())
    _run(tmp_path, TWO, seeds=2)  # the same command without the limit resumes
    assert len(read_rows(path)) == 4
