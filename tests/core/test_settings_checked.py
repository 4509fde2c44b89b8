"""Settings are checked before any work and never rewritten behind the user's back (issue #24).

Each case was accepted (and silently rewritten, dropped or ignored) before: now it is one ConfigError line naming
the setting, raised by the suite's ``resolve`` -- which ``ablate run`` and ``--dry-run`` call before any work.
"""

from __future__ import annotations

import pytest

from ablate.errors import ConfigError, UnknownKeyError
from ablate.plan.sweep import parse_sweeps
from ablate.suites.extrapolation.config import resolve as resolve_x
from ablate.suites.latency.config import resolve as resolve_l
from ablate.suites.training.config import resolve as resolve_t

SUITES = {"extrapolation": resolve_x, "training": resolve_t, "latency": resolve_l}

REFUSED = [
    # (suite, overrides, words the one line must hold)
    ("latency", ["model.attention=nope"], ["model.attention='nope'", "valid:", "sdpa"]),
    ("latency", ["model.norm_placement=mid"], ["norm_placement", "pre, post"]),
    ("latency", ["model.max_len=8"], ["train.model.max_len=8", "train.seq_len=32"]),
    ("extrapolation", ["model.attention=nope"], ["model.attention='nope'", "valid:"]),
    ("training", ["grid.base=preset", "grid.axes=norm=layernorm,rmsnorm", "model.attention=nope"], ["nope"]),
    ("training", ["model.train_len=8", "train.seq_len=16"], ["model.train_len=8", "train.seq_len=16", "conflict"]),
    ("extrapolation", ["model.train_len=8", "train.seq_len=16"], ["model.train_len=8", "train.seq_len=16"]),
    ("training", ["model.max_len=8"], ["model.max_len=8", "16"]),
    ("extrapolation", ["model.max_len=8"], ["model.max_len=8", "model.train_len=16"]),
    ("training", ["grid.axes=norm=layernorm,rmsnorm", "grid.window=8"], ["grid.window=8", "no point"]),
    ("extrapolation", ["eval.factors=1,1"], ["eval.factors", "repeats"]),
    ("training", ["eval.tokens=4"], ["eval.tokens=4", "train.seq_len=16"]),
    ("training", ["model.d_model=\u0663\u0662"], ["model.d_model", "ASCII"]),  # Arabic-Indic 32
    ("extrapolation", ["model.d_model=\uff13\uff12"], ["model.d_model", "ASCII"]),  # full-width 32
    ("latency", ["seed=\u0663"], ["seed", "ASCII"]),
    ("extrapolation", ["eval.factors=1,,2"], ["eval.factors", "empty value"]),
    ("extrapolation", ["positions=rope,"], ["positions", "empty value"]),
    ("extrapolation", ["positions=rope;alibi"], ["positions", "semicolon"]),
    ("extrapolation", ["positions=rope\nalibi"], ["positions", "newline"]),
]


@pytest.mark.parametrize("suite,overrides,words", REFUSED, ids=[" ".join(c[1]) for c in REFUSED])
def test_a_wrong_or_conflicting_setting_is_one_line(suite, overrides, words):
    with pytest.raises((ConfigError, UnknownKeyError)) as exc:
        SUITES[suite]("micro", overrides)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_what_is_asked_is_what_runs():
    t = resolve_t("micro", ["train.seq_len=32"])
    assert (t.model.train_len, t.train.seq_len) == (32, 32)
    t = resolve_t("micro", ["model.train_len=16", "train.seq_len=16"])  # both, agreeing
    assert t.train.seq_len == 16
    x = resolve_x("micro", ["model.max_len=16"])  # equal to the preset's: kept as given
    assert x.model.max_len == 16
    x = resolve_x("micro", ["model.max_len=64"])
    assert x.model.max_len == 64
    assert resolve_t("micro", ["grid.window=8"]).grid.window == 8  # the default grid's modern+sliding_window uses it


def test_list_settings_take_the_form_dry_run_prints():
    assert resolve_x("micro", ["eval.factors=[1,2]"]).eval.factors == (1, 2)
    assert resolve_x("micro", ["eval.factors=[1, 2]"]).eval.factors == (1, 2)
    assert resolve_x("micro", ["eval.factors=1,2"]).eval.factors == (1, 2)
    assert resolve_x("micro", ['positions=["rope", "alibi"]', "rope_scalings=[]"]).positions == ("rope", "alibi")
    assert resolve_x("micro", ["rope_scalings="]).rope_scalings == ()


@pytest.mark.parametrize("value,words", [
    ("model.position=rope,,alibi", "empty value"),
    ("model.position=rope,alibi,", "empty value"),
    ("model.norm=layernorm;activation=relu", "semicolon"),
    ("model.norm=layernorm\nactivation=relu", "newline"),
    ("model.norm=layernorm activation=relu", "space"),
])
def test_a_sweep_value_is_never_dropped_or_split(value, words):
    with pytest.raises(ConfigError, match=words) as exc:
        parse_sweeps([value])
    assert "\n" not in str(exc.value)
    assert parse_sweeps(["model.position=[rope,alibi]"]) == {"model.position": ("rope", "alibi")}
