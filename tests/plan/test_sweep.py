"""One sweep vocabulary: `ablate run --sweep KEY=V1,V2` means the same in every suite and refuses conflicts."""

from __future__ import annotations

import pytest

from ablate.errors import AblateError, ConfigError
from ablate.store.results import read_rows
from ablate.plan.sweep import parse_sweeps, sweep_overrides, sweepable
from tests.helpers import cli


def test_each_suite_translates_a_sweep_into_its_own_setting():
    assert sweep_overrides("extrapolation", ["model.position=rope,alibi"]) == ["positions=rope,alibi"]
    assert sweep_overrides("extrapolation", ["eval.position=rope_ntk"]) == ["rope_scalings=rope_ntk"]
    assert sweep_overrides("latency", ["model.attention=sdpa,naive"]) == ["kernels.keys=sdpa,naive"]
    assert sweep_overrides("latency", ["model.position=rope,alibi"]) == ["positions.keys=rope,alibi"]
    # training: every model.* / train.* key is an axis of one factorial grid over the model.* base
    assert sweep_overrides("training", ["model.norm=layernorm,rmsnorm", "train.lr=0.001,0.003"]) == \
        ["grid.axes=norm=layernorm,rmsnorm;train.lr=0.001,0.003"]
    assert sweepable("extrapolation") == ["model.position", "eval.position"]


@pytest.mark.parametrize("suite, sweeps, sets, message", [
    ("extrapolation", ["model.norm=a,b"], [],
     "--sweep model.norm: the extrapolation suite cannot sweep it; sweepable: model.position, eval.position"),
    ("latency", ["train.lr=1,2"], [], "the latency suite cannot sweep it; sweepable: model.attention"),
    ("extrapolation", ["model.position=rope,alibi"], ["model.position=rope"],
     "--sweep model.position and --set model.position both choose model.position"),
    ("extrapolation", ["model.position=rope,alibi"], ["positions=none"],
     "--sweep model.position and --set positions both choose model.position"),
    ("latency", ["model.attention=sdpa"], ["kernels.keys=naive"], "--set kernels.keys both choose"),
    ("training", ["model.norm=layernorm,rmsnorm"], ["model.norm=rmsnorm"], "--set model.norm both choose"),
    ("training", ["model.nope=1,2"], [], "unknown grid axis 'model.nope'"),
    ("training", ["model.norm=layernorm,nope"], [], "unknown norm 'nope'"),
])
def test_conflicts_and_unknown_keys_are_refused(suite, sweeps, sets, message):
    with pytest.raises(AblateError) as info:  # ConfigError, or UnknownKeyError for a registry value
        sweep_overrides(suite, sweeps, sets)
    assert message in str(info.value)


@pytest.mark.parametrize("values, message", [
    (["model.position"], "is not KEY=V1,V2"),
    (["model.position="], "has no values"),
    (["model.position=rope,rope"], "repeats a value"),
    (["model.position=rope", "model.position=alibi"], "given twice"),
])
def test_malformed_sweeps(values, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweeps(values)


def test_a_sweep_runs_those_variants_and_a_conflict_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = cli(capsys, "run", "-s", "extrapolation", "-p", "micro", "--device", "cpu", "--no-progress",
                       "--sweep", "model.position=rope,alibi", "--set", "model.position=alibi", "--out", str(out))
    assert code == 2 and "both choose model.position" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, _, err = cli(capsys, "run", "-s", "extrapolation", "-p", "micro", "--device", "cpu", "--no-progress",
                       "--sweep", "model.position=alibi,none", "--sweep", "eval.position=", "--out", str(out))
    assert code == 2 and "--sweep eval.position has no values" in err
    code, _, err = cli(capsys, "run", "-s", "extrapolation", "-p", "micro", "--device", "cpu", "--no-progress",
                       "--sweep", "model.position=alibi,none", "--set", "rope_scalings=", "--out", str(out))
    assert code == 0, err
    (path,) = out.rglob("*.jsonl")
    assert path == out / "extrapolation" / "cpu-micro.jsonl"  # <out>/<suite>/<device>-<preset>.jsonl
    assert {r["position"] for r in read_rows(path) if r["status"] == "ok"} == {"alibi", "none"}


def test_grid_and_sweep_together_are_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "run", "-s", "training", "--grid", "norm=layernorm,rmsnorm", "--sweep",
                       "model.activation=relu,gelu", "--out", str(tmp_path / "x"))
    assert code == 2 and "--grid and --sweep both build the training grid" in err
    assert not (tmp_path / "x").exists()


def test_list_sweeps(capsys):
    code, out, _ = cli(capsys, "list", "--sweeps")
    assert code == 0
    assert "extrapolation: model.position -> positions, eval.position -> rope_scalings" in out
    assert "training: model.* -> grid.axes, train.* -> grid.axes" in out


def test_dry_run_prints_the_resolved_configuration_and_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    code, stdout, _ = cli(capsys, "run", "-s", "extrapolation", "-p", "micro", "--device", "cpu",
                          "--sweep", "model.position=rope,alibi", "--set", "model.norm=layernorm",
                          "--out", str(out), "--dry-run")
    assert code == 0 and not out.exists()
    assert "model.norm = 'layernorm'" in stdout and "positions = ['rope', 'alibi']" in stdout
    assert "plan: 2 task(s), 0 done already, 2 to run" in stdout and "[todo] alibi@s0" in stdout
    assert stdout.rstrip().endswith("dry run: nothing was run or written")
    code, _, err = cli(capsys, "run", "-s", "extrapolation", "--set", "model.position=nope", "--out", str(out),
                       "--dry-run")
    assert code == 2 and "unknown position 'nope'" in err and not out.exists()
