"""Config presets, --set overrides and validation messages."""

import re
from dataclasses import FrozenInstanceError, dataclass, field, replace

import pytest

from ablate.core.config import (
    MODEL_PRESETS,
    ModelConfig,
    apply_overrides,
    flatten,
    model_preset,
)
from ablate.errors import ConfigError, UnknownKeyError
from ablate.core.validate import validate_model


def test_frozen_and_replace():
    base = model_preset("tiny")
    with pytest.raises(FrozenInstanceError):
        base.position = "alibi"  # type: ignore[misc]
    assert replace(base, position="alibi").position == "alibi"
    assert base.position == "rope"


def test_presets_validate():
    for name, cfg in MODEL_PRESETS.items():
        validate_model(cfg)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown model preset 'huge'; valid: micro, tiny"):
        model_preset("huge")


@dataclass(frozen=True)
class _Eval:
    mode: str = "nonoverlapping"
    stride: int | None = None
    factors: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Suite:
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: _Eval = field(default_factory=_Eval)
    steps: int = 10
    lr: float = 1e-3
    passkey: bool = False


def test_overrides_nested_and_typed():
    cfg = apply_overrides(_Suite(), ["model.position=alibi", "eval.stride=32", "steps=1e3", "lr=3e-4",
                                     "passkey=true", "eval.factors=1,4,16", "model.n_kv_heads=none"])
    assert cfg.model.position == "alibi" and cfg.eval.stride == 32 and cfg.steps == 1000
    assert cfg.lr == 3e-4 and cfg.passkey is True and cfg.eval.factors == (1, 4, 16)
    assert cfg.model.n_kv_heads is None
    assert flatten(cfg)["eval.factors"] == [1, 4, 16]


@pytest.mark.parametrize("item, message", [
    ("model.postion=alibi", "unknown setting 'model.postion'; valid: model.vocab_size"),
    ("steps=many", "steps: expected an integer, got 'many'"),
    ("passkey=maybe", "passkey: expected true/false"),
    ("eval=3", "needs a sub-key"),
    ("noequals", "is not key=value"),
])
def test_override_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(_Suite(), [item])


