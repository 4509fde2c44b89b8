"""`ablate export` keeps types: Parquet read back by pandas with integer, boolean and UTC datetime dtypes; TensorBoard's
HParams dashboard with one session per row, typed hyperparameters and the row's numbers as metrics, read back from
the event files (and through the HParams plugin's own backend where it loads)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ablate.io.tb_hparams import HPARAMS_DIR, hparams_table
from ablate.io.tracker_runs import LABEL_SKIP
from ablate.store.results import read_rows
from ablate.store.schema import NUMBER_COLUMNS
from tests.helpers import cli
from tests.io.test_export import results  # noqa: F401 -- the fixture: a few committed rows of each suite


# ---------------------------------------------------------------------------------------------------------------
# Parquet


def test_parquet_keeps_ints_bools_and_utc_times(results, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("pyarrow")
    import pandas as pd
    import pyarrow.parquet as pq

    out = tmp_path / "rows.parquet"
    code, _, err = cli(capsys, "export", str(results), "--to", "parquet", "--out", str(out))
    assert code == 0, err
    rows = read_rows(results)
    df = pd.read_parquet(out)
    # seed: an integer every training / extrapolation row has and no latency row has -> nullable Int64
    assert any("seed" not in r for r in rows) and str(df["seed"].dtype) == "Int64"
    assert str(df["eval_len"].dtype) == "Int64" and str(df["config.model.d_model"].dtype) == "Int64"
    for i, r in enumerate(rows):
        assert (df["seed"][i] is pd.NA) if "seed" not in r else (df["seed"][i] == r["seed"] and isinstance(
            df["seed"][i], (int, __import__("numpy").integer)))
    assert str(df["causal"].dtype) == "boolean" and str(df["config.model.causal"].dtype) == "boolean"
    assert [None if v is pd.NA else bool(v) for v in df["causal"]] == [r.get("causal") for r in rows]
    assert str(df["value"].dtype) == "Float64"
    ts = df["timestamp"]
    assert isinstance(ts.dtype, pd.DatetimeTZDtype) and str(ts.dtype.tz) == "UTC"
    assert list(ts) == [pd.Timestamp(r["timestamp"]) for r in rows]
    assert ts[0].microsecond == pd.Timestamp(rows[0]["timestamp"]).microsecond  # no precision lost
    schema = pq.read_schema(out)  # what Polars / DuckDB see (no pandas metadata needed)
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("seed").type) == "int64" and str(schema.field("causal").type) == "bool"
    # the check can fail: without pandas' metadata an integer column with a gap comes back as float64
    plain = pq.read_table(out).replace_schema_metadata(None).to_pandas()
    assert str(plain["seed"].dtype) == "float64"


def test_a_timestamp_that_is_not_iso_is_one_line(results, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("pyarrow")
    line = (results / "training.jsonl").read_text(encoding="utf-8").splitlines()[0]
    bad = json.loads(line)
    bad["timestamp"] = "yesterday"
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(bad) + "\n", encoding="utf-8")
    out = tmp_path / "x.parquet"
    code, _, err = cli(capsys, "export", str(src), "--to", "parquet", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'yesterday' is not an ISO 8601 time" in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard HParams


def _event_dirs(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def test_hparams_table_types_every_hyperparameter():
    rows = [
        {"suite": "training", "status": "ok", "run_id": "r1", "row_key": "a" * 16, "key_fields": ["point", "seed"],
         "point": "p", "seed": 0, "metric": "val_loss", "value": 2.5, "unit": "nats/token", "val_ppl": 12.0,
         "config.model.causal": True, "config.train.lr": 0.003, "config.train.betas": [0.9, 0.95],
         "config.model.window": None, "config.x": 1},
        {"suite": "training", "status": "oom", "run_id": "r1", "row_key": "b" * 16, "key_fields": ["point", "seed"],
         "point": "q", "seed": 1, "metric": "val_loss", "value": None, "unit": "nats/token",
         "config.model.causal": False, "config.train.lr": 0.001, "config.train.betas": [0.9, 0.99],
         "config.model.window": 16, "config.x": "one"},
    ]
    t = hparams_table(rows)
    hp = {h.name: h for h in t.hparams}
    assert (hp["seed"].kind, hp["seed"].integer, hp["seed"].domain, hp["seed"].differs) == ("number", True, [0, 1],
                                                                                             True)
    assert hp["point"].kind == "str" and hp["point"].domain == ["p", "q"]
    assert hp["config.model.causal"].kind == "bool" and hp["config.model.causal"].domain == [False, True]
    assert hp["config.train.lr"].kind == "number" and not hp["config.train.lr"].integer
    assert hp["config.train.betas"].kind == "str" and hp["config.train.betas"].domain == ["[0.9,0.95]", "[0.9,0.99]"]
    assert hp["config.x"].kind == "str" and hp["config.x"].domain == ["1", "one"]  # mixed types: text throughout
    assert hp["suite"].differs is False and hp["status"].domain == ["ok", "oom"]
    s0, s1 = t.sessions
    assert s0.hparams["seed"] == 0 and s0.hparams["config.model.causal"] is True and "config.model.window" not in \
        s0.hparams and s1.hparams["config.model.window"] == 16
    assert s0.metrics == {"val_loss": 2.5, "val_ppl": 12.0} and s1.metrics == {}  # an oom row measured nothing
    assert t.metrics == {"val_loss": "nats/token", "val_ppl": ""}
    assert s0.name == "training-r1/point-p" and s1.name == "training-r1/point-q"
    # a re-measured row (--all-rows) shares every key field with the first: the sessions are numbered, not merged
    again = hparams_table(rows + [dict(rows[0], value=2.4)]).sessions
    assert [s.name for s in again] == ["training-r1/point-p #1", "training-r1/point-q", "training-r1/point-p #2"]


def test_tensorboard_hparams_one_session_per_row(results, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("tensorboard")
    from tensorboard.plugins.hparams import api_pb2, metadata

    out = tmp_path / "tb"
    code, stdout, err = cli(capsys, "export", str(results), "--to", "tensorboard", "--out", str(out))
    assert code == 0, err
    rows = read_rows(results)
    assert f"{len(rows)} HParams session(s), one per row" in stdout
    root = out / HPARAMS_DIR
    # the experiment: every hyperparameter typed, every metric named
    acc = _accumulator(root)
    exp = metadata.parse_experiment_plugin_data(acc.PluginTagToContent("hparams")[metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in exp.hparam_infos}
    typ = api_pb2.DataType.Value
    assert infos["seed"].type == typ("DATA_TYPE_FLOAT64") and infos["seed"].differs
    assert [v.number_value for v in infos["seed"].domain_discrete.values] == sorted(
        {r["seed"] for r in rows if "seed" in r})
    assert infos["position"].type == typ("DATA_TYPE_STRING") and infos["causal"].type == typ("DATA_TYPE_BOOL")
    assert infos["config.model.d_model"].type == typ("DATA_TYPE_FLOAT64")
    assert infos["config.model.causal"].type == typ("DATA_TYPE_BOOL")
    assert infos["config.train.betas"].type == typ("DATA_TYPE_STRING")
    metric_names = {m.name.tag for m in exp.metric_infos}
    assert {"val_loss", "ppl", "time_ms"} <= metric_names
    # one session per row: its values typed as the row holds them, its numbers as scalars
    sessions = [d for d in _event_dirs(root) if d != root]
    assert len(sessions) == len(rows)
    by_key = {r["row_key"]: r for r in rows}
    table = {s.name: s for s in hparams_table(rows).sessions}
    seen = set()
    for d in sessions:
        acc = _accumulator(d)
        content = acc.PluginTagToContent("hparams")
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        r = by_key[table[d.relative_to(root).as_posix()].row_key]
        seen.add(r["row_key"])
        hp = start.hparams
        assert hp["suite"].string_value == r["suite"] and hp["status"].string_value == r["status"]
        for k in r["key_fields"]:
            v = r[k]
            if k in LABEL_SKIP or v is None:  # identifiers beside the keys; a missing value: an empty cell
                assert k not in hp, k
            elif isinstance(v, bool):
                assert hp[k].WhichOneof("kind") == "bool_value" and hp[k].bool_value is v, k
            elif isinstance(v, (int, float)):
                assert hp[k].WhichOneof("kind") == "number_value" and hp[k].number_value == v, k
            else:
                assert hp[k].string_value == str(v), k
        if "config.model.n_layers" in r:
            assert hp["config.model.n_layers"].number_value == r["config.model.n_layers"]
        want_status = "STATUS_SUCCESS" if r["status"] == "ok" else None
        if want_status:
            assert end.status == api_pb2.Status.Value(want_status)
        got = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
        if r["status"] != "ok":
            assert got == {}
            continue
        if r.get("metric") and r.get("value") is not None:
            assert got[r["metric"]] == pytest.approx(r["value"], rel=1e-6)
        for c in NUMBER_COLUMNS:
            v = r.get(c)
            if c != "value" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                assert got[c] == pytest.approx(v, rel=1e-6), c
    assert seen == set(by_key)


def _accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_the_hparams_dashboard_lists_one_session_group_per_row(results, tmp_path, capsys):  # noqa: F811
    """What TensorBoard's HParams tab asks its backend for (``experiment``, ``session_groups``), answered from the
    event files: every row a group, with its typed values and its metrics."""
    pytest.importorskip("tensorboard")
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    out = tmp_path / "tb"
    code, _, err = cli(capsys, "export", str(results), "--to", "tensorboard", "--out", str(out))
    assert code == 0, err
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(out))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(out), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(out)))
    backend, ctx = backend_context.Context(tb), context.RequestContext()
    exp = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest(include_metrics=True)).run()
    assert {"val_loss", "ppl", "time_ms"} <= {m.name.tag for m in exp.metric_infos}
    typ = {h.name: api_pb2.DataType.Name(h.type) for h in exp.hparam_infos}
    assert (typ["seed"], typ["position"], typ["causal"]) == ("DATA_TYPE_FLOAT64", "DATA_TYPE_STRING",
                                                             "DATA_TYPE_BOOL")
    req = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=10_000, include_metrics=True,
                                           allowed_statuses=list(api_pb2.Status.values()))
    groups = list_session_groups.Handler(ctx, backend, "", req).run().session_groups
    rows = read_rows(results)
    assert len(groups) == len(rows)
    by_name = {s.name: s for s in hparams_table(rows).sessions}
    keys = {r["row_key"]: r for r in rows}
    for g in groups:
        r = keys[by_name[g.name].row_key]
        if r["status"] == "ok" and r.get("metric") and r.get("value") is not None:
            got = {mv.name.tag: mv.value for mv in g.metric_values}
            assert got[r["metric"]] == pytest.approx(r["value"], rel=1e-6)
        if "seed" in r:
            assert g.hparams["seed"].number_value == r["seed"]
