"""`ablate report`: per-suite delegation, index.md (env fingerprint, exact command, links), byte-identical output,
and the cross-run view when the results span several commits or machines."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from ablate.cli import main
from ablate.reporting.report import MARKER, build_report, report_command
from ablate.store.results import append_row, make_row

ENV = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1",
       "env.git_commit": "a" * 40, "env.git_dirty": False, "env.cpu": "AMD EPYC", "env.cuda": "12.4"}


@pytest.fixture
def fake_training(monkeypatch):
    """``ablate.suites.training`` as a fake whose report() writes one table and one suite index."""
    mod = types.ModuleType("ablate.suites.training")

    def report(rows, out_dir):
        from ablate.reporting.tables import write_table

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
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", types.ModuleType("ablate.suites.latency"))  # no report()
    res = write(tmp_path / "results" / "t.jsonl",
                [row("base", 2.0), row("alibi", 2.1),
                 make_row("latency", "ok", {"part": "kernel", "x": 1}, {"y": 2.0}, env=ENV)])
    rep = build_report([Path("results/t.jsonl")], Path("rep"))
    idx = (tmp_path / "rep" / "index.md").read_text()
    assert idx.startswith(MARKER)
    assert "ablate report results/t.jsonl --out rep" in idx  # the exact command, relative to the cwd
    assert "| `gpu` | NVIDIA H100 80GB HBM3 |" in idx and "| `git_commit` | " + "a" * 40 in idx
    assert "[training_index.md](training_index.md)" in idx  # the suite's own index, renamed next to ours
    assert "[md](training_table.md) · [tex](training_table.tex)" in idx
    assert "latency_status" in idx  # a suite without report(): status counts
    assert "`results/t.jsonl`" in idx and "3 ok" in idx
    assert set(rep.files) == {"training", "latency"} and not rep.cross_run
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


# ---------------------------------------------------------------------------------------------------------------
# Provenance: a line per run group, and a warning near the top for dirty trees and rows without a commit


def _index(tmp_path, rows, name="p", out="rep") -> str:
    write(tmp_path / "r" / f"{name}.jsonl", rows)
    build_report([Path("r")], Path(out), command="ablate report r --out X")
    return (tmp_path / out / "index.md").read_text()


def test_clean_rows_give_no_warning_and_a_provenance_line(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    idx = _index(tmp_path, [row("base", 2.0, env={**ENV, "env.git_source": "git"}), row("alibi", 2.1)])
    assert "Warning" not in idx
    assert ("- box1 (NVIDIA H100 80GB HBM3): commit `aaaaaaaaaa`, dirty: no, source: git (1 row), not recorded "
            "(1 row), 2 rows") in idx
    assert "| `git_source` | git |" in idx
    assert idx.index("Provenance") > idx.index("## Environment")


def test_dirty_rows_and_rows_without_commit_are_warned_about(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirty = {**ENV, "env.git_commit": "b" * 40, "env.git_dirty": True, "env.git_source": "env"}
    bare = {**ENV, "env.git_commit": None, "env.git_dirty": None, "env.git_source": None, "env.hostname": "gpu9"}
    unknown = {**ENV, "env.git_commit": "c" * 40, "env.git_dirty": None, "env.git_source": "env"}
    idx = _index(tmp_path, [row("base", 2.0, ts="2030-01-01T00:00:00.000000Z"),
                            row("base", 2.1, env=dirty, ts="2030-01-02T00:00:00.000000Z"),
                            row("alibi", 2.2, env=dirty, ts="2030-01-02T00:00:01.000000Z"),
                            row("base", 2.3, env=bare, ts="2030-01-03T00:00:00.000000Z"),
                            row("base", 2.4, env=unknown, ts="2030-01-04T00:00:00.000000Z")])
    top = idx[:idx.index("Regenerate this folder")]  # near the top: before anything else
    assert ("> **Warning:** 2 of 5 rows come from a dirty tree (commit `bbbbbbbbbb`): they may not be reproducible "
            "from a commit.") in top
    assert "> **Warning:** 1 of 5 rows have no recorded commit" in top
    assert "> **Warning:** 1 of 5 rows do not record whether their tree was dirty (commit `cccccccccc`)." in top
    lines = [ln for ln in idx.splitlines() if ln.startswith("- r")]
    assert lines == [
        "- r1 · box1 (NVIDIA H100 80GB HBM3): commit `aaaaaaaaaa`, dirty: no, source: not recorded, 1 row",
        "- r2 · box1 (NVIDIA H100 80GB HBM3): commit `bbbbbbbbbb`, dirty: **yes**, source: env, 2 rows",
        "- r3 · gpu9 (NVIDIA H100 80GB HBM3): commit **none recorded**, dirty: unknown, source: not recorded, 1 row",
        "- r4 · box1 (NVIDIA H100 80GB HBM3): commit `cccccccccc`, dirty: unknown, source: env, 1 row",
    ]


def test_mixed_dirty_rows_of_one_commit(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dirty = {**ENV, "env.git_dirty": True}
    idx = _index(tmp_path, [row("base", 2.0), row("alibi", 2.1, env=dirty), row("rope", 2.2, env=dirty)])
    assert "2 of 3 rows come from a dirty tree (commit `aaaaaaaaaa`)" in idx
    assert "commit `aaaaaaaaaa`, dirty: **yes (2 rows), no (1 row)**, source: not recorded, 3 rows" in idx
    assert "no recorded commit" not in idx


def test_provenance_index_is_byte_identical(tmp_path, fake_training, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [("b" * 40, True, "env", "box2"), (None, None, None, "box3"), ("a" * 40, False, "git", "box1"),
             ("c" * 40, True, "stamp", "box1"), ("b" * 40, False, "git", "box2")]
    envs = [{**ENV, "env.git_commit": c, "env.git_dirty": d, "env.git_source": s, "env.hostname": h}
            for c, d, s, h in cases]
    rows = [row(p, 2.0 + i, env=e, ts=f"2030-01-0{i + 1}T00:00:00.000000Z")
            for i, (p, e) in enumerate(zip(["base", "alibi", "rope", "base", "alibi"], envs))]
    first = _index(tmp_path, rows, out="o1")
    second = _index(tmp_path, [], out="o2")  # same inputs, another output folder
    assert first == second and texts(tmp_path / "o1") == texts(tmp_path / "o2")
    assert "2 of 5 rows come from a dirty tree (commits `bbbbbbbbbb`, `cccccccccc`)" in first
    assert "1 of 5 rows have no recorded commit" in first
    assert "dirty: **yes (1 row), no (1 row)**, source: git (1 row), env (1 row), 2 rows" in first
