"""The command line's help (issue 20, item 4): every option of every command says what it does, `ablate run` groups
its options in panels with the launchers apart, its options reach the run as one typed object (no ``dict(locals())``),
and help wraps long words instead of cutting them."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ablate.cli import app
from ablate.commands.gates import NightlyArgs
from ablate.commands.run import RunArgs

ROOT = Path(__file__).resolve().parents[2]
RUN_PANELS = ("What to run", "Where results go", "Resuming & selection", "Logging & trackers",
              "Launchers: GPUs and Slurm (docs/scale-out.md)", "Launchers: torchrun, DDP training (docs/scale-out.md)")
LAUNCHER_OPTIONS = {"launcher", "gpus", "wait", "nproc_per_node", "nnodes", "node_rank", "rdzv_backend", "rdzv_endpoint",
                    "rdzv_id", "master_addr", "master_port"}


def _commands(command, path=("ablate",)):
    """(command path, click command) of the app and every command below it."""
    yield " ".join(path), command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, path + (name,))


ROOT_COMMAND = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT_COMMAND))


def _run_params():
    return {p.name: p for p in COMMANDS["ablate run"].params}


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_and_argument_says_what_it_does(path):
    """Help text of at least three words on every visible option and argument (a bare "torchrun." is not help)."""
    missing = []
    for p in COMMANDS[path].params:
        if getattr(p, "hidden", False):
            continue
        text = (getattr(p, "help", None) or "").strip()
        if len(text.split()) < 3:
            missing.append(f"{max(p.opts, key=len) if p.opts else p.name}: {text!r}")
    assert not missing, f"`{path}`: options without help: " + ", ".join(missing)
    if path != "ablate":
        assert (COMMANDS[path].help or "").strip(), f"`{path}` has no description"


def test_run_groups_its_options_in_panels_with_the_launchers_apart():
    params = _run_params()
    ungrouped = [n for n, p in params.items() if not getattr(p, "rich_help_panel", None)]
    assert not ungrouped, f"options outside a panel: {ungrouped}"
    panels = {p.rich_help_panel for p in params.values()}
    assert panels == set(RUN_PANELS)
    for name, p in params.items():
        launcher = name in LAUNCHER_OPTIONS or name.startswith("slurm_")
        assert p.rich_help_panel.startswith("Launchers") == launcher, (name, p.rich_help_panel)
    assert params["slurm_partition"].rich_help_panel == params["launcher"].rich_help_panel
    assert params["rdzv_endpoint"].rich_help_panel == params["nproc_per_node"].rich_help_panel


def test_run_help_shows_the_panels_in_order():
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    found = [result.output.find(f"─ {title} ") for title in RUN_PANELS]
    assert all(i >= 0 for i in found), dict(zip(RUN_PANELS, found))
    assert found == sorted(found)


@pytest.mark.parametrize("path", sorted(p for p in COMMANDS if p != "ablate"))
def test_help_wraps_long_words_instead_of_cutting_them(path):
    """At 80 columns (what rich assumes without a terminal) no word is cut with an ellipsis."""
    argv = path.split()[1:] + ["--help"]
    result = CliRunner().invoke(app, argv, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output, "\n".join(line for line in result.output.splitlines() if "…" in line)


def test_the_help_fold_costs_nothing_until_help_is_shown():
    """Folding long words patches typer's rich help only when help is formatted: importing the CLI (what shell
    completion does on every <TAB>) loads neither rich nor typer's rich help."""
    code = "import sys, ablate.cli; print(sorted(m for m in ('rich', 'typer.rich_utils') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command, args", [("run", RunArgs), ("nightly", NightlyArgs)])
def test_options_reach_the_command_as_one_typed_object(command, args):
    """Every option of the command is a field of its options object, and nothing else is."""
    options = {p.name for p in COMMANDS[f"ablate {command}"].params}
    assert options == {f.name for f in dataclasses.fields(args)}


def test_no_dict_of_locals_and_a_short_cli_module():
    source = (ROOT / "cli.py").read_text(encoding="utf-8")
    assert "locals()" not in source
    assert len(source.splitlines()) < 500
    for path in (ROOT / "ablate" / "commands").glob("*.py"):
        assert "locals()" not in path.read_text(encoding="utf-8"), path


def test_run_args_take_what_typer_gives():
    """Choices by name, repeatable options not given (None) as (), lists as tuples."""

    class Suite(str, enum.Enum):
        training = "training"

    a = RunArgs(suite=Suite.training, overrides=None, sweep=["model.norm=a,b"], task=None, slurm_opt=None)
    assert a.suite == "training" and type(a.suite) is str
    assert a.overrides == () and a.sweep == ("model.norm=a,b",) and a.task == () and a.slurm_opt == ()
    assert RunArgs(suite="latency").launcher == "local" and RunArgs(suite="latency").summary is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seeds = 3  # type: ignore[misc]