@pytest.mark.parametrize("changes, message", [
    (dict(attention="linear", position="alibi"), "position 'alibi' adds a bias to attention scores"),
    (dict(attention="linear", position="t5_bias"), "which attention 'linear' cannot take"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads=3 must divide n_heads=4"),
    (dict(d_model=130, n_heads=4), "not divisible by n_heads"),
    (dict(attention="sliding_window"), "needs a window size"),
    (dict(attention="linear", window=8), "has no sliding-window mode"),
    (dict(window=8, causal=False), "causal models only"),
    (dict(norm_placement="sandwich"), "unknown norm_placement 'sandwich'; valid: pre, post"),
    (dict(d_model=12, n_heads=4), "needs an even head_dim"),
])
def test_invalid_combinations_rejected(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate_model(replace(ModelConfig(), **changes))


@pytest.mark.parametrize("field_, value, axis", [
    ("attention", "flash3", "attention"), ("position", "xpos2", "position"),
    ("norm", "batchnorm", "norm"), ("activation", "swish", "activation")])
def test_unknown_keys(field_, value, axis):
    with pytest.raises(UnknownKeyError, match=f"unknown {axis} '{value}'; valid: "):
        validate_model(replace(ModelConfig(), **{field_: value}))


# ---------------------------------------------------------------------------------------------------------------
# Ranges: every number a suite exposes to --set is finite and in a range that makes sense, refused in one line.

import math  # noqa: E402
import typing  # noqa: E402

import ablate.suites.extrapolation as EX  # noqa: E402
import ablate.suites.latency as LAT  # noqa: E402
import ablate.suites.training as TR  # noqa: E402

from ablate.core.config import (  # noqa: E402
    RANGES,
    Range,
    _strip_optional,
    check_fields,
    check_value,
    range_of,
)
from ablate.plan.grid import parse_axes  # noqa: E402

SUITE_PRESETS = {"extrapolation": EX.PRESETS["micro"], "training": TR.PRESETS["micro"], "latency": LAT.PRESETS["micro"]}


def _numeric_fields(cfg, prefix=""):
    """(dotted path, owning class, field name, declared type, element kind) of every number / tuple of numbers."""
    import dataclasses

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _numeric_fields(v, f"{prefix}{f.name}.")
            continue
        tp, _ = _strip_optional(hints[f.name])
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] if typing.get_origin(tp) is tuple else [tp]
        if args and all(a in (int, float) for a in args):
            yield prefix + f.name, type(cfg), f.name, hints[f.name], args[0]


ALL_NUMERIC = [(suite, *row) for suite, cfg in SUITE_PRESETS.items() for row in _numeric_fields(cfg)]


def test_every_number_a_suite_exposes_has_a_range():
    """A numeric setting added without a range fails here (list it in ablate.core.config.RANGES)."""
    missing = sorted({f"{cls.__name__}.{name}" for _, _, cls, name, _, _ in ALL_NUMERIC if range_of(cls, name) is None})
    assert not missing, f"numeric settings without a range in ablate.core.config.RANGES: {missing}"
    assert len(ALL_NUMERIC) > 100  # the walk reaches every suite's nested configs


def _width(tp) -> int:
    """How many comma-separated values a setting of type ``tp`` takes in a test (2 for a pair, else 1)."""
    base = _strip_optional(tp)[0]
    args = typing.get_args(base) if typing.get_origin(base) is tuple else ()
    return len(args) if args and Ellipsis not in args else 1


FLOAT_SETTINGS = sorted({(s, p, tp) for s, p, _, _, tp, kind in ALL_NUMERIC if kind is float}, key=str)


@pytest.mark.parametrize("suite, path, tp", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"])
def test_no_float_setting_takes_nan_or_inf(suite, path, tp, value):
    pattern = rf"^{re.escape(path)} must be (a )?finite numbers?.*, got .*(nan|inf)"
    with pytest.raises(ConfigError, match=pattern) as exc:
        apply_overrides(SUITE_PRESETS[suite], [f"{path}={','.join([value] * _width(tp))}"])
    assert "\n" not in str(exc.value)


def _outside(rng: Range, kind: type) -> list:
    step = 1 if kind is int else 1e-9
    out = []
    if rng.lo is not None:
        out.append(rng.lo if rng.lo_open else rng.lo - step)
    if rng.hi is not None:
        out.append(rng.hi if rng.hi_open else rng.hi + step)
    return out


def _inside(rng: Range, kind: type) -> list:
    step = 1 if kind is int else 1e-9
    out = []
    if rng.lo is not None:
        out.append(rng.lo + step if rng.lo_open else rng.lo)
    if rng.hi is not None:
        out.append(rng.hi - step if rng.hi_open else rng.hi)
    return [kind(v) for v in out]


@pytest.mark.parametrize("suite, path, cls, name, tp, kind", ALL_NUMERIC, ids=[f"{r[0]}:{r[1]}" for r in ALL_NUMERIC])
def test_range_boundaries(suite, path, cls, name, tp, kind):
    """Just outside each bound: refused by apply_overrides in one line naming the setting and its range; on the
    bound (or just inside an open one): accepted by the range check."""
    rng = range_of(cls, name)
    is_tuple = typing.get_origin(_strip_optional(tp)[0]) is tuple
    width = _width(tp)
    for bad in _outside(rng, kind):
        text = repr(kind(bad)) if kind is float else str(int(bad))
        with pytest.raises(ConfigError, match=rf"^{re.escape(path)} must be .*{re.escape(rng.describe())}") as exc:
            apply_overrides(SUITE_PRESETS[suite], [f"{path}={','.join([text] * width)}"])
        assert "\n" not in str(exc.value)
    for good in _inside(rng, kind):
        check_value(path, tuple([good] * width) if is_tuple else good, tp, rng)
    if is_tuple and rng.nonempty:
        with pytest.raises(ConfigError, match=rf"^{re.escape(path)} must list at least one value"):
            apply_overrides(SUITE_PRESETS[suite], [f"{path}="])


@pytest.mark.parametrize("module", [EX, TR])
@pytest.mark.parametrize("items, message", [
    (["train.lr=nan"], "train.lr must be a finite number > 0, got nan"),
    (["train.lr=-1"], "train.lr must be a finite number > 0, got -1.0"),
    (["train.lr=0"], "train.lr must be a finite number > 0, got 0.0"),
    (["train.lr=1e999"], "train.lr must be a finite number > 0, got inf (from '1e999')"),
    (["model.dropout=1.5"], "model.dropout must be a finite number in [0, 1), got 1.5"),
    (["model.d_model=128", "model.n_heads=3"],
     "model.d_model=128 is not divisible by model.n_heads=3; valid model.n_heads for this d_model: 1, 2, 4, 8, 16, 32, "
     "64, 128"),
    (["model.n_kv_heads=3"],
     "model.n_kv_heads=3 must divide model.n_heads=2 (MHA: n_heads, MQA: 1); valid: 1, 2 or none"),
    (["model.window=0"], "model.window must be an integer >= 1 or none, got 0"),
    (["model.rope_base=1"], "model.rope_base must be a finite number > 1, got 1.0"),
    (["model.norm_eps=0"], "model.norm_eps must be a finite number > 0, got 0.0"),
    (["model.ffn_mult=0.01"], "model.ffn_mult=0.01 gives an FFN of width 0 at d_model=32"),
    (["train.betas=0.9"], "train.betas takes exactly 2 comma-separated values, got 1 ('0.9')"),
    (["train.betas=0.9,1"], "train.betas must be finite numbers in [0, 1), got 0.9,1.0"),
    (["train.seed=-1"], "train.seed must be an integer in [0, 4294967295], got -1"),
    (["train.steps=1e30"], "train.steps must be an integer >= 1 and < 2^63, got 1e30"),
    (["data.val_frac=0"], "data.val_frac must be a finite number in (0, 1), got 0.0"),
])
def test_suites_refuse_settings_at_resolve(module, items, message):
    with pytest.raises(ConfigError) as exc:
        module.resolve("micro", items)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_suites_accept_changed_shapes_together():
    cfg = EX.resolve("micro", ["model.d_model=96", "model.n_heads=3"])
    assert (cfg.model.d_model, cfg.model.n_heads) == (96, 3)
    assert TR.resolve("micro", ["train.lr=1e-2"]).train.lr == 1e-2


def test_latency_ranges_reach_nested_models_and_sweeps():
    with pytest.raises(ConfigError, match=r"^train.model.dropout must be a finite number in \[0, 1\), got nan$"):
        LAT.resolve("micro", ["model.dropout=nan"])  # model.* sets both model parts
    with pytest.raises(ConfigError, match=r"^decode.contexts must be integers >= 1, got 16,0$"):
        LAT.resolve("micro", ["decode.contexts=16,0"])
    with pytest.raises(ConfigError, match=r"^kernels.rep_ms must be a finite number > 0, got -5.0$"):
        LAT.resolve("micro", ["kernels.rep_ms=-5"])


def test_grid_axis_values_are_range_checked():
    with pytest.raises(ConfigError, match=r"^grid axis train.lr: lr must be a finite number > 0, got nan$"):
        parse_axes("train.lr=1e-3,nan")
    with pytest.raises(ConfigError, match=r"^grid axis dropout: dropout must be a finite number in \[0, 1\), got 2.0$"):
        parse_axes("dropout=0.1,2")
    # A bare ModelConfig gets field ranges only: the grid probes each axis value on a default model, so a shape rule
    # (n_heads | d_model) would judge it against the wrong width; the points are checked whole (validate_model).
    assert [a.values for a in parse_axes("n_heads=3,6")] == [("3", "6")]
    assert apply_overrides(ModelConfig(), ["n_heads=3"]).n_heads == 3
    with pytest.raises(ConfigError, match="not divisible by n_heads=3"):
        validate_model(replace(ModelConfig(), n_heads=3))


@pytest.mark.parametrize("changes, message", [
    (dict(dropout=float("nan")), "dropout must be a finite number in [0, 1), got nan"),
    (dict(rope_scale=float("inf")), "rope_scale must be a finite number > 0, got inf"),
    (dict(rope_scale=0.0), "rope_scale must be a finite number > 0, got 0.0"),
    (dict(init_std=-0.02), "init_std must be a finite number > 0, got -0.02"),
    (dict(n_layers=0), "n_layers must be an integer >= 1, got 0"),
    (dict(vocab_size=0), "vocab_size must be an integer >= 1, got 0"),
    (dict(t5_max_distance=0), "t5_max_distance must be an integer >= 1 or none, got 0"),
])
def test_validate_model_applies_the_same_ranges(changes, message):
    """validate_model (a ModelConfig built in code, not through --set) uses the one table of ranges."""
    with pytest.raises(ConfigError) as exc:
        validate_model(replace(ModelConfig(), **changes))
    assert str(exc.value) == message


def test_coerce_parses_and_refuses():
    cfg = apply_overrides(_Suite(), ["steps=1e3", "lr=-3e-4"])  # _Suite has no RANGES entry: sign is free ...
    assert cfg.steps == 1000 and cfg.lr == -3e-4
    for item in ("lr=nan", "lr=inf", "lr=-Infinity", "lr=1e999"):  # ... but never a non-finite float
        with pytest.raises(ConfigError, match=r"^lr must be a finite number, got"):
            apply_overrides(_Suite(), [item])
    with pytest.raises(ConfigError, match=r"^steps must be an integer in \[-2\^63, 2\^63\), got 1e19$"):
        apply_overrides(_Suite(), ["steps=1e19"])
    with pytest.raises(ConfigError, match="steps: expected an integer, got 'nan'"):
        apply_overrides(_Suite(), ["steps=nan"])
    assert apply_overrides(_Suite(), ["eval.factors=1, 4 ,16"]).eval.factors == (1, 4, 16)


def test_field_metadata_range_takes_precedence():
    @dataclass(frozen=True)
    class _Meta:
        rate: float = field(default=0.5, metadata={"range": Range(0, 1)})

    assert apply_overrides(_Meta(), ["rate=1"]).rate == 1.0
    with pytest.raises(ConfigError, match=r"^rate must be a finite number in \[0, 1\], got 1.5$"):
        apply_overrides(_Meta(), ["rate=1.5"])


def test_check_fields_on_presets_and_ranges_table():
    for cfg in SUITE_PRESETS.values():
        check_fields(cfg)
    for cfg in MODEL_PRESETS.values():
        check_fields(cfg)
    assert all(isinstance(r, Range) for table in RANGES.values() for r in table.values())
    assert not math.isnan(EX.resolve("micro").train.lr)


@pytest.mark.parametrize("suite", ["extrapolation", "training"])
def test_cli_refuses_nan_lr_before_anything_is_written(suite, tmp_path, capsys):
    from ablate.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["run", "--suite", suite, "--preset", "micro", "--device", "cpu", "--out", str(out),
              "--set", "train.lr=nan"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "ablate: error: train.lr must be a finite number > 0, got nan"
    assert not out.exists() or not any(out.rglob("*.jsonl"))  # no rows, error or otherwise


def test_suite_models_are_named_model_presets():
    """Every suite preset's model is a named model flavor (ablate.core.config.MODEL_PRESETS), adjusted: its size (width,
    depth) is one of the flavors', so model sizes are declared once."""
    import ablate.suites.extrapolation as ex
    import ablate.suites.latency as lat
    import ablate.suites.training as tr

    sizes = {(m.d_model, m.n_layers) for m in MODEL_PRESETS.values()}
    models = [p.model for p in list(ex.PRESETS.values()) + list(tr.PRESETS.values())]
    models += [m for p in lat.PRESETS.values() for m in (p.train.model, p.decode.model)]
    assert models and all((m.d_model, m.n_layers) in sizes for m in models)
