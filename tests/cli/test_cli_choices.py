"""Choices on the command line (issue #16 item 4): shell completion lists the valid values, a bad value is one line
naming them (exit 2); one preset vocabulary (micro/tiny/gpu) in every suite, ``cpu`` a deprecated alias of latency's
``tiny``; ``ablate run`` ends with the summary tables ``ablate show`` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.plan import runner
from ablate.cli import app
from ablate.plan.runner import PRESETS, SUITES, RunOptions
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]


def complete(capsys, line: str) -> list[str]:
    """What bash completion offers for ``line`` (the word after its last space is the one being completed), through
    typer's own completion entry point: ``_ABLATE_COMPLETE=complete_bash COMP_WORDS=... COMP_CWORD=...``."""
    words = line.split(" ")
    code, out, err = cli(capsys, env={"_ABLATE_COMPLETE": "complete_bash", "COMP_WORDS": line,
                                      "COMP_CWORD": str(len(words) - 1)})
    assert code == 0, err
    return out.split()


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    monkeypatch.setattr(runner, "_NOTED", set())  # every test sees the once-per-process notes


# ---------------------------------------------------------------------------------------------------------------
# completion


@pytest.mark.parametrize("line, expected", [
    ("ablate run --suite ", ["training", "extrapolation", "latency", "recall"]),
    ("ablate run --suite l", ["latency"]),
    ("ablate run --suite latency --preset ", list(runner.suite_presets("latency"))),
    ("ablate run --suite training --preset ", list(runner.suite_presets("training"))),
    ("ablate run --preset m", ["micro"]),
    ("ablate run -s training -p t", ["tiny"]),
    ("ablate run --device ", ["auto", "cpu", "cuda"]),
    ("ablate run --launcher ", ["local", "gpus", "slurm"]),
    ("ablate run --slurm-cluster ", ["slurm", "local"]),
    ("ablate export r.jsonl --to ", ["parquet", "csv", "wandb", "mlflow", "tensorboard"]),
    ("ablate list --format ", ["table", "json"]),
    ("ablate list --device c", ["cpu", "cuda"]),
    ("ablate list --axis ", ["attention", "position", "norm", "activation"]),
    ("ablate compare a b --format ", ["table", "json", "markdown"]),
    ("ablate status runs --format j", ["json"]),
    ("ablate nightly --preset-latency ", list(runner.suite_presets("latency"))),
    ("ablate nightly --preset-extrapolation ", list(runner.suite_presets("extrapolation"))),
    ("ablate nightly --preset-extrapolation g", ["gpu"]),
    ("ablate nightly --device ", ["auto", "cpu", "cuda"]),
    ("ablate nightly --suites latency,", ["latency,extrapolation"]),
])
def test_completion_lists_the_valid_values(capsys, line, expected):
    assert complete(capsys, line) == expected
    if "preset" in line and line.endswith(" "):
        assert set(PRESETS) <= set(expected)  # the shared vocabulary, whatever else a suite offers


def test_completion_of_commands_and_the_install_options(capsys, monkeypatch):
    # `--show-completion SHELL` as typer's own tests take it: the shell named, not detected from the parent process
    # (a run without a detectable shell -- a background job, some CI runners -- answers "Shell  not supported")
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    assert complete(capsys, "ablate ex") == ["export"]
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out
    code, out, err = cli(capsys, "--show-completion", "bash")
    assert code == 0, err
    assert "_ABLATE_COMPLETE" in out and "complete -o default -F" in out


def test_completion_through_the_click_params():
    """The same through the command objects: each choice parameter's ``shell_complete``."""
    import typer

    group = typer.main.get_command(app)
    run = group.commands["run"]
    ctx = run.make_context("run", ["--suite", "latency"], resilient_parsing=True)
    params = {p.name: p for p in run.params}
    assert [c.value for c in params["suite"].shell_complete(ctx, "")] == list(SUITES)
    presets = {c.value: c.help for c in params["preset"].shell_complete(ctx, "")}
    assert list(presets) == list(runner.suite_presets("latency"))
    assert [presets[p] for p in PRESETS] == ["seconds on a CPU, for tests", "the CPU default", "the CUDA default"]
    assert [c.value for c in params["device"].shell_complete(ctx, "cu")] == ["cuda"]


# ---------------------------------------------------------------------------------------------------------------
# a bad choice: one line naming the valid values, exit 2


