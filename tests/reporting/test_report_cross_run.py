"""The cross-run view compares runs only on configurations they share (same configuration, same config id); runs
that share none are left out with a one-line note in the index, and no trend is drawn from them."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from ablate.reporting.cross_run import shared_runs
from ablate.reporting.report import build_report, cross_run_view, run_groups
from ablate.store.results import append_row, make_row

ENV = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1",
       "env.git_commit": "a" * 40, "env.git_dirty": False, "env.cpu": "AMD EPYC", "env.cuda": "12.4"}


@pytest.fixture
def fake_training(monkeypatch):
    mod = types.ModuleType("ablate.suites.training")
    mod.report = lambda rows, out_dir: []
    monkeypatch.setitem(sys.modules, "ablate.suites.training", mod)


def row(point: str, val_loss: float, commit: str, day: int, config_id: str = "c1"):
    r = make_row("training", "ok", {"point": point, "seed": 0, "device": "cuda", "config_id": config_id},
                 {"val_loss": val_loss}, env={**ENV, "env.git_commit": commit * 40})
    r["timestamp"] = f"2030-01-0{day}T00:00:00.000000Z"
    return r


def write(path: Path, rows) -> Path:
    for r in rows:
        append_row(path, r)
    return path


def test_shared_runs_shrink_to_the_configurations_every_run_measured():
    vals = {("r1", "A"): 1.0, ("r1", "B"): 1.0, ("r2", "A"): 1.0, ("r2", "B"): 1.0, ("r3", "B"): 1.0,
            ("r4", "C"): 1.0}
    assert shared_runs(vals, ["r1", "r2", "r3", "r4"]) == (["r1", "r2", "r3"], {"B"}, ["r4"])
    assert shared_runs({("r1", "A"): 1.0, ("r2", "B"): 1.0}, ["r1", "r2"]) == (["r1"], {"A"}, ["r2"])


def test_trend_only_on_shared_configurations(tmp_path):
    rows = [row("base", 2.0, "a", 1), row("alibi", 4.0, "a", 1),
            row("base", 2.2, "b", 2), row("alibi", 8.0, "b", 2, config_id="c2"),  # alibi: another config
            row("base", 9.0, "c", 3, config_id="c9")]  # shares nothing
    tables, notes = cross_run_view(rows, run_groups(rows))
    summary = tables["summary"].set_index("run")
    assert list(summary.index) == ["r1", "r2"]  # r3 is not compared
    assert summary.loc["r2", "geomean vs oldest"] == pytest.approx(1.1)  # base only: alibi's configs differ
    assert summary.loc["r2", "configurations"] == 1
    assert notes == ["training val_loss: r3 left out of the trend -- it shares no configuration with r1, r2."]


def test_no_shared_configuration_no_trend_and_a_note_in_the_index(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r" / "a.jsonl", [row("base", 2.0, "a", 1, config_id="c1")])
    write(tmp_path / "r" / "b.jsonl", [row("base", 2.2, "b", 2, config_id="c2")])
    rep = build_report([Path("r")], Path("out"))
    names = {p.name for p in rep.cross_run}
    assert "cross_run_runs.md" in names  # which runs there are: still listed
    assert not names & {"cross_run_summary.md", "cross_run_training_val_loss.md", "cross_run.png"}
    idx = (tmp_path / "out" / "index.md").read_text()
    note = ("- training val_loss: not compared across runs -- no configuration was measured by two runs (their "
            "configurations / config ids differ).")
    assert note in idx.splitlines()


def test_shared_configurations_draw_the_trend(tmp_path, fake_training, monkeypatch):
    from ablate.reporting.style import overlapping_texts

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r" / "a.jsonl", [row("base", 2.0, "a", 1), row("alibi", 4.0, "a", 1)])
    write(tmp_path / "r" / "b.jsonl", [row("base", 2.2, "b", 2), row("alibi", 4.4, "b", 2)])
    write(tmp_path / "r" / "c.jsonl", [row("other", 1.0, "c", 3, config_id="c3")])
    captured = {}
    import ablate.reporting.tables as tables

    real = tables.savefig

    def record(fig, stem, **kw):
        captured["fig"] = fig
        return real(fig, stem, close=False)

    monkeypatch.setattr(tables, "savefig", record)
    rep = build_report([Path("r")], Path("out"))
    assert {"cross_run.png", "cross_run_summary.md"} <= {p.name for p in rep.cross_run}
    idx = (tmp_path / "out" / "index.md").read_text()
    assert "- training val_loss: r3 left out of the trend -- it shares no configuration with r1, r2." in idx
    fig = captured["fig"]
    (line,) = [ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert list(line.get_ydata()) == pytest.approx([1.0, 1.1]) and "2 shared configurations" in line.get_label()
    assert not overlapping_texts(fig)
    import matplotlib.pyplot as plt

    plt.close(fig)
