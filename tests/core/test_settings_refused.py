"""Every setting of every suite, given a wrong value, and every conflicting pair of settings: ``ablate run`` exits 2
with one line and writes nothing (issue #24, item 1).

The wrong value follows the setting's type in the suite's micro preset (a word for a number, ``maybe`` for a
boolean, an empty list item for a list, an unknown name for a string). The run goes through the command line as a
user types it (``--out`` a fresh folder); the run loop is replaced by a failure, so a value that were accepted
would fail the test before anything trained. ``test_settings_checked.py`` pins the message of each conflict;
``test_settings_honoured.py`` that every valid change reaches what runs.
"""

from __future__ import annotations

import typing

import pytest

import ablate.plan.suitekit as suitekit
import ablate.suites.extrapolation as ex
import ablate.suites.latency as lat
import ablate.suites.training as tr
from ablate.cli import main
from ablate.core.config import _all_paths

SUITES = {"extrapolation": ex, "training": tr, "latency": lat}

# Pairs that are each valid alone and conflict together (or a value that conflicts with the preset's other).
CONFLICTS = [
    ("training", ["model.train_len=8", "train.seq_len=16"]),
    ("extrapolation", ["model.train_len=8", "train.seq_len=16"]),
    ("training", ["model.max_len=8"]),  # below the preset's training length 16
    ("extrapolation", ["model.max_len=8"]),
    ("latency", ["train.model.max_len=8"]),  # below the train part's train.seq_len 32
    ("training", ["grid.axes=norm=layernorm,rmsnorm", "grid.window=8"]),  # a window no point of that grid uses
    ("training", ["eval.tokens=4"]),  # below train.seq_len 16
    ("extrapolation", ["eval.factors=1,1"]),
    ("extrapolation", ["eval.stride=4"]),  # without eval.mode=sliding
    ("training", ["grid.mode=oat"]),  # without grid.axes
    ("latency", ["train.amp=bf16"]),  # on cpu
]


def _value(cfg, key: str):
    obj = cfg
    for p in key.split(".")[:-1]:
        obj = getattr(obj, p)
    return getattr(obj, key.split(".")[-1])


def wrong(cfg, key: str) -> str:
    cur = _value(cfg, key)
    if isinstance(cur, bool):
        return "maybe"
    if isinstance(cur, (int, float)):
        return "fast"
    if isinstance(cur, tuple):
        return "a,,b"
    if cur is None:  # Optional fields: the type says what they hold
        obj = cfg
        for p in key.split(".")[:-1]:
            obj = getattr(obj, p)
        hint = str(typing.get_type_hints(type(obj))[key.split(".")[-1]])
        return "fast" if ("int" in hint or "float" in hint) else "zz_not_valid"
    return "zz_not_valid"


CASES = [(s, k) for s in SUITES for k in _all_paths(SUITES[s].PRESETS["micro"])]


@pytest.fixture
def refused(tmp_path, capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("accepted: the run loop was reached")

    monkeypatch.setattr(suitekit, "run_loop", never)

    def check(suite: str, sets: list[str]) -> str:
        out = tmp_path / "out"
        args = ["run", "--suite", suite, "--preset", "micro", "--device", "cpu", "--no-progress", "--out", str(out)]
        for s in sets:
            args += ["--set", s]
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert exc.value.code == 2, f"{sets}: exit {exc.value.code}: {err}"
        assert len(lines) == 1 and lines[0].startswith("ablate: error: "), f"{sets}: {err}"
        assert not out.exists(), f"{sets}: wrote {sorted(p.name for p in out.rglob('*'))}"
        return lines[0]

    return check


@pytest.mark.parametrize("suite, key", CASES, ids=[f"{s}:{k}" for s, k in CASES])
def test_every_setting_with_a_wrong_value_is_refused(refused, suite, key):
    value = wrong(SUITES[suite].PRESETS["micro"], key)
    line = refused(suite, [f"{key}={value}"])
    assert key.split(".")[-1] in line or value in line, line  # the line names what it refuses


@pytest.mark.parametrize("suite, sets", CONFLICTS, ids=[" ".join(c[1]) for c in CONFLICTS])
def test_every_conflicting_pair_is_refused(refused, suite, sets):
    line = refused(suite, sets)
    assert any(s.split("=")[0] in line for s in sets), line  # it names the setting it refuses


def test_the_enumeration_covers_every_suite():
    assert {s for s, _ in CASES} == set(SUITES) and len(CASES) > 200
