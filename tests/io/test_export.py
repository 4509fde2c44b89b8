"""`ablate export`: CSV / Parquet round trips, and the trackers read back offline (TensorBoard event files, an MLflow
file store, W&B offline mode), each compared with the rows; a missing package or bad input is one line, exit 2,
nothing written. Rows come from the committed results (a few of each suite, copied as stored)."""

from __future__ import annotations

import glob
import json
import math
import struct
import sys
from pathlib import Path

import pytest

from ablate.io.export import select_rows
from ablate.io.frames import flat_frame
from ablate.io.tracker_runs import STEP_AXES, tracker_runs
from ablate.io.trackers import safe_name
from ablate.store.results import read_rows
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], err


def _pick(path: Path, keep) -> list[str]:  # noqa: ANN001
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and keep(json.loads(line))]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A folder with a few committed rows of each suite: training (2 points x 3 seeds, with loss curves), latency
    (sdpa kernels, decode, and rows without a number), extrapolation (perplexity of two positions)."""
    files = {
        "training": _pick(RESULTS / "training" / "cpu-tiny.jsonl", lambda r: r["point"] in ("original", "modern")),
        "latency": _pick(RESULTS / "latency" / "cpu.jsonl",
                         lambda r: r.get("attention") == "sdpa" and r["part"] in ("kernel", "decode")
                         or r["status"] == "unavailable"),
        "extrapolation": _pick(RESULTS / "extrapolation" / "cpu-tiny.jsonl",
                               lambda r: r["metric"] == "ppl" and r["position"] in ("rope", "alibi")),
    }
    folder = tmp_path_factory.mktemp("results")
    for suite, lines in files.items():
        assert lines, suite
        (folder / f"{suite}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _same(stored, read) -> bool:  # noqa: ANN001
    """A stored JSON value and what a file gave back for it."""
    if hasattr(read, "tz_convert"):  # a datetime (Parquet's timestamp column): the stored ISO text, parsed
        return read == __import__("pandas").Timestamp(stored)
    if stored is None:
        return read is None or (isinstance(read, float) and math.isnan(read)) or read is getattr(
            __import__("pandas"), "NA")
    if isinstance(stored, (list, dict)):
        if isinstance(read, str):
            read = json.loads(read)
        if hasattr(read, "tolist"):
            read = read.tolist()
        return json.dumps(stored, sort_keys=True) == json.dumps(_plain(read), sort_keys=True) or (
            isinstance(stored, list) and len(stored) == len(read) and all(_same(a, b) for a, b in zip(stored, read)))
    if isinstance(stored, bool):
        return bool(read) == stored and not isinstance(read, str)
    if isinstance(stored, (int, float)):
        return not isinstance(read, str) and math.isclose(float(read), float(stored), rel_tol=1e-12, abs_tol=0)
    return read == stored


def _plain(v):  # noqa: ANN001
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _check_round_trip(rows: list[dict], df, *, csv: bool = False) -> None:  # noqa: ANN001
    cols = list(dict.fromkeys(c for r in rows for c in r))
    assert list(df.columns) == cols
    assert len(df) == len(rows)
    for i, r in enumerate(rows):
        got = df.iloc[i]
        for c in cols:
            stored = None if csv and r.get(c) == "" else r.get(c)  # CSV: empty text and no value look the same
            assert _same(stored, got[c]), (i, c, r.get(c), got[c])


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_csv_round_trip(results, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "rows.csv"
    code, stdout, err = cli(capsys, "export", str(results), "--to", "csv", "--out", str(out))
    assert code == 0, err
    rows = read_rows(results)
    assert f"{len(rows)} rows" in stdout and str(out) in stdout
    df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    _check_round_trip(rows, df, csv=True)
    assert json.loads(df["key_fields"][0]) == rows[0]["key_fields"]  # lists are JSON text
    training = [i for i, r in enumerate(rows) if r["suite"] == "training"]
    assert json.loads(df["curve.val_loss"][training[0]]) == rows[training[0]]["curve.val_loss"]


def test_parquet_round_trip(results, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pandas as pd

    out = tmp_path / "sub" / "rows.parquet"
    code, stdout, err = cli(capsys, "export", str(results), "--to", "parquet", "--out", str(out))
    assert code == 0, err
    rows = read_rows(results)
    df = pd.read_parquet(out)
    _check_round_trip(rows, df)
    i = next(i for i, r in enumerate(rows) if r["suite"] == "training")
    assert list(df["curve.val_loss"][i]) == pytest.approx(rows[i]["curve.val_loss"])  # a native list column
    assert list(df["key_fields"][i]) == rows[i]["key_fields"]
    assert isinstance(df["grid_points"][i], str)  # lists of records: JSON text
    import pyarrow.parquet as pq

    schema = pq.read_schema(out)  # integers stay integers (with nulls where a suite has no such column)
    assert str(schema.field("seed").type) == "int64" and str(schema.field("val_loss").type) == "double"
    assert str(schema.field("curve.val_loss").type).startswith("list<") and "double" in str(
        schema.field("curve.val_loss").type)


def test_default_out_is_the_results_name_in_the_current_folder(results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "export", str(results / "training.jsonl"), "--to", "csv")
    assert code == 0, err
    assert (tmp_path / "training.csv").is_file() and not (results / "training.csv").exists()


def test_newest_row_per_measurement_unless_all_rows(results, tmp_path, capsys):
    """A re-measured row replaces the older one, as in the reports; --all-rows keeps both."""
    import pandas as pd

    lines = (results / "training.jsonl").read_text(encoding="utf-8").splitlines()
    newer = json.loads(lines[0])
    newer["timestamp"] = "2099-01-01T00:00:00.000000Z"
    newer["val_loss"] = 9.5
    src = tmp_path / "training.jsonl"
    src.write_text("\n".join(lines + [json.dumps(newer)]) + "\n", encoding="utf-8")
    assert [r["val_loss"] for r in select_rows([src]) if r["row_key"] == newer["row_key"]] == [9.5]
    code, _, err = cli(capsys, "export", str(src), "--to", "csv", "--out", str(tmp_path / "latest.csv"))
    assert code == 0, err
    df = pd.read_csv(tmp_path / "latest.csv")
    assert len(df) == len(lines) and (df["row_key"] == newer["row_key"]).sum() == 1
    assert df.loc[df["row_key"] == newer["row_key"], "val_loss"].item() == 9.5
    code, _, err = cli(capsys, "export", str(src), "--to", "csv", "--all-rows", "--out", str(tmp_path / "all.csv"))
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "all.csv")) == len(lines) + 1


def test_flat_frame_types_mixed_columns_as_text():
    rows = [{"a": 1, "b": "x", "c": [1, "a"], "d": True}, {"a": 2.5, "b": 3, "c": None, "d": None}]
    df = flat_frame(rows, native_lists=True)
    assert list(df["a"]) == [1.0, 2.5]
    assert list(df["b"]) == ["x", "3"] and df["c"][0] == '[1,"a"]' and df["c"][1] is None
    assert str(df["d"].dtype) == "boolean"


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_unknown_target_missing_results_and_bad_out(results, tmp_path, capsys):
    out = tmp_path / "x.csv"
    code, _, err = cli(capsys, "export", str(results), "--to", "xlsx", "--out", str(out))
    one_line_error(code, err, "--to")
    code, _, err = cli(capsys, "export", str(tmp_path / "missing.jsonl"), "--to", "csv", "--out", str(out))
    one_line_error(code, err, "missing.jsonl", "does not exist")
    code, _, err = cli(capsys, "export", str(results), "--to", "csv", "--out", str(tmp_path))
    one_line_error(code, err, "is a folder")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, _, err = cli(capsys, "export", str(empty), "--to", "csv", "--out", str(out))
    one_line_error(code, err, "no result rows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


@pytest.mark.parametrize("target,module,extra", [("parquet", "pyarrow", "parquet"), ("wandb", "wandb", "wandb"),
                                                 ("mlflow", "mlflow", "mlflow"),
                                                 ("tensorboard", "tensorboard", "tensorboard")])
def test_a_missing_package_names_its_extra(results, tmp_path, capsys, monkeypatch, target, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / f"out.{target}"
    code, _, err = cli(capsys, "export", str(results), "--to", target, "--out", str(out))
    one_line_error(code, err, f"pip install 'ablate-bench[{extra}]'")
    assert not any(tmp_path.iterdir())


def test_invalid_rows_fail_unless_skipped(results, tmp_path, capsys):
    import pandas as pd

    src = tmp_path / "training.jsonl"
    src.write_text((results / "training.jsonl").read_text(encoding="utf-8") + '{"suite": "training"}\n',
                   encoding="utf-8")
    n = len(read_rows(results / "training.jsonl"))
    out = tmp_path / "t.csv"
    code, _, err = cli(capsys, "export", str(src), "--to", "csv", "--out", str(out))
    one_line_error(code, err, f"{src}:{n + 1}", "--skip-invalid")
    assert not out.exists()
    code, _, err = cli(capsys, "export", str(src), "--to", "csv", "--out", str(out), "--skip-invalid")
    assert code == 0 and "skipped 1 invalid row" in err
    assert len(pd.read_csv(out)) == n


# ---------------------------------------------------------------------------------------------------------------
# Trackers: what is logged


def test_tracker_runs_log_every_measured_value_once(results):
    rows = read_rows(results)
    runs = tracker_runs(rows)
    assert {(r.suite, r.run_id) for r in runs} == {(r["suite"], r["run_id"]) for r in rows}
    for run in runs:
        tags = [(t, s) for t, s, _ in run.scalars]
        assert len(tags) == len(set(tags))
        assert all(t == safe_name(t) for t, _ in tags)
        assert run.params["suite"] == run.suite and run.params["run_id"] == run.run_id
        ok = [r for r in run.rows if r["status"] == "ok"]
        values = {(t.split("/", 1)[0], s): [] for t, s, _ in run.scalars}
        for t, s, v in run.scalars:
            values[(t.split("/", 1)[0], s)].append(v)
        for r in ok:
            step = next((r[a] for a in STEP_AXES if a in r["key_fields"]), 0)
            if r.get("metric") and r.get("value") is not None:
                assert r["value"] in values[(r["metric"], step)], (r["metric"], step)
            if run.suite == "training":
                assert r["val_loss"] in values[("val_loss", 0)]
                assert r["curve.val_loss"][-1] in values[("curve.val_loss", r["curve.val_step"][-1])]
        if run.suite == "training":  # one series per point and seed
            assert len({t for t, _, _ in run.scalars if t.startswith("curve.val_loss/")}) == len(ok)
            many_seeds = len({r.get("seed") for r in ok}) > 1  # the seed is in the label only then
            if any(r.get("point") == "modern" and r.get("seed") == 0 for r in ok):
                assert ("curve.val_loss/point-modern" + (" seed-0" if many_seeds else "")) in {
                    t for t, _, _ in run.scalars}
        seed0 = [r for r in ok if r.get("position") == "rope" and r.get("seed") == 0 and r.get("metric") == "ppl"]
        if run.suite == "extrapolation" and seed0:  # perplexity against evaluation length, per position and seed
            # the seed is in the label only where the run holds several seeds
            tag = "ppl/position-rope seed-0" if len({r.get("seed") for r in ok}) > 1 else "ppl/position-rope"
            steps = {s for t, s, _ in run.scalars if t == tag}
            assert steps == {r["eval_len"] for r in seed0}
        if run.suite == "latency":  # every row shares the sdpa kernel: not in the labels
            assert not any("attention-" in t for t, _, _ in run.scalars)
            assert run.params["device"] == "cpu" and "env.torch" in run.params


# ---------------------------------------------------------------------------------------------------------------
# Trackers: read back


def test_tensorboard_event_files_read_back(results, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    code, stdout, err = cli(capsys, "export", str(results), "--to", "tensorboard", "--out", str(out))
    assert code == 0, err
    assert f"tensorboard --logdir {out}" in stdout
    runs = tracker_runs(read_rows(results))
    assert sorted(p.name for p in out.iterdir()) == sorted([r.name for r in runs] + ["hparams"])  # + HParams
    for run in runs:
        acc = EventAccumulator(str(out / run.name), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        got = {}
        for tag in acc.Tags()["scalars"]:
            for ev in acc.Scalars(tag):
                got[(tag, ev.step)] = ev.value
        want = {(t, s): v for t, s, v in run.scalars}
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-6), k  # event files hold float32
        for r in run.rows:  # and straight from the rows
            if r["status"] == "ok" and r.get("metric") and r.get("value") is not None:
                step = next((r[a] for a in STEP_AXES if a in r["key_fields"]), 0)
                assert any(t.startswith(r["metric"] + "/") and s == step and v == pytest.approx(r["value"], rel=1e-6)
                           for (t, s), v in got.items())
        assert len((out / run.name / "rows.csv").read_text(encoding="utf-8").splitlines()) > len(run.rows)


def test_mlflow_file_store_read_back(results, tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    code, _, err = cli(capsys, "export", str(results), "--to", "mlflow", "--out", str(store), "--project", "abl")
    assert code == 0, err
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("abl")
    found = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    runs = tracker_runs(read_rows(results), [str(results)])  # as export names the inputs
    assert set(found) == {r.name for r in runs}
    for run in runs:
        got = found[run.name]
        assert got.info.status == "FINISHED"
        assert got.data.params == run.params
        for tag in {t for t, _, _ in run.scalars}:
            history = {(m.step, m.value) for m in client.get_metric_history(got.info.run_id, tag)}
            assert history == {(s, v) for t, s, v in run.scalars if t == tag}, tag
        local = client.download_artifacts(got.info.run_id, "rows.csv", str(tmp_path / run.name))
        assert len(Path(local).read_text(encoding="utf-8").splitlines()) > len(run.rows)


def wandb_run(path: Path) -> dict:
    """What a W&B offline run file holds: ``name``, ``project``, ``exit_code``, ``config`` (key -> value) and
    ``history``, the logged numbers as ``(key, step, value)`` in order (W&B's own ``_*`` keys and the rows table
    left out)."""
    out: dict = {"name": None, "project": None, "exit_code": None, "config": {}, "history": []}
    for rec in _wandb_records(Path(path)):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["project"] = rec.run.display_name, rec.run.project
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            for k, v in items.items():
                if not k.startswith(("_", "rows")) and isinstance(v, (int, float)):  # rows*: the table
                    out["history"].append((k, items["_step"], v))
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def _wandb_records(path: Path):
    """The records of a W&B run file (``run-*.wandb``: a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    buf = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", buf[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending = 7, b""
    while pos + header <= len(buf):
        left = block - pos % block
        if left < header:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", buf[pos:pos + header])
        pos += header
        if kind == 0 and n == 0:
            pos += left - header
            continue
        data, pos = buf[pos:pos + n], pos + n
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending + data)
            pending = b""
            yield rec
        else:
            pending += data


