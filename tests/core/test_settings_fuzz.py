"""Fuzzing ``--set key=value`` (Hypothesis): any key and value applied to a suite's micro preset ends in a config of
the same type, all of whose numbers are finite and in range, or in a one-line :class:`ablate.errors.AblateError` --
never another exception, never NaN/inf in a result.

Keys: valid paths, near misses (a dropped/doubled/case-flipped character, a stray dot, a parent without its field),
garbage, unicode, empty. Values: numbers (with nan/inf/huge/negative/overflowing spellings), booleans in many
spellings, comma-separated tuples, empty, "none", random text. ``ABLATE_FUZZ_EXAMPLES`` scales the example counts
(default modest: the suite shares a 2-core machine); runs are derandomised, so CI sees the same cases every time
(``ABLATE_FUZZ_RANDOM=1`` explores new ones).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections import Counter

import ablate.suites.extrapolation as EX
import ablate.suites.latency as LAT
import ablate.suites.training as TR
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.core.config import _all_paths, _strip_optional, apply_overrides, check_fields
from ablate.errors import AblateError

SUITES = {"extrapolation": EX, "training": TR, "latency": LAT}
SCALE = float(os.environ.get("ABLATE_FUZZ_EXAMPLES", "1"))
RANDOM = os.environ.get("ABLATE_FUZZ_RANDOM", "") not in ("", "0")  # explore new cases instead of the fixed ones
COUNTS: Counter = Counter()  # generated cases per test, for the report (pytest -s prints them)


def _settings(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=not RANDOM, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------------------------
# Strategies

def _near_misses(path: str) -> list[str]:
    out = [path.upper(), path + ".", "." + path, path + "x", path.replace(".", ".."), path.replace("_", "-"),
           path[:-1], path + path[-1], " " + path + " ", path.split(".")[0]]
    return [p for p in out if p != path]


def keys(paths: list[str]) -> st.SearchStrategy[str]:
    near = sorted({m for p in paths for m in _near_misses(p)})
    return st.one_of(st.sampled_from(paths), st.sampled_from(paths), st.sampled_from(near),
                     st.just(""), st.text(max_size=12), st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", max_size=24))


NUMBER_WORDS = ["nan", "NaN", "-nan", "inf", "+inf", "-inf", "Infinity", "-INFINITY", "1e999", "-1e999", "1e-999",
                "1e308", "1e19", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "0", "-0", "-1",
                "0.0", "1e3", "1.5", "1_000", "0x10", "٣", "1e", ".5", "5."]
BOOL_WORDS = ["true", "True", "TRUE", "false", "yes", "no", "on", "off", "1", "0", "Y", "maybe", "tru e"]
NONE_WORDS = ["none", "None", "NONE", "null", "", " "]


def _number_text(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


atoms = st.one_of(
    st.sampled_from(NUMBER_WORDS + BOOL_WORDS + NONE_WORDS),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.integers(min_value=-3, max_value=70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(_number_text),
    st.floats(min_value=-2, max_value=2).map(_number_text),
    st.text(max_size=8),
)


def values(valid_words: list[str]) -> st.SearchStrategy[str]:
    """Single atoms, registry keys and tuples with commas (empty parts included)."""
    word = st.one_of(atoms, st.sampled_from(valid_words))
    tuples = st.lists(word, min_size=0, max_size=4).map(",".join)
    return st.one_of(word, word, tuples, st.lists(word, max_size=3).map(lambda xs: ", ,".join(xs)))


def _valid_words() -> list[str]:
    from ablate.registry.keys import REGISTRIES, load_all

    load_all()
    words = [k for r in REGISTRIES.values() for k in r.keys()]
    return words + ["nonoverlap", "sliding", "passkey", "multikey", "tokens", "flops", "time", "factorial", "oat",
                    "modern", "original", "preset", "bf16", "fp16", "float32", "bfloat16", "kernel", "decode",
                    "fwd", "bwd", "gqa", "mqa", "mha", "topics", "stdlib", "base", "norm=layernorm,rmsnorm"]


WORDS = _valid_words()


def _typed(tp) -> st.SearchStrategy[str]:
    """Plausible text for a field of type ``tp`` (to reach accepted configs, not only refusals)."""
    tp, optional = _strip_optional(tp)
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        n = (0, 4) if Ellipsis in typing.get_args(tp) else (len(args), len(args))
        out = st.lists(_typed(args[0]), min_size=n[0], max_size=n[1]).map(",".join)
    elif tp is bool:
        out = st.sampled_from(BOOL_WORDS)
    elif tp is int:
        out = st.integers(min_value=-2, max_value=80).map(str)
    elif tp is float:
        out = st.one_of(st.floats(min_value=-0.5, max_value=1.5).map(_number_text),
                        st.floats(min_value=0, max_value=1e5).map(_number_text))
    else:
        out = st.sampled_from(WORDS)
    return st.one_of(out, st.sampled_from(NONE_WORDS)) if optional else out


def _leaf_types(cfg, prefix=""):
    hints = typing.get_type_hints(type(cfg))
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_leaf_types(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = hints[f.name]
    return out


def items(paths: list[str], base=None) -> st.SearchStrategy[str]:
    kv = st.tuples(keys(paths), values(WORDS)).map(lambda t: f"{t[0]}={t[1]}")
    out = [kv, kv, kv, st.text(max_size=16)]  # some without "="
    if base is not None:
        types_ = _leaf_types(base)
        typed = st.sampled_from(sorted(types_)).flatmap(lambda k: _typed(types_[k]).map(lambda v: f"{k}={v}"))
        out += [typed] * 4
    return st.one_of(*out)


# ---------------------------------------------------------------------------------------------------------------
# The property

def _numbers(cfg, prefix=""):
    """(path, value, declared element type) of every int/float (and tuple element) in a config."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _numbers(v, f"{prefix}{f.name}.")
            continue
        tp, _ = _strip_optional(hints[f.name])
        if typing.get_origin(tp) is tuple:
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            if not all(a in (int, float) for a in args):
                continue
            for i, x in enumerate(v):
                yield f"{prefix}{f.name}[{i}]", x, args[min(i, len(args) - 1)]
        elif tp in (int, float):
            yield prefix + f.name, v, tp


