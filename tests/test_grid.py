"""ablate.grid: the default original↔modern grid, factorial / one-at-a-time axes, one-line parse errors."""

from dataclasses import fields, replace

import pytest

from ablate.config import ModelConfig
from ablate.errors import AblateError, ConfigError
from ablate.grid import (CHANGES, GridSpec, build_grid, default_grid, parse_axes, select, to_override, valid_axes)

MODEL = ModelConfig(d_model=32, n_layers=1, n_heads=4, train_len=16, max_len=64)


def _diff(a: ModelConfig, b: ModelConfig) -> set[str]:
    return {f.name for f in fields(ModelConfig) if getattr(a, f.name) != getattr(b, f.name)}


def test_default_grid_names_and_one_change_each():
    pts = default_grid(MODEL, GridSpec(gqa_kv_heads=2, window=4))
    names = [p.name for p in pts]
    assert names == ["original", "original+prenorm", "original+rmsnorm", "original+swiglu", "original+rope",
                     "original+gqa", "modern", "modern-prenorm→postnorm", "modern-rmsnorm→layernorm",
                     "modern-swiglu→relu", "modern-rope→sinusoidal", "modern-gqa→mha", "modern+sliding_window",
                     "modern+linear"]
    by = {p.name: p for p in pts}
    o, m = by["original"].model, by["modern"].model
    assert (o.norm, o.norm_placement, o.activation, o.position, o.n_kv_heads, o.attention, o.window) == \
        ("layernorm", "post", "relu", "sinusoidal", None, "sdpa", None)
    assert (m.norm, m.norm_placement, m.activation, m.position, m.n_kv_heads, m.attention) == \
        ("rmsnorm", "pre", "swiglu", "rope", 2, "sdpa")
    # Sinusoidal points scale token embeddings by sqrt(d_model) (Vaswani sec. 3.4): part of the position change.
    assert o.scale_embeddings and not m.scale_embeddings
    assert all(p.model.scale_embeddings == (p.model.position == "sinusoidal") for p in pts)

    def fields_of(c):
        return {c.field, "scale_embeddings"} if c.field == "position" else {c.field}

    assert _diff(o, m) == {f for c in CHANGES for f in fields_of(c)}
    for c in CHANGES:  # each change alone on original, each removed alone from modern
        assert _diff(by[f"original+{c.add}"].model, o) == fields_of(c)
        assert _diff(by[f"modern-{c.remove}"].model, m) == fields_of(c)
        assert by[f"original+{c.add}"].baseline == "original"
        assert by[f"modern-{c.remove}"].baseline == "modern"
    assert by["modern+sliding_window"].model.attention == "sliding_window"
    assert by["modern+sliding_window"].model.window == 4
    assert _diff(by["modern+linear"].model, m) == {"attention"}
    assert by["original"].baseline is None and by["modern"].baseline == "original"
    assert [p.index for p in pts] == list(range(len(pts)))
    # sizes come from the preset model
    assert all(p.model.d_model == 32 and p.model.train_len == 16 for p in pts)


def test_default_grid_automatic_gqa_and_window():
    pts = {p.name: p for p in default_grid(replace(MODEL, n_heads=8, d_model=64, train_len=64))}
    assert pts["modern"].model.n_kv_heads == 4  # n_heads // 2
    assert pts["modern+sliding_window"].model.window == 16  # train_len // 4


def test_factorial_axes_all_spellings():
    want = ["layernorm/relu", "layernorm/gelu", "layernorm/swiglu", "rmsnorm/relu", "rmsnorm/gelu",
            "rmsnorm/swiglu"]
    for spec in ("norm=layernorm,rmsnorm;activation=relu,gelu,swiglu",
                 "norm=layernorm,rmsnorm activation=relu,gelu,swiglu",
                 "model.norm=layernorm,rmsnorm ; activation=relu,gelu,swiglu"):
        pts = build_grid(MODEL, GridSpec(axes=spec))
        assert [p.name for p in pts] == want
    assert [a.key for a in parse_axes(["norm=layernorm,rmsnorm", "activation=relu,gelu,swiglu"])] == \
        ["norm", "activation"]
    pts = build_grid(MODEL, GridSpec(axes="norm=layernorm,rmsnorm;activation=relu,gelu,swiglu"))
    assert pts[0].baseline is None and all(p.baseline == "layernorm/relu" for p in pts[1:])
    assert pts[5].model.norm == "rmsnorm" and pts[5].model.activation == "swiglu"
    assert pts[5].model.position == "rope" and pts[5].model.norm_placement == "pre"  # base: modern
    assert pts[5].settings == {"norm": "rmsnorm", "activation": "swiglu"}
    assert pts[4].change == "norm=rmsnorm, activation=gelu"


