"""Norms and FFN activations equal their formulas (float64, fresh random inputs)."""

import math

import pytest
import torch

from ablate.registry.keys import ACTIVATION, NORM, load_all
from ablate.variants.activations import build_ffn, glu_hidden
from ablate.variants.norms import build_norm

load_all()
D, HIDDEN = 24, 96


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))


def test_norm_keys():
    assert NORM.keys() == ["layernorm", "rmsnorm"]


def test_rmsnorm_formula():
    x = torch.randn(3, 5, D, dtype=torch.float64) * 3 + 1
    norm = build_norm("rmsnorm", D, 1e-6).double()
    _randomise(norm)
    expected = x / torch.sqrt((x * x).sum(-1, keepdim=True) / D + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    # RMSNorm does not centre: a shifted input gives a different output (LayerNorm would not).
    assert not torch.allclose(norm(x + 5), norm(x))


def test_layernorm_formula():
    x = torch.randn(3, 5, D, dtype=torch.float64) * 3 + 1
    norm = build_norm("layernorm", D, 1e-6).double()
    _randomise(norm)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    torch.testing.assert_close(norm(x), (x - mu) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias)


def test_rmsnorm_bf16_keeps_dtype_and_accuracy():
    x = torch.randn(4, D) * 10
    norm = build_norm("rmsnorm", D)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = norm.double()(x.double())
    assert ((out.double() - ref).norm() / ref.norm()) < 1e-2


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


FORMULAS = {
    "relu": lambda x: x.clamp(min=0),
    "gelu": _gelu,
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "relu2": lambda x: x.clamp(min=0) ** 2,
}
GLU_FORMULAS = {"swiglu": FORMULAS["silu"], "geglu": _gelu, "reglu": FORMULAS["relu"]}


def test_activation_keys():
    assert ACTIVATION.keys() == ["relu", "gelu", "silu", "relu2", "swiglu", "geglu", "reglu"]


@pytest.mark.parametrize("key", list(FORMULAS))
def test_plain_ffn_formula(key):
    ffn = build_ffn(key, D, HIDDEN, bias=True).double()
    _randomise(ffn)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    w1, b1, w2, b2 = ffn.up.weight, ffn.up.bias, ffn.down.weight, ffn.down.bias
    expected = FORMULAS[key](x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(ffn(x), expected)


@pytest.mark.parametrize("key", list(GLU_FORMULAS))
def test_glu_ffn_formula(key):
    ffn = build_ffn(key, D, HIDDEN).double()
    _randomise(ffn)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    w, v, w2 = ffn.gate.weight, ffn.up.weight, ffn.down.weight
    expected = (GLU_FORMULAS[key](x @ w.T) * (x @ v.T)) @ w2.T
    torch.testing.assert_close(ffn(x), expected)
    # Swapping gate and value changes the result: the activation is on the gate only.
    swapped = (GLU_FORMULAS[key](x @ v.T) * (x @ w.T)) @ w2.T
    assert not torch.allclose(ffn(x), swapped)


@pytest.mark.parametrize("key", list(FORMULAS) + list(GLU_FORMULAS))
def test_parameters_matched(key):
    """GLU FFNs use 2/3 of the hidden width, so every FFN has ~2 * d * hidden weights (Shazeer 2020)."""
    d, hidden = 96, 384
    n = sum(p.numel() for p in build_ffn(key, d, hidden).parameters())
    assert abs(n - 2 * d * hidden) <= 3 * d, (key, n)
    assert glu_hidden(384) == 256


def test_unknown_activation_lists_valid_keys():
    with pytest.raises(KeyError, match="unknown activation 'swish'; valid: relu, gelu"):
        build_ffn("swish", D, HIDDEN)


def test_duplicate_key_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        NORM.register("rmsnorm", description="again")(object)
