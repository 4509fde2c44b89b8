"""``ablate run --log-to``: live training curves and final metrics in TensorBoard, MLflow and W&B (offline, CPU,
the micro presets), read back with each tracker's own reader and compared with the rows; missing packages,
unknown trackers, Ctrl-C, a tracker that fails mid-run, and the launchers passing the option on."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import pytest
import torch

from ablate.store.results import read_rows
from tests.helpers import cli

ONE = "grid.only=original"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_training(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "run", "--suite", "training", "--preset", "micro", "--device", "cpu", "--set", ONE,
               "--out", str(out), "--no-progress", "--no-summary", *extra)


def tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(ev.step, ev.value) for ev in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tb_texts(logdir: Path) -> dict[str, str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"]}


def tb_run_dir(out: Path, suite: str, model: str) -> Path:
    (d,) = [Path(p) for p in glob.glob(str(out / "tb" / suite / "cpu-micro" / model / "*"))]
    return d


def approx_curve(xs, ys):
    return [(x, pytest.approx(y, rel=1e-6)) for x, y in zip(xs, ys)]  # event files hold float32


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard (a dev dependency)


def test_tensorboard_training_curves_are_the_rows_curves(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "tensorboard")
    assert code == 0, err
    (row,) = read_rows(out / "training" / "cpu-micro.jsonl")
    logdir = tb_run_dir(out, "training", "original-s0")
    assert logdir.name == row["run_id"]  # <out>/tb/<suite>/<device>-<preset>/<model>/<run_id>/
    got = tb_scalars(logdir)
    assert got["curve.train_loss"] == approx_curve(row["curve.step"], row["curve.train_loss"])
    assert got["curve.val_loss"] == approx_curve(row["curve.val_step"], row["curve.val_loss"])
    assert got["curve.tokens"] == approx_curve(row["curve.step"], row["curve.tokens"])
    assert [s for s, _ in got["curve.lr"]] == row["curve.step"]
    assert all(v > 0 for _, v in got["curve.tokens_per_s"])
    last = row["curve.step"][-1]  # the final metrics, at the last training step
    assert got["val_loss"] == [(last, pytest.approx(row["value"], rel=1e-6))]
    for c in ("val_ppl", "val_bpb", "tokens_per_s", "train_loss"):
        assert got[c] == [(last, pytest.approx(row[c], rel=1e-6))], c
    texts = tb_texts(logdir)
    assert "| config.model.d_model |" in texts["params/text_summary"]
    assert f"| seed | {row['seed']} |" in texts["params/text_summary"]
    assert f"| env.git_commit | {row['env.git_commit']} |" in texts["tags/text_summary"]
    assert texts["status/text_summary"] == "FINISHED"
    assert len((logdir / "rows.csv").read_text(encoding="utf-8").splitlines()) == 2

    # The same run without --log-to: the same training, the same curve; nothing under tb/
    plain = tmp_path / "plain"
    code, _, err = run_training(capsys, plain)
    assert code == 0, err
    (same,) = read_rows(plain / "training" / "cpu-micro.jsonl")
    for c in ("curve.train_loss", "curve.val_loss", "value", "row_key"):
        assert same[c] == row[c], c
    assert set(same) == set(row)
    assert not (plain / "tb").exists()


def test_tensorboard_extrapolation_ppl_by_length_and_checkpoint_replay(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    out = tmp_path / "out"
    args = ["run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu", "--set",
            "model.position=rope", "--out", str(out), "--no-progress", "--no-summary",
            "--log-to", "tensorboard"]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    rows = [r for r in read_rows(out / "extrapolation" / "cpu-micro.jsonl") if r["status"] == "ok"]
    assert rows and {r["trained_position"] for r in rows} == {"rope"}
    logdir = tb_run_dir(out, "extrapolation", "rope-s0")
    got = tb_scalars(logdir)
    assert sorted(got["ppl"]) == sorted((r["eval_len"], pytest.approx(r["value"], rel=1e-6)) for r in rows)
    curve = got["curve.train_loss"]
    assert curve and curve[-1][1] == pytest.approx(rows[0]["train_loss"], rel=1e-6)

    # Rows lost, checkpoint kept: the model is loaded, not retrained, and its stored curve is logged again
    (out / "extrapolation" / "cpu-micro.jsonl").unlink()
    import ablate.store.results

    monkeypatch.setattr(ablate.store.results, "_RUN_ID", None)  # a new `ablate run`: a new run id
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    runs = sorted(glob.glob(str(out / "tb" / "extrapolation" / "cpu-micro" / "rope-s0" / "*")))
    assert len(runs) == 2
    assert tb_scalars(Path(runs[1]))["curve.train_loss"] == curve


def test_ctrl_c_closes_the_tracker_run(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from ablate.suites import training

    real = training.run_point

    def interrupted(*a, on_log=None, **kw):
        def log(entry):
            on_log(entry)
            if entry["step"] >= 4:
                raise KeyboardInterrupt

        return real(*a, on_log=log, **kw)

    monkeypatch.setattr(training, "run_point", interrupted)
    try:  # MLflow too when it is installed: its run says KILLED
        import mlflow
    except ImportError:
        mlflow = None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "out"
    code, _, _ = run_training(capsys, out, "--log-to", "tensorboard" + (",mlflow" if mlflow else ""))
    assert code == 130
    logdir = tb_run_dir(out, "training", "original-s0")
    assert [s for s, _ in tb_scalars(logdir)["curve.train_loss"]] == [1, 4]
    assert tb_texts(logdir)["status/text_summary"] == "KILLED"
    if mlflow is not None:
        client = mlflow.tracking.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
        (run,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
        assert run.info.status == "KILLED"


def test_a_failing_tracker_warns_once_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from ablate.store import livelog

    def broken(self, step, values, axis=None):
        raise OSError("disk full")

    monkeypatch.setattr(livelog._TensorBoardSink, "scalars", broken)
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "tensorboard")
    assert code == 0, err
    assert err.count("--log-to tensorboard stopped logging (OSError: disk full); the run goes on") == 1
    (row,) = read_rows(out / "training" / "cpu-micro.jsonl")
    assert row["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# Refused before anything runs


@pytest.mark.parametrize("target,module", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_package_names_its_extra(tmp_path, capsys, monkeypatch, target, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", f"tensorboard,{target}" if target != "tensorboard"
                                else target)
    assert code == 2
    assert err.strip() == (f"ablate: error: --log-to {target} needs the {module} package: "
                           f"pip install 'ablate-bench[{target}]'")
    assert not out.exists()  # nothing ran, nothing was written


def test_unknown_tracker_and_a_suite_that_trains_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "neptune")
    assert code == 2 and "--log-to 'neptune': unknown tracker; valid: wandb, mlflow, tensorboard" in err
    code, _, err = cli(capsys, "run", "--suite", "latency", "--preset", "micro", "--device", "cpu", "--out", str(out),
                       "--log-to", "tensorboard")
    assert code == 2 and "the latency suite trains none" in err and "ablate export" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_parse_targets_repeatable_and_comma_lists():
    pytest.importorskip("tensorboard")
    from ablate.store.livelog import parse_targets

    assert parse_targets(["tensorboard", " TensorBoard ,tensorboard"], "training") == ("tensorboard",)
    assert parse_targets(None, "latency") == () and parse_targets([], "training") == ()


# ---------------------------------------------------------------------------------------------------------------
# Launchers: the option reaches every worker; the plan does not depend on it


def test_launchers_pass_log_to_on(tmp_path):
    from ablate.launchers import launch
    from ablate.plan.runner import RunOptions

    base = RunOptions(suite="training", preset="micro", out=tmp_path, device="cpu")
    opts = RunOptions(suite="training", preset="micro", out=tmp_path, device="cpu", log_to=("tensorboard", "mlflow"))
    assert "log_to" not in launch.spec_opts(base)
    assert RunOptions(**launch.spec_opts(opts)).log_to == opts.log_to  # what run_task rebuilds (gpus, slurm)
    assert launch.plan_fields(opts) == launch.plan_fields(base)  # same sweep, same plan id: resume unaffected
    args = launch._cli_args(opts)  # the torchrun ranks' command line
    assert args[args.index("--log-to") + 1] == "tensorboard" and args.count("--log-to") == 2


# ---------------------------------------------------------------------------------------------------------------
# MLflow and W&B (optional extras: skipped when not installed)


def test_mlflow_file_store_under_out(tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow >= 3.7: the file store opt-in is ablate's
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "mlflow")
    assert code == 0, err
    (row,) = read_rows(out / "training" / "cpu-micro.jsonl")
    client = mlflow.tracking.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("ablate")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "training-original-s0" and run.info.status == "FINISHED"
    assert run.data.params["config.model.d_model"] == str(row["config.model.d_model"])
    assert run.data.params["run_id"] == row["run_id"] and run.data.params["point"] == "original"
    assert run.data.tags["env.git_commit"] == str(row["env.git_commit"])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve.train_loss"))
    assert history == approx_curve(row["curve.step"], row["curve.train_loss"])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "curve.val_loss"))
    assert history == approx_curve(row["curve.val_step"], row["curve.val_loss"])
    assert run.data.metrics["val_loss"] == pytest.approx(row["value"])
    local = client.download_artifacts(run.info.run_id, "rows.csv", str(tmp_path))
    assert len(Path(local).read_text(encoding="utf-8").splitlines()) == 2


def test_wandb_offline(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    from tests.io.test_export import wandb_run  # the reader of W&B's run file

    for k, v in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_DISABLE_GIT", "true")):
        monkeypatch.setenv(k, v)
    for k in ("WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(k, raising=False)
    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "wandb")
    assert code == 0, err
    (row,) = read_rows(out / "training" / "cpu-micro.jsonl")
    (path,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    got = wandb_run(Path(path))
    name, project, exit_code, config = got["name"], got["project"], got["exit_code"], got["config"]
    history: dict[str, list[tuple[int, float]]] = {}
    for k, step, v in got["history"]:
        history.setdefault(k, []).append((step, v))
    assert (name, project, exit_code) == ("training-original-s0", "ablate", 0)
    assert config["config.model.d_model"] == str(row["config.model.d_model"])
    assert config["env.git_commit"] == str(row["env.git_commit"])
    assert history["curve.train_loss"] == approx_curve(row["curve.step"], row["curve.train_loss"])
    assert history["curve.val_loss"] == approx_curve(row["curve.val_step"], row["curve.val_loss"])
    assert history["val_loss"] == [(row["curve.step"][-1], pytest.approx(row["value"]))]


def test_tensorboard_live_log_writes_hparams_sessions(tmp_path, capsys):
    """--log-to tensorboard also fills TensorBoard's HParams tab: one session per row (no experiment summary, so the
    sessions of every model and run under --logdir compare in one table), answered by the plugin's own backend."""
    pytest.importorskip("tensorboard")
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    out = tmp_path / "out"
    code, _, err = run_training(capsys, out, "--log-to", "tensorboard")
    assert code == 0, err
    (row,) = read_rows(out / "training" / "cpu-micro.jsonl")
    logdir = out / "tb"
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    backend, ctx = backend_context.Context(tb), context.RequestContext()
    req = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000, include_metrics=True,
                                           allowed_statuses=list(api_pb2.Status.values()))
    (group,) = list_session_groups.Handler(ctx, backend, "", req).run().session_groups
    assert group.hparams["seed"].number_value == row["seed"]
    assert group.hparams["config.model.d_model"].number_value == row["config.model.d_model"]
    got = {mv.name.tag: mv.value for mv in group.metric_values}
    assert got[row["metric"]] == pytest.approx(row["value"], rel=1e-6)