def test_factorial_numeric_and_training_axes():
    pts = build_grid(MODEL, GridSpec(axes="norm_placement=post,pre train.lr=1e-3,1e-2 n_kv_heads=none,1",
                                     base="original"))
    assert len(pts) == 8
    p = next(p for p in pts if p.name == "pre/lr=1e-2/n_kv_heads=1")
    assert p.model.norm_placement == "pre" and p.model.n_kv_heads == 1 and p.model.norm == "layernorm"
    assert p.train_overrides == ("lr=1e-2",)
    # a sliding-window value gets its window
    sw = build_grid(MODEL, GridSpec(axes="attention=sdpa,sliding_window", window=5))
    assert [q.model.window for q in sw] == [None, 5]


def test_one_at_a_time_axes():
    pts = build_grid(MODEL, GridSpec(axes="activation=swiglu,gelu,geglu;position=rope,alibi;train.lr=0.01",
                                     mode="oat", base="modern"))
    assert [p.name for p in pts] == ["modern", "modern+gelu", "modern+geglu", "modern+alibi", "modern+lr=0.01"]
    assert all(p.baseline == "modern" for p in pts[1:])
    assert _diff(pts[1].model, pts[0].model) == {"activation"}
    assert pts[4].model == pts[0].model and pts[4].train_overrides == ("lr=0.01",)
    pre = build_grid(MODEL, GridSpec(axes="activation=gelu", mode="oat", base="preset"))
    assert [p.name for p in pre] == ["preset", "preset+gelu"] and pre[0].model == MODEL


def test_select_and_to_override():
    pts = default_grid(MODEL)
    assert [p.name for p in select(pts, ["modern", "original"])] == ["original", "modern"]
    assert to_override(["norm=layernorm,rmsnorm", "activation=relu"]) == \
        "grid.axes=norm=layernorm,rmsnorm;activation=relu"
    assert to_override(["norm=layernorm,rmsnorm activation=relu"]) == \
        "grid.axes=norm=layernorm,rmsnorm;activation=relu"


@pytest.mark.parametrize("spec, match", [
    ("foo=1,2", "unknown grid axis 'foo'; valid: vocab_size, d_model"),
    ("lr=1e-3", "training settings take the train. prefix (train.lr)"),
    ("norm", "grid axis 'norm' is not key=v1,v2 (e.g. norm=layernorm,rmsnorm); valid keys: "),
    ("norm=", "grid axis norm has no values"),
    ("norm=layernorm,nope", "unknown norm 'nope'; valid: layernorm, rmsnorm"),
    ("activation=swiglu,relu3", "unknown activation 'relu3'; valid: relu, gelu"),
    ("n_kv_heads=two", "grid axis n_kv_heads: n_kv_heads: expected an integer, got 'two'"),
    ("train.lr=fast", "grid axis train.lr: lr: expected a number, got 'fast'"),
    ("norm=layernorm;norm=rmsnorm", "grid axis norm given twice"),
    ("norm=rmsnorm,rmsnorm", "grid axis norm repeats a value"),
    ("", "empty grid"),
])
def test_parse_errors_are_one_line(spec, match):
    with pytest.raises(AblateError) as info:
        parse_axes(spec)
    msg = str(info.value)
    assert "\n" not in msg
    assert match in msg
    if "unknown grid axis" in match:
        assert "train.lr" in msg and "activation" in msg  # names the valid axes


@pytest.mark.parametrize("spec, match", [
    (GridSpec(axes="norm=rmsnorm", mode="all"), "unknown grid.mode 'all'; valid: factorial, oat"),
    (GridSpec(axes="norm=rmsnorm", base="llama"), "unknown grid.base 'llama'; valid: modern, original, preset"),
    (GridSpec(only=("modern", "gpt2")), "unknown grid point 'gpt2' in grid.only; valid: original, "),
    (GridSpec(window=-1), "grid.gqa_kv_heads and grid.window must be >= 0"),
])
def test_build_errors_are_one_line(spec, match):
    with pytest.raises(ConfigError) as info:
        build_grid(MODEL, spec)
    assert "\n" not in str(info.value) and match in str(info.value)


def test_valid_axes_cover_variant_slots_and_training():
    axes = valid_axes()
    for k in ("attention", "position", "norm", "norm_placement", "activation", "n_kv_heads", "window", "d_model",
              "train.lr", "train.warmup"):
        assert k in axes
