"""Config presets, --set overrides and validation messages."""

from dataclasses import FrozenInstanceError, dataclass, field, replace

import pytest

from ablate.config import MODEL_PRESETS, ModelConfig, apply_overrides, flatten, model_preset
from ablate.errors import ConfigError, UnknownKeyError
from ablate.validate import validate_model


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
    ("attention", "flash3", "attention"), ("position", "xpos", "position"),
    ("norm", "batchnorm", "norm"), ("activation", "swish", "activation")])
def test_unknown_keys(field_, value, axis):
    with pytest.raises(UnknownKeyError, match=f"unknown {axis} '{value}'; valid: "):
        validate_model(replace(ModelConfig(), **{field_: value}))
