"""`ablate run --config FILE` and `--print-config`: the file's keys are the command line's (--set, --sweep), checked
with the same errors plus FILE:LINE, and a printed file reads back to the same plan (the same --dry-run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ablate.commands import config_file
from ablate.errors import ConfigError
from tests.helpers import cli


TOML = '''\
suite = "training"
preset = "micro"
seeds = 2

[set]
"train.steps" = 4
model.d_model = 32

[set.eval]
tokens = 256

[sweep]
"model.norm" = ["layernorm", "rmsnorm"]
"train.lr" = [1e-3, 3e-3]
'''


def test_toml_keys_are_the_command_lines(tmp_path):
    p = tmp_path / "sweep.toml"
    p.write_text(TOML)
    rf = config_file.load(p)
    assert (rf.suite, rf.preset, rf.seeds) == ("training", "micro", 2)
    assert [i.text for i in rf.sets] == ["train.steps=4", "model.d_model=32", "eval.tokens=256"]
    assert [i.line for i in rf.sets] == [6, 7, 10]
    assert [i.text for i in rf.sweeps] == ["model.norm=layernorm,rmsnorm", "train.lr=0.001,0.003"]
    assert [i.line for i in rf.sweeps] == [13, 14]


def test_yaml_has_the_same_shape(tmp_path):
    pytest.importorskip("yaml")
    p = tmp_path / "sweep.yaml"
    p.write_text("suite: training\npreset: micro\nset:\n  train.steps: 4\n  model:\n    d_model: 32\n"
                 "sweep:\n  model.norm: [layernorm, rmsnorm]\n")
    rf = config_file.load(p)
    assert rf.suite == "training" and [i.text for i in rf.sets] == ["train.steps=4", "model.d_model=32"]
    assert [(i.text, i.line) for i in rf.sweeps] == [("model.norm=layernorm,rmsnorm", 8)]


def test_yaml_without_pyyaml_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_yaml(name, *a, **kw):
        if name == "yaml":
            raise ModuleNotFoundError("No module named 'yaml'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    p = tmp_path / "s.yml"
    p.write_text("suite: training\n")
    with pytest.raises(ConfigError, match=r"YAML needs PyYAML \(pip install 'ablate-bench\[yaml\]'\)"):
        config_file.load(p)


@pytest.mark.parametrize("text, needle", [
    ('suite = "training"\nsteps = 3\n', r":2: unknown key 'steps'; valid: suite, preset, seeds, set, sweep"),
    ('suite = "training"\n[sweep]\n"model.norm" = 3\n', r":3: sweep model.norm must be a list of values"),
    ('seeds = 0\n', r":1: seeds must be a whole number >= 1"),
    ('[set]\n"train.steps" = {x = [1, {}]}\n', r":2: "),
    ('suite = "training"\n[set\n', r":2: not valid TOML"),
    ('[set]\n"a" = 1979-05-27\n', r":2: a: a date is not a setting value"),
])
def test_file_mistakes_name_the_file_and_line(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(str(p)) + needle):
        config_file.load(p)


def test_dump_reads_back_to_the_same_items(tmp_path):
    text = config_file.dump("training", "micro", 2, ["train.steps=4", "eval.factors=1,2", "grid.only=",
                                                     "data.tokenizer=bpe:300", "x=a b"],
                            ["model.norm=layernorm,rmsnorm", "train.lr=0.001,3e-3"], {"model.d_model": 32})
    p = tmp_path / "printed.toml"
    p.write_text(text)
    rf = config_file.load(p)
    assert (rf.suite, rf.preset, rf.seeds) == ("training", "micro", 2)
    assert [i.text for i in rf.sets] == ["train.steps=4", "eval.factors=1,2", "grid.only=", "data.tokenizer=bpe:300",
                                         "x=a b"]
    assert [i.text for i in rf.sweeps] == ["model.norm=layernorm,rmsnorm", "train.lr=0.001,3e-3"]
    assert "#   model.d_model = 32" in text


# ---------------------------------------------------------------------------------------------------------------
# Through the command line


def test_a_bad_item_is_the_command_lines_error_with_file_and_line(capsys, tmp_path):
    p = tmp_path / "sweep.toml"
    p.write_text('suite = "extrapolation"\npreset = "micro"\n\n[sweep]\n"model.colour" = ["red", "blue"]\n')
    code, out, err = cli(capsys, "run", "--config", str(p), "--dry-run", "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and not out, err
    assert lines[0].startswith(f"ablate: error: {p}:5: --sweep model.colour: the extrapolation suite cannot sweep it")
    p.write_text('suite = "training"\npreset = "micro"\n[set]\n"train.steps" = 4\n"model.bogus" = 1\n')
    code, out, err = cli(capsys, "run", "--config", str(p), "--dry-run", "--device", "cpu")
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith(f"ablate: error: {p}:5: ") and "bogus" in line
    code, out, err = cli(capsys, "run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.toml: no such file" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "run", "--config", str(p), "--suite", "latency", "--dry-run")
    assert code == 2 and f"{p}:1: suite = 'training', but --suite latency" in err
    code, out, err = cli(capsys, "run", "--dry-run")
    assert code == 2 and "--suite is required" in err


def test_print_config_round_trip_gives_the_same_plan(capsys, tmp_path):
    args = ["--suite", "training", "--preset", "micro", "--seeds", "2", "--set", "train.steps=4",
            "--sweep", "model.norm=layernorm,rmsnorm", "--sweep", "model.activation=relu,swiglu", "--device", "cpu",
            "--out", str(tmp_path / "runs")]
    code, printed, err = cli(capsys, "run", *args, "--print-config")
    assert code == 0, err
    assert printed.startswith("# ablate run --config FILE") and "[sweep]" in printed
    p = tmp_path / "sweep.toml"
    p.write_text(printed)
    code, plan_flags, err = cli(capsys, "run", *args, "--dry-run")
    assert code == 0, err
    code, plan_file, err = cli(capsys, "run", "--config", str(p), "--device", "cpu", "--out", str(tmp_path / "runs"),
                               "--dry-run")
    assert code == 0, err
    assert plan_file == plan_flags
    assert "plan: 4 task(s)" in plan_file or "task(s)" in plan_file
    assert not (tmp_path / "runs").exists()  # nothing written