@pytest.mark.parametrize("argv, line", [
    (("run", "--suite", "nope"), "unknown suite 'nope'; valid: training, extrapolation, latency, recall"),
    (("run", "--suite", "latency", "--device", "tpu"), "unknown device 'tpu'; valid: auto, cpu, cuda"),
    (("run", "--suite", "latency", "--launcher", "k8s"), "invalid value 'k8s' for --launcher; valid: local, gpus, "
                                                         "slurm"),
    (("run", "--suite", "latency", "--slurm-cluster", "x"), "invalid value 'x' for --slurm-cluster; valid: slurm, "
                                                            "local"),
    (("run", "--suite", "latency", "--preset", "huge", "--dry-run", "--device", "cpu"),
     "unknown latency preset 'huge'; valid: micro, tiny, gpu"),
    (("export", "r.jsonl", "--to", "xls"), "invalid value 'xls' for --to; valid: parquet, csv, wandb, mlflow, "
                                           "tensorboard"),
    (("list", "--format", "xml"), "invalid value 'xml' for --format; valid: table, json"),
    (("list", "--device", "tpu"), "unknown device 'tpu'; valid: auto, cpu, cuda"),
    (("compare", "a", "b", "--format", "html"), "invalid value 'html' for --format; valid: table, json, markdown"),
    (("nightly", "--device", "tpu"), "unknown device 'tpu'; valid: auto, cpu, cuda"),
])
def test_a_bad_choice_is_one_line_naming_the_valid_values(capsys, tmp_path, monkeypatch, argv, line):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and err == f"ablate: error: {line}\n", err
    assert not list(tmp_path.iterdir()), "a refused command writes nothing"


def test_device_is_case_insensitive(capsys, tmp_path):
    code, out, err = cli(capsys, "run", "--suite", "latency", "--preset", "micro", "--device", "CPU", "--dry-run",
                         "--out", str(tmp_path))
    assert code == 0, err
    assert "device: cpu" in out and f"results: {tmp_path / 'latency' / 'cpu-micro.jsonl'}" in out


# ---------------------------------------------------------------------------------------------------------------
# one preset vocabulary


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_speaks_the_same_preset_vocabulary(suite):
    """micro / tiny (the CPU default) / gpu (the CUDA default) in every suite, first and in that order; a suite may
    add presets of its own after them."""
    import importlib

    from ablate.commands.views import preset_table

    module = importlib.import_module(f"ablate.suites.{suite}")
    assert PRESETS == ("micro", "tiny", "gpu")
    assert [p for p in module.PRESETS if p in PRESETS] == list(PRESETS)
    assert runner.suite_presets(suite) == tuple(module.PRESETS)
    assert not set(module.PRESETS) & set(runner.PRESET_ALIASES)  # an alias never shadows a preset
    assert runner.default_preset(suite, "cpu") == "tiny" and runner.default_preset(suite, "cuda") == "gpu"
    assert preset_table()[suite]["default"] == {"cpu": "tiny", "cuda": "gpu"}


def test_cpu_is_a_deprecated_alias_of_tiny(capsys):
    from ablate.suites import latency

    assert latency.resolve("cpu") == latency.resolve("tiny")
    assert RunOptions(suite="latency", preset="cpu").preset == "tiny"
    assert RunOptions(suite="training", preset="cpu").preset == "tiny"  # the same word everywhere
    assert RunOptions(suite="latency", preset="micro").preset == "micro"
    err = capsys.readouterr().err
    assert err == ("ablate: note: preset 'cpu' is deprecated, now called 'tiny' (every suite: micro, tiny, gpu); "
                   "running 'tiny'\n")  # one line, once per process


def test_run_preset_cpu_runs_tiny_with_a_note(capsys, tmp_path):
    code, out, err = cli(capsys, "run", "--suite", "latency", "--preset", "cpu", "--device", "cpu", "--dry-run",
                         "--out", str(tmp_path))
    assert code == 0, err
    assert "preset: tiny" in out and f"results: {tmp_path / 'latency' / 'cpu-tiny.jsonl'}" in out
    assert err.count("\n") == 1 and "preset 'cpu' is deprecated, now called 'tiny'" in err


def test_an_old_cpu_results_file_is_pointed_at(capsys, tmp_path):
    """A run dir from before the rename holds <device>-cpu.jsonl: the run says how to resume it (the rows' keys do
    not involve the preset, so renaming the file resumes it exactly)."""
    (tmp_path / "latency").mkdir()
    (tmp_path / "latency" / "cpu-cpu.jsonl").write_text("")
    code, out, err = cli(capsys, "run", "--suite", "latency", "--device", "cpu", "--dry-run", "--out", str(tmp_path))
    assert code == 0, err
    assert "preset: tiny" in out
    assert err.count("\n") == 1 and "rename cpu-cpu.jsonl to cpu-tiny.jsonl to resume it" in err


