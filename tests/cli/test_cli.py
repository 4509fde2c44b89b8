"""The command line: output formats, one-line errors with exit 2, and the suite contract behind `run`/`report`."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ablate import __version__
from ablate.plan import runner
from ablate.cli import AXES
from ablate.errors import ConfigError, UnavailableError
from ablate.store.results import append_row, make_row, read_rows
from ablate.plan.runner import RunOptions, resolve_device, run_suite
from tests.helpers import cli

ENTRY_KEYS = {"key", "available", "reason", "description", "paper"}


def assert_one_line_error(code: int, err: str, *needles: str, expect: int = 2) -> None:
    assert code == expect, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: "), err
    for n in needles:
        assert n in lines[0], err


def test_version(capsys):
    code, out, _ = cli(capsys, "version")
    assert code == 0 and out.strip() == f"ablate {__version__}"
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"ablate {__version__}"


def test_list_json_structure(capsys):
    code, out, _ = cli(capsys, "list", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert list(data)[:4] == list(AXES) and set(data) == set(AXES)
    for axis, entries in data.items():
        assert isinstance(entries, list)
        keys = [e["key"] for e in entries]
        assert len(keys) == len(set(keys))
        for e in entries:
            assert ENTRY_KEYS <= set(e)
            assert isinstance(e["key"], str) and e["key"]
            assert isinstance(e["available"], bool)
            assert isinstance(e["reason"], str) and isinstance(e["description"], str)
            assert isinstance(e["paper"], str)
            if not e["available"]:
                assert e["reason"], f"{axis} {e['key']} is unavailable without a reason"
    assert sum(len(v) for v in data.values()) > 0


def test_list_one_axis_and_table(capsys):
    code, out, _ = cli(capsys, "list", "--axis", "position", "--format", "json")
    assert code == 0 and list(json.loads(out)) == ["position"]
    code, out, _ = cli(capsys, "list", "--axis", "norms")  # plural accepted
    assert code == 0 and "norm" in out and "available" in out


def test_unknown_axis(capsys):
    code, _, err = cli(capsys, "list", "--axis", "mlp")
    assert_one_line_error(code, err, "unknown axis 'mlp'", "attention, position, norm, activation")


def test_bad_format_is_a_usage_error(capsys):
    code, _, err = cli(capsys, "list", "--format", "xml")
    assert_one_line_error(code, err, "--format")


def test_unknown_option_is_a_usage_error(capsys):
    code, _, err = cli(capsys, "run", "--suite", "latency", "--bogus")
    assert_one_line_error(code, err, "--bogus")


def test_unknown_suite(capsys):
    code, _, err = cli(capsys, "run", "--suite", "nope")
    assert_one_line_error(code, err, "unknown suite 'nope'; valid: training, extrapolation, latency")


def test_bad_set(capsys):
    code, _, err = cli(capsys, "run", "--suite", "latency", "--set", "novalue")
    assert_one_line_error(code, err, "'novalue'", "key=value")
    code, _, err = cli(capsys, "run", "--suite", "latency", "--set", "=3")
    assert_one_line_error(code, err, "key=value")


def test_bad_seeds_and_device(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "run", "--suite", "latency", "--seeds", "0")
    assert_one_line_error(code, err, "--seeds")
    code, _, err = cli(capsys, "run", "--suite", "latency", "--device", "tpu")
    assert_one_line_error(code, err, "unknown device 'tpu'")
    assert not list(tmp_path.iterdir()), "a refused command writes nothing (no results, no plan)"


def test_env_json(capsys):
    code, out, _ = cli(capsys, "env", "--format", "json")
    assert code == 0
    fp = json.loads(out)
    for key in ("python", "platform", "torch", "cuda", "gpu", "gpu_count", "git_commit", "ablate", "numpy"):
        assert key in fp
    assert fp["ablate"] == __version__
    code, out, _ = cli(capsys, "env")
    assert code == 0 and "python" in out


def test_console_entry_point_in_a_subprocess(tmp_path):
    """The real process: one line on stderr, exit 2, no traceback (python -m ablate.cli = console script)."""
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "run", "--suite", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "ablate: error: unknown suite 'nope'; valid: training, extrapolation, latency, recall\n"
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ablate {__version__}"


# ---------------------------------------------------------------------------------------------------------------
# The suite contract, with a fake suite module


@pytest.fixture
def fake_suite(monkeypatch):
    """Install ``ablate.suites.training`` as a fake whose run() writes rows; returns the calls it got."""
    calls: list[RunOptions] = []
    mod = types.ModuleType("ablate.suites.training")

    def run(opts: RunOptions) -> Path:
        calls.append(opts)
        path = runner.results_path(opts)
        append_row(path, make_row("training", "ok", {"point": "p", "seed": 0}, {"loss": 1.0}))
        append_row(path, make_row("training", "unavailable", {"point": "p", "seed": 1}, {}, reason="no GPU"))
        return path

    def report(rows, out_dir):
        from ablate.reporting.tables import write_table

        return list(write_table(rows[["seed", "status"]], Path(out_dir) / "training_table"))

    mod.run, mod.report = run, report
    monkeypatch.setitem(sys.modules, "ablate.suites.training", mod)
    return calls


def test_run_calls_the_suite(capsys, tmp_path, fake_suite):
    code, out, err = cli(capsys, "run", "--suite", "training", "--out", str(tmp_path), "--set", "steps=3",
                         "--set", "model.position=alibi", "--seeds", "2", "--no-resume", "--no-progress",
                         "--device", "cpu", "--preset", "tiny")
    assert code == 0, err
    (opts,) = fake_suite
    assert opts == RunOptions(suite="training", preset="tiny", overrides=("steps=3", "model.position=alibi"),
                              out=tmp_path, seeds=2, resume=False, data=None, device="cpu", progress=False,
                              summary_tables=False)
    assert f"results: {tmp_path / 'training' / 'cpu-tiny.jsonl'} (2 new rows" in out and "2 new rows" in out and "1 ok" in out and "1 unavailable" in out


def test_run_resolves_the_device(tmp_path, fake_suite):
    run_suite(RunOptions(suite="training", out=tmp_path))
    assert fake_suite[0].device in ("cpu", "cuda")
    assert fake_suite[0].device == resolve_device(None)


def test_run_with_error_rows_exits_1(capsys, tmp_path, monkeypatch):
    mod = types.ModuleType("ablate.suites.latency")

    def run(opts):
        path = runner.results_path(opts)
        append_row(path, make_row("latency", "error", {"part": "kernel", "i": 0}, {}, reason="boom"))
        return path

    mod.run = run
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", mod)
    code, out, err = cli(capsys, "run", "--suite", "latency", "--out", str(tmp_path))
    assert code == 1 and "1 error" in out and "status 'error'" in err


def test_interrupt_exits_130_with_one_line(capsys, tmp_path, monkeypatch):
    mod = types.ModuleType("ablate.suites.latency")

    def run(opts):
        raise KeyboardInterrupt

    mod.run = run
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", mod)
    code, _, err = cli(capsys, "run", "--suite", "latency", "--out", str(tmp_path))
    assert_one_line_error(code, err, "interrupted; finished rows are saved, re-run to resume", expect=130)


def test_ablate_error_from_a_suite_is_one_line(capsys, tmp_path, monkeypatch):
    mod = types.ModuleType("ablate.suites.latency")

    def run(opts):
        raise ConfigError("unknown setting 'stepz'; valid: steps, lr")

    mod.run = run
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", mod)
    code, _, err = cli(capsys, "run", "--suite", "latency", "--out", str(tmp_path), "--set", "stepz=1")
    assert_one_line_error(code, err, "unknown setting 'stepz'")


def test_suite_without_run_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", types.ModuleType("ablate.suites.latency"))
    with pytest.raises(UnavailableError, match="suite 'latency' is not implemented yet"):
        run_suite(RunOptions(suite="latency", out=tmp_path))


def test_missing_suite_module_is_unavailable(monkeypatch):
    def missing(name, *a, **k):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(runner.importlib, "import_module", missing)
    assert runner.load_suite("latency", "run") is None


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device cuda requested but no CUDA GPU is visible"):
            resolve_device("cuda")


def test_report_calls_suite_report_and_falls_back(capsys, tmp_path, fake_suite, monkeypatch):
    res = tmp_path / "res"
    append_row(res / "training.jsonl", make_row("training", "ok", {"point": "p", "seed": 0}, {"loss": 1.0}))
    append_row(res / "other.jsonl", make_row("latency", "ok", {"part": "kernel", "x": 1}, {"y": 2.0}))
    monkeypatch.setitem(sys.modules, "ablate.suites.latency", types.ModuleType("ablate.suites.latency"))
    code, out, err = cli(capsys, "report", str(res), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    assert (tmp_path / "rep" / "training_table.md").exists()
    assert (tmp_path / "rep" / "latency_status.md").exists()  # no report() for that suite: status counts
    assert "training: 2 file(s)" in out


def test_report_errors(capsys, tmp_path):
    code, _, err = cli(capsys, "report", str(tmp_path / "missing.jsonl"))
    assert_one_line_error(code, err, "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    code, _, err = cli(capsys, "report", str(bad), "--out", str(tmp_path / "rep"))
    assert_one_line_error(code, err, "line 2 is not valid JSON")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli(capsys, "report", str(empty), "--out", str(tmp_path / "rep"))
    assert_one_line_error(code, err, "no result rows")


def test_torn_line_warning_is_one_line(capsys, tmp_path, fake_suite):
    path = tmp_path / "training.jsonl"
    append_row(path, make_row("training", "ok", {"point": "p", "seed": 0}, {"loss": 1.0}))
    with open(path, "a") as fh:
        fh.write('{"suite": "trai')
    code, _, err = cli(capsys, "report", str(path), "--out", str(tmp_path / "rep"))
    assert code == 0
    assert err.strip().startswith("ablate: warning: ") and "incomplete" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(read_rows(path)) == 1


def test_list_table_shows_brackets_literally(capsys, monkeypatch):
    """Reasons like "pip install 'ablate-bench[flash]'" must not be eaten as rich markup."""
    import ablate.commands.views as cli_views
    from ablate.registry.keys import Registry

    reg = Registry("attention")
    reg.register("fake", description="uses [bold]x[/bold]", paper="[1]",
                 available=lambda device=None: (False, "pip install 'ablate-bench[flash]'"))(lambda *a, **k: None)
    monkeypatch.setattr(cli_views, "load_registries", lambda: ({"attention": reg}, []))
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli(capsys, "list", "--axis", "attention")
    assert code == 0
    assert "ablate-bench[flash]" in out and "[bold]x[/bold]" in out and "[1]" in out
