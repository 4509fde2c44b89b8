"""`ablate report`: per-suite delegation, index.md (env fingerprint, exact command, links), byte-identical output,
and the cross-run view when the results span several commits or machines."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from ablate.cli import main
from ablate.report import MARKER, build_report, report_command
from ablate.results import append_row, make_row

ENV = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1",
       "env.git_commit": "a" * 40, "env.git_dirty": False, "env.cpu": "AMD EPYC", "env.cuda": "12.4"}


@pytest.fixture
def fake_training(monkeypatch):
    """``ablate.suites.training`` as a fake whose report() writes one table and one suite index."""
    mod = types.ModuleType("ablate.suites.training")

    def report(rows, out_dir):
        from ablate.tables import write_table

        out_dir = Path(out_dir)
        t = rows[["point", "seed", "val_loss"]].sort_values(["point", "seed"]).reset_index(drop=True)
        files = list(write_table(t, out_dir / "training_table", caption="val loss"))
        idx = out_dir / "index.md"
        if idx.exists() and not idx.read_text().startswith("<!-- ablate:training -->"):
            idx = out_dir / "training_index.md"
        idx.write_text("<!-- ablate:training -->\n# training\n")
        return files + [idx]

    mod.report = report
    monkeypatch.setitem(sys.modules, "ablate.suites.training", mod)


def row(point: str, val_loss: float, env=None, seed=0, ts=None):
    r = make_row("training", "ok", {"point": point, "seed": seed, "device": "cuda"}, {"val_loss": val_loss},
                 env=dict(ENV if env is None else env))
    if ts:
        r["timestamp"] = ts
    return r


def write(path: Path, rows) -> Path:
    for r in rows:
        append_row(path, r)
    return path


def texts(folder: Path, suffixes=(".md", ".tex")) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.suffix in suffixes}


def test_index_links_suites_with_env_and_command(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = write(tmp_path / "results" / "t.jsonl", [row("base", 2.0), row("alibi", 2.1),
                                                   make_row("mystery", "ok", {"x": 1}, {"y": 2.0}, env=ENV)])
    rep = build_report([Path("results/t.jsonl")], Path("rep"))
    idx = (tmp_path / "rep" / "index.md").read_text()
    assert idx.startswith(MARKER)
    assert "ablate report results/t.jsonl --out rep" in idx  # the exact command, relative to the cwd
    assert "| `gpu` | NVIDIA H100 80GB HBM3 |" in idx and "| `git_commit` | " + "a" * 40 in idx
    assert "[training_index.md](training_index.md)" in idx  # the suite's own index, renamed next to ours
    assert "[md](training_table.md) · [tex](training_table.tex)" in idx
    assert "mystery_status" in idx  # a suite without report(): status counts
    assert "`results/t.jsonl`" in idx and "3 ok" in idx
    assert set(rep.files) == {"training", "mystery"} and not rep.cross_run
    assert "Across runs" not in idx and not (tmp_path / "rep" / "cross_run_runs.md").exists()
    assert res.exists()


def test_same_input_gives_byte_identical_output(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    two = {**ENV, "env.git_commit": "b" * 40}
    write(tmp_path / "r" / "night1.jsonl", [row("base", 2.0, ts="2030-01-01T00:00:00.000000Z")])
    write(tmp_path / "r" / "night2.jsonl", [row("base", 2.2, env=two, ts="2030-01-02T00:00:00.000000Z")])
    build_report([Path("r")], Path("out1"), command="ablate report r --out X")
    build_report([Path("r")], Path("out2"), command="ablate report r --out X")
    a, b = texts(tmp_path / "out1"), texts(tmp_path / "out2")
    assert a == b and "index.md" in a and "cross_run_summary.md" in a
    figs = texts(tmp_path / "out1", (".png", ".svg"))
    assert figs == texts(tmp_path / "out2", (".png", ".svg")) and "cross_run.svg" in figs


def test_cross_run_view_across_commits_and_machines(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c2 = {**ENV, "env.git_commit": "b" * 40}
    m2 = {**ENV, "env.hostname": "box2", "env.gpu": "NVIDIA A100-SXM4-80GB"}
    write(tmp_path / "r" / "a.jsonl", [row("base", 2.0, ts="2030-01-01T00:00:00.000000Z"),
                                       row("alibi", 4.0, ts="2030-01-01T00:00:01.000000Z")])
    write(tmp_path / "r" / "b.jsonl", [row("base", 2.2, env=c2, ts="2030-01-02T00:00:00.000000Z"),
                                       row("alibi", 4.4, env=c2, ts="2030-01-02T00:00:01.000000Z")])
    write(tmp_path / "r" / "c.jsonl", [row("base", 1.0, env=m2, ts="2030-01-03T00:00:00.000000Z")])
    rep = build_report([Path("r")], Path("out"))
    names = {p.name for p in rep.cross_run}
    assert {"cross_run_runs.md", "cross_run_runs.tex", "cross_run_summary.md", "cross_run_training_val_loss.md",
            "cross_run.png", "cross_run.svg"} <= names
    runs = (tmp_path / "out" / "cross_run_runs.md").read_text()
    assert "r1" in runs and "r3" in runs and "aaaaaaaaaa" in runs and "box2 (NVIDIA A100-SXM4-80GB)" in runs
    summary = (tmp_path / "out" / "cross_run_summary.md").read_text()
    lines = {ln.split("|")[4].strip(): ln for ln in summary.splitlines()[2:] if ln.startswith("|")}
    assert "1.1" in lines["r2"].split("|")[6] and "0.5" in lines["r3"].split("|")[6]
    pivot = (tmp_path / "out" / "cross_run_training_val_loss.md").read_text()
    assert "point=alibi" in pivot and " r1 |" in pivot
    idx = (tmp_path / "out" / "index.md").read_text()
    assert "## Across runs" in idx and "3 commit(s)" not in idx and "2 commit(s) and 2 machine(s)" in idx
    assert "| env | r1 | r2 | r3 |" in idx  # the fingerprint per run


def test_cli_report_prints_index(capsys, tmp_path, fake_training):
    res = write(tmp_path / "t.jsonl", [row("base", 2.0)])
    with pytest.raises(SystemExit) as info:
        main(["report", str(res), "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "training: 3 file(s)" in out and f"index: {tmp_path / 'rep' / 'index.md'}" in out


def test_report_command_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert report_command([tmp_path / "results" / "a.jsonl"], tmp_path / "reports" / "a") == \
        "ablate report results/a.jsonl --out reports/a"
    assert report_command(["/elsewhere/x y.jsonl"], "out") == "ablate report '/elsewhere/x y.jsonl' --out out"