def test_committed_latency_rows_do_not_record_the_preset():
    """Why the rename keeps committed results and resume intact: latency rows carry no preset (not a field, not a
    key field), so their row keys and reports do not depend on its name; the suites whose rows do record one
    (training, extrapolation) use the shared names (tiny, small)."""
    files = sorted((ROOT / "results").glob("*/*.jsonl"))
    assert files
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("suite") == "latency":
                assert "preset" not in row and "preset" not in row.get("key_fields", [])
            else:
                assert row.get("preset", "tiny") in ("tiny", "small")


def test_list_shows_the_presets_per_suite(capsys):
    code, out, _ = cli(capsys, "list", "--presets", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == list(SUITES)
    for suite, t in data.items():
        assert list(t["presets"]) == list(runner.suite_presets(suite)) and t["deprecated_aliases"] == {"cpu": "tiny"}
    code, out, _ = cli(capsys, "list", "--presets")
    assert code == 0
    for suite in SUITES:
        assert f"  {suite}: micro (seconds on a CPU, for tests), tiny (the CPU default), " in out
    code, out, _ = cli(capsys, "list", "--axis", "norm")
    assert code == 0 and "presets (ablate run --suite S --preset P):" in out and "latency: micro" in out
    code, out, _ = cli(capsys, "list", "--axis", "norm", "--format", "json")
    assert list(json.loads(out)) == ["norm"]  # the JSON of the variants stays what it was


# ---------------------------------------------------------------------------------------------------------------
# ablate run ends with the summary tables


_QUICK = ("--suite", "latency", "--preset", "micro", "--device", "cpu", "--no-progress", "--set", "parts=kernel",
          "--set", "kernels.keys=naive,sdpa", "--set", "kernels.seq_lens=32", "--set", "kernels.causal=false",
          "--set", "kernels.layouts=", "--set", "kernels.alibi=false", "--set", "kernels.windows=")


def test_run_ends_with_the_summary_table_show_prints(capsys, tmp_path):
    from ablate.reporting.show import render

    code, out, err = cli(capsys, "run", *_QUICK, "--out", str(tmp_path))
    assert code == 0, err
    path = tmp_path / "latency" / "cpu-micro.jsonl"
    shown = render([path])
    assert "## latency: kernel_best" in shown
    assert shown in out  # the same text as `ablate show RESULTS`
    assert out.rstrip("\n").splitlines()[-1].startswith(f"results: {path} (")  # the summary line stays last
    code, out, err = cli(capsys, "run", *_QUICK, "--out", str(tmp_path / "quiet"), "--no-summary")
    assert code == 0, err
    assert "## latency" not in out and "(no tables" not in out
    assert out.startswith(f"results: {tmp_path / 'quiet' / 'latency' / 'cpu-micro.jsonl'} (")


def test_dry_run_prints_no_table(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *_QUICK, "--out", str(tmp_path), "--dry-run")
    assert code == 0, err
    assert "## " not in out and out.rstrip().endswith("dry run: nothing was run or written")
    assert not tmp_path.joinpath("latency").exists()


def test_a_summary_that_cannot_be_made_is_a_warning(capsys, tmp_path):
    from ablate.commands.run import show_summary

    bad = tmp_path / "r.jsonl"
    bad.write_text("{not json\n")
    show_summary(bad)
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"ablate: warning: no summary table for {bad} (") and err.count("\n") == 1


def test_console_script_bad_choice_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ablate.cli", "export", "x.jsonl", "--to", "xls"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == "ablate: error: invalid value 'xls' for --to; valid: parquet, csv, wandb, mlflow, " \
                          "tensorboard\n"


def test_the_summary_leaves_figures_on_for_later_reports():
    """``ablate run`` makes the summary tables in-process with figures off (``tables.no_figures``): the switch is a
    context variable read by ``savefig`` and every ``@figure`` function, so nothing is patched and figures are on
    again after the block, in every suite's figure module (they import ``savefig`` by name)."""
    import importlib

    from ablate.reporting import tables

    with tables.no_figures():
        assert not tables.figures_on()
        mods = [importlib.import_module(f"ablate.suites.{suite}.figures") for suite in SUITES]
        assert tables.figure(lambda: ["made.png"])() == []
    assert tables.figures_on() and tables.figure(lambda: ["made.png"])() == ["made.png"]
    assert all(m.savefig is tables.savefig for m in mods if hasattr(m, "savefig"))