def check_outcome(make, base) -> str:
    """Run ``make()``; "ok" for a config of ``base``'s type with finite, in-range numbers, "refused" for a one-line
    AblateError. Anything else fails the test."""
    try:
        cfg = make()
    except AblateError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "\r" not in msg, f"not one line: {msg!r}"
        assert len(msg) < 4000, f"message too long ({len(msg)} chars)"
        return "refused"
    assert type(cfg) is type(base), type(cfg)
    for path, v, tp in _numbers(cfg):
        if v is None:
            continue
        assert not isinstance(v, bool) and isinstance(v, tp if tp is int else (int, float)), (path, v, tp)
        if isinstance(v, float):
            assert math.isfinite(v), (path, v)
    check_fields(cfg)  # every range (and the model shape rules) holds in what was accepted
    return "ok"


def _fuzz(name: str, base, make, paths: list[str], n: int, overrides_per_case: int = 3) -> Counter:
    counts: Counter = Counter()

    @_settings(n)
    @given(st.lists(items(paths, base), min_size=1, max_size=overrides_per_case))
    def run(overrides):
        counts[check_outcome(lambda: make(overrides), base)] += 1

    run()
    COUNTS[name] = sum(counts.values())
    print(f"\n{name}: {sum(counts.values())} cases ({counts['ok']} accepted, {counts['refused']} refused)")
    return counts


@pytest.mark.parametrize("suite", SUITES)
def test_fuzz_apply_overrides_on_micro_preset(suite):
    base = SUITES[suite].PRESETS["micro"]
    counts = _fuzz(f"apply_overrides[{suite}]", base, lambda ov: apply_overrides(base, ov), _all_paths(base), 300)
    assert counts["ok"] > 0 and counts["refused"] > 0, counts  # the strategies reach both outcomes


@pytest.mark.parametrize("suite", SUITES)
def test_fuzz_resolve_micro(suite):
    """The same through the suite's own resolve(): its aliases (latency model.*, training grid=) and checks."""
    mod = SUITES[suite]
    base = mod.PRESETS["micro"]
    paths = _all_paths(base) + (["model." + f.name for f in dataclasses.fields(base.train.model)] if suite == "latency"
                                else ["grid"] if suite == "training" else [])
    counts = _fuzz(f"resolve[{suite}]", base, lambda ov: mod.resolve("micro", ov), paths, 150)
    assert counts["ok"] > 0 and counts["refused"] > 0, counts


@pytest.mark.parametrize("suite", SUITES)
def test_fuzz_single_numeric_settings(suite):
    """Every numeric key with a number-ish value (one override): the densest route to NaN, inf, overflow, signs."""
    base = SUITES[suite].PRESETS["micro"]
    numeric = [p for p, _, _ in _numbers(base)]
    paths = sorted({p.split("[")[0] for p in numeric})
    number = st.one_of(st.sampled_from(NUMBER_WORDS), st.floats(allow_nan=True, allow_infinity=True).map(_number_text),
                       st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str))
    value = st.one_of(number, st.lists(number, min_size=0, max_size=3).map(",".join))
    counts: Counter = Counter()

    @_settings(300)
    @given(st.sampled_from(paths), value)
    def run(key, v):
        counts[check_outcome(lambda: apply_overrides(base, [f"{key}={v}"]), base)] += 1

    run()
    COUNTS[f"numeric[{suite}]"] = sum(counts.values())
    print(f"\nnumeric[{suite}]: {sum(counts.values())} cases ({counts['ok']} accepted, {counts['refused']} refused)")
    assert counts["ok"] > 0 and counts["refused"] > 0, counts


# ---------------------------------------------------------------------------------------------------------------
# The checker itself can fail (a property that cannot fail is no test).

def test_checker_catches_what_it_must():
    from ablate.core.config import ModelConfig

    base = EX.PRESETS["micro"]
    train = dataclasses.replace(base.train)
    object.__setattr__(train, "lr", float("nan"))  # past any __post_init__: what a broken parser would produce
    with pytest.raises(AssertionError):
        check_outcome(lambda: dataclasses.replace(base, train=train), base)
    with pytest.raises(AssertionError):  # a wrong result type
        check_outcome(lambda: ModelConfig(), base)
    with pytest.raises(AssertionError):  # a multi-line message
        check_outcome(lambda: (_ for _ in ()).throw(AblateError("two\nlines")), base)
    with pytest.raises(ValueError):  # a foreign exception escapes (fails the property)
        check_outcome(lambda: (_ for _ in ()).throw(ValueError("boom")), base)
    assert check_outcome(lambda: base, base) == "ok"
