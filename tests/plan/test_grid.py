"""ablate.plan.grid: the default original↔modern grid, factorial / one-at-a-time axes, one-line parse errors."""

from dataclasses import fields, replace

import pytest

from ablate.core.config import ModelConfig
from ablate.errors import AblateError, ConfigError
from ablate.plan.grid import (CHANGES, GridSpec, build_grid, default_grid, parse_axes, select, to_override, valid_axes)

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
    # One embedding treatment for every point (x sqrt(d_model)): the position change carries no second change.
    assert all(p.model.scale_embeddings for p in pts)
    assert not any(p.model.scale_embeddings for p in default_grid(MODEL, GridSpec(gqa_kv_heads=2, window=4,
                                                                                  scale_embeddings=False)))

    def fields_of(c):  # GQA points get the FFN widened to MHA's parameter count
        return {c.field, "ffn_mult"} if c.field == "n_kv_heads" else {c.field}

    assert _diff(o, m) == {f for c in CHANGES for f in fields_of(c)}
    assert "FFN width" in by["original+gqa"].change and "FFN width" in by["modern-gqa→mha"].change
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
    assert [p.name for p in pre] == ["preset", "preset+gelu"]
    assert pre[0].model == replace(MODEL, scale_embeddings=True)  # the grid's one embedding treatment


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


@pytest.mark.parametrize("activation,bias", [("relu", False), ("swiglu", False), ("geglu", True)])
def test_gqa_points_have_the_parameters_of_mha_within_one_percent(activation, bias):
    """GQA vs MHA at equal parameters: the K/V parameters GQA saves go to a wider FFN (Ainslie et al. compare equal
    sizes); without the widening GQA has ~8% fewer parameters at these sizes."""
    from ablate.plan.grid import EQUAL_PARAMS_TOL, ffn_width, param_count

    model = ModelConfig(d_model=96, n_layers=2, n_heads=6, train_len=16, max_len=64, activation=activation,
                        bias=bias)
    for kv in (1, 2, 3):
        pts = {p.name: p for p in default_grid(replace(model, activation=activation),
                                               GridSpec(gqa_kv_heads=kv, window=4))}
        gqa, mha = pts["original+gqa"].model, pts["original"].model
        assert gqa.n_kv_heads == kv and ffn_width(gqa) > ffn_width(mha)
        assert abs(param_count(gqa) / param_count(mha) - 1) < EQUAL_PARAMS_TOL
        assert abs(param_count(pts["modern"].model) / param_count(pts["modern-gqa→mha"].model) - 1) < EQUAL_PARAMS_TOL
    plain = default_grid(model, GridSpec(gqa_kv_heads=1, window=4, gqa_equal_params=False))
    by = {p.name: p.model for p in plain}
    assert param_count(by["original+gqa"]) < 0.99 * param_count(by["original"])  # what the widening fixes


def test_scale_embeddings_as_an_axis_is_its_own_factor():
    pts = build_grid(MODEL, GridSpec(axes="scale_embeddings=false,true;position=rope,sinusoidal"))
    assert [(p.model.scale_embeddings, p.model.position) for p in pts] == \
        [(False, "rope"), (False, "sinusoidal"), (True, "rope"), (True, "sinusoidal")]
    assert "scale_embeddings=true" in pts[2].change
