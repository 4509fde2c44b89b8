"""The extrapolation suite end to end on the micro preset (CPU, seconds); the evaluation protocol itself is
tests/core/test_evaluate.py."""

import math

import pytest

import ablate.suites.extrapolation as ex
from ablate.io.data import load_corpus
from ablate.errors import AblateError, ConfigError, UnknownKeyError
from ablate.store.results import ResultWriter, read_rows, to_frame
from ablate.plan.runner import RunOptions, results_path

REQUIRED = ("suite", "run_id", "status", "reason", "metric", "value", "unit", "seed", "attention", "position", "norm",
            "activation", "n_kv_heads", "train_len", "eval_len", "preset", "mode", "stride", "tokens", "row_key",
            "config.model.d_model", "config.train.steps", "env.torch", "env.hostname")


# ---------------------------------------------------------------------------------------------------------------
# Suite


def _opts(tmp_path, *overrides, **kw):
    return RunOptions(suite="extrapolation", preset="micro", overrides=overrides, out=tmp_path, device="cpu",
                      progress=False, **kw)


N_ROWS = (6 + 4) * 3  # (trained variants + rope scalings) x eval lengths


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    path = ex.run(_opts(out))
    assert path == results_path(_opts(out)) == out / "extrapolation" / "cpu-micro.jsonl"  # the one rule
    return out, path


def test_micro_rows_schema(micro_run):
    out, path = micro_run
    rows = read_rows(path)
    assert len(rows) == N_ROWS and len({r["row_key"] for r in rows}) == N_ROWS
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
        assert r["suite"] == "extrapolation" and r["metric"] == "ppl" and r["mode"] == "nonoverlap"
        assert r["tokens"] >= 512 and r["eval_set"] and r["tokens"] == sum(r.get("doc_tokens") or [r["tokens"]])
        if r["status"] == "ok":  # the per-document sums are the row's loss, split by document
            assert sum(r["doc_loss"]) == pytest.approx(r["loss"] * r["tokens"], rel=1e-4)
            assert len(r["doc_loss"]) == len(r["eval_doc_ids"]) == r["eval_docs"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(math.isfinite(r["value"]) and r["value"] > 1 for r in ok)
    assert all(len(r["pos_loss"]) == math.ceil(r["eval_len"] / r["pos_bin"]) for r in ok)
    learned = {r["eval_len"]: r for r in rows if r["position"] == "learned"}
    assert learned[16]["status"] == "ok"
    for L in (32, 64):
        assert learned[L]["status"] == "unsupported" and "no positions past max_len" in learned[L]["reason"]
    scaled = [r for r in rows if r["trained_position"] == "rope" and r["position"] != "rope"]
    assert {r["position"] for r in scaled} == set(ex.ROPE_SCALINGS)
    assert {r["rope_scale"] for r in scaled if r["eval_len"] == 64} == {4.0}
    assert len(list((out / "extrapolation.ckpt").glob("*.pt"))) == 6


def test_resume_trains_nothing_and_adds_no_rows(micro_run, monkeypatch):
    out, path = micro_run

    def no_training(*a, **k):
        raise AssertionError("a finished variant was retrained")

    monkeypatch.setattr(ex, "train", no_training)
    ex.run(_opts(out))
    assert len(read_rows(path)) == N_ROWS


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    real_write = ResultWriter.write
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # killed mid-way
        return real_write(self, *a, **k)

    monkeypatch.setattr(ResultWriter, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        ex.run(_opts(tmp_path))
    monkeypatch.setattr(ResultWriter, "write", real_write)
    assert len(read_rows(results_path(_opts(tmp_path)))) == 7
    ex.run(_opts(tmp_path))
    rows = read_rows(results_path(_opts(tmp_path)))
    assert len(rows) == N_ROWS and len({r["row_key"] for r in rows}) == N_ROWS


def test_diverged_variant_writes_status_rows(tmp_path, monkeypatch):
    import functools

    import torch.nn.functional as F

    def nan_loss(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1)) * float("nan")

    monkeypatch.setattr(ex, "train", functools.partial(ex.train, loss_fn=nan_loss))
    ex.run(_opts(tmp_path, "positions=sinusoidal", "rope_scalings="))
    rows = read_rows(results_path(_opts(tmp_path)))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"diverged"}
    assert all("step 0" in r["reason"] for r in rows)


def test_report_from_jsonl_alone(micro_run, tmp_path):
    _, path = micro_run
    files = ex.report(to_frame(path), tmp_path / "rep")
    names = {f.name for f in files}
    for stem in ("extrapolation_ppl", "extrapolation_effective_length"):
        assert {stem + ".md", stem + ".tex"} <= names
    for stem in ("extrapolation_ppl_vs_length", "extrapolation_loss_vs_position"):
        assert {stem + ".png", stem + ".svg"} <= names
    assert "extrapolation_index.md" in names
    md = (tmp_path / "rep" / "extrapolation_ppl.md").read_text()
    assert "rope_yarn" in md and "—" in md and "non-overlapping" in md
    assert "\\toprule" in (tmp_path / "rep" / "extrapolation_ppl.tex").read_text()


def test_seeds_sliding_and_passkey(tmp_path):
    path = ex.run(_opts(tmp_path, "positions=rope,alibi", "rope_scalings=rope_ntk", "eval.mode=sliding",
                        "eval.stride=8", "passkey=true", "probe.steps=10", seeds=2))
    rows = read_rows(path)
    ppl = [r for r in rows if r["metric"] == "ppl"]
    pk = [r for r in rows if r["metric"] == "passkey_acc"]
    assert len(ppl) == 2 * 3 * 3 and {r["stride"] for r in ppl} == {8} and {r["seed"] for r in ppl} == {0, 1}
    assert len(pk) == 2 * 3 * 3 * 2 and all(0.0 <= r["value"] <= 1.0 for r in pk)
    files = {f.name for f in ex.report(to_frame(path), tmp_path / "rep")}
    assert "extrapolation_passkey.png" in files
    assert "±" in (tmp_path / "rep" / "extrapolation_ppl.md").read_text()