def test_wandb_offline_read_back(results, tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    out = tmp_path / "wb"
    code, _, err = cli(capsys, "export", str(results / "training.jsonl"), "--to", "wandb", "--out", str(out),
                       "--project", "abl")
    assert code == 0, err
    (run,) = tracker_runs(read_rows(results / "training.jsonl"), [str(results / "training.jsonl")])
    (path,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    got = wandb_run(Path(path))
    name, project, config = got["name"], got["project"], got["config"]
    history = {(k, s): v for k, s, v in got["history"]}
    assert (name, project) == (run.name, "abl")
    assert {k: v for k, v in config.items() if k in run.params} == run.params
    assert history == {(t, s): pytest.approx(v) for t, s, v in run.scalars}
    (table,) = glob.glob(str(out / "wandb" / "offline-run-*" / "files" / "media" / "table" / "rows_*.table.json"))
    data = json.loads(Path(table).read_text(encoding="utf-8"))
    assert len(data["data"]) == len(run.rows) and data["columns"][:3] == list(run.rows[0])[:3]


def test_a_key_field_only_some_rows_have_tells_them_apart():
    """A fine-tuned row keys finetune_steps, its plain twin does not: the labels must differ (no row-key fallback)."""
    from ablate.io.tracker_runs import scalar_labels

    base = {"key_fields": ["position", "eval_len"], "position": "rope_pi", "eval_len": 64}
    tuned = {**base, "key_fields": ["position", "eval_len", "finetune_steps"], "finetune_steps": 40}
    a, b = scalar_labels([base, tuned], skip=())
    assert a != b and "finetune_steps=40" in b