def test_switching_passkey_on_does_not_retrain_the_lms(tmp_path, monkeypatch):
    ex.run(_opts(tmp_path, "positions=alibi", "rope_scalings="))
    real_train, trained = ex.train, []

    def counting(model, cfg, batches, **kw):
        trained.append(type(batches).__name__)
        return real_train(model, cfg, batches, **kw)

    monkeypatch.setattr(ex, "train", counting)
    ex.run(_opts(tmp_path, "positions=alibi", "rope_scalings=", "passkey=true", "probe.steps=5"))
    rows = read_rows(results_path(_opts(tmp_path)))
    assert trained == ["PasskeyBatches", "PasskeyBatches"]  # the passkey and the multikey model, not the LM
    assert sum(r["metric"] == "ppl" for r in rows) == 3 and sum(r["metric"] == "passkey_acc" for r in rows) == 6
    assert sum(r["metric"] == "multikey_acc" for r in rows) == 6


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown extrapolation preset 'huge'; valid: micro, tiny, small, gpu, paper"):
        ex.run(RunOptions(suite="extrapolation", preset="huge", out=tmp_path, device="cpu", progress=False))
    with pytest.raises(UnknownKeyError, match="unknown position 'nope'; valid:"):
        ex.run(_opts(tmp_path, "positions=rope,nope"))
    with pytest.raises(ConfigError, match="unknown setting 'eval.foo'"):
        ex.run(_opts(tmp_path, "eval.foo=1"))
    with pytest.raises(ConfigError, match="not a RoPE scaling"):
        ex.run(_opts(tmp_path, "rope_scalings=alibi"))
    with pytest.raises(ConfigError, match="data path not found"):
        ex.run(_opts(tmp_path, data=tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="validation split holds only"):
        ex.run(_opts(tmp_path, "eval.factors=1,4096", "eval.tokens=1048576"))
    for exc in (ConfigError,):
        assert issubclass(exc, AblateError)
    assert not (results_path(_opts(tmp_path))).exists()  # nothing ran


def test_resolve_keeps_lengths_consistent():
    cfg = ex.resolve("micro", ["train.seq_len=32"])
    assert cfg.model.train_len == 32 and cfg.model.max_len == 32 and cfg.eval_lens == [32, 64, 128]
    cfg = ex.resolve("micro", ["model.train_len=8", "model.max_len=64"])
    assert cfg.train.seq_len == 8 and cfg.model.max_len == 64


def test_effective_length_and_interval():
    assert ex.effective_length([(64, 10.0), (128, 10.9), (256, 11.5), (512, 10.0)], 64) == 128
    assert ex.effective_length([(64, 10.0), (128, 9.0), (256, 9.5)], 64) == 256
    assert ex.effective_length([(128, 9.0)], 64) is None
    m, ci, n = ex.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and n == 3 and ci == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(ex.mean_ci([5.0])[1])


def test_one_embedding_treatment_for_every_variant_named_in_every_row():
    """The ALiBi paper's fairseq decoder scales token embeddings by sqrt(d) for every variant it trains: the presets
    do the same for every trained variant (not for sinusoidal alone), every row says so in its key, and
    ``model.scale_embeddings=false`` turns it off for all (a factor of its own: other config ids, other rows)."""
    for preset in ("micro", "tiny", "small", "gpu", "paper"):
        cfg = ex.resolve(preset)
        assert all(ex.job_model(cfg, p).scale_embeddings for p in ex.POSITIONS), preset
    cfg = ex.resolve("micro")
    corpus = load_corpus(None, default=cfg.data.corpus, val_frac=cfg.data.val_frac)
    jobs = ex.plan_jobs(cfg, "micro", corpus, "cpu", [0])
    assert jobs and all(r.key["scale_embeddings"] is True for j in jobs for r in j.rows)
    off = ex.resolve("micro", ["model.scale_embeddings=false"])
    assert not any(ex.job_model(off, p).scale_embeddings for p in ex.POSITIONS)
    off_jobs = ex.plan_jobs(off, "micro", corpus, "cpu", [0])
    assert all(r.key["scale_embeddings"] is False for j in off_jobs for r in j.rows)
    assert ex.config_id(off, corpus) != ex.config_id(cfg, corpus)


def test_ablate_run_makes_its_plan_once_and_takes_old_task_ids(tmp_path, monkeypatch, capsys):
    from ablate.cli import main
    from ablate.suites.extrapolation import suite

    calls = []
    real = suite.training_setup
    monkeypatch.setattr(suite, "training_setup", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with pytest.raises(SystemExit) as exc:  # the old id form of a task (rope-s0): now rope@s0
        main(["run", "-s", "extrapolation", "-p", "micro", "--device", "cpu", "--out", str(tmp_path),
              "--no-progress", "--task", "rope-s0", "--set", "train.steps=2"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert len(calls) == 1  # config, corpus and plan: once per run (the launcher's task list and the run share it)
    rows = read_rows(results_path(_opts(tmp_path)))
    assert rows and {(r["trained_position"], r["seed"]) for r in rows} == {("rope", 0)}
    assert all(r["status"] in ("ok", "unsupported") for r in rows)
