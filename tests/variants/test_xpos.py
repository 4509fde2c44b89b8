"""``xpos`` against a float64 transcription of microsoft/torchscale's ``XPOS`` (``xpos_relative_position.py``):
interleaved rotation, ``duplicate_interleave``'d scale, positions centred on the length, ``downscale`` for keys.
Ours rotates half-split pairs and does not centre; both cancel in a score, so the scores must agree when the
reference gets the same vectors with their dims interleaved. Fresh random inputs each run (``ABLATE_TEST_SEED``)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.core.model import Transformer
from ablate.registry.keys import POSITION, load_all
from ablate.variants.positions import build_position
from ablate.variants.xpos import XPOS_SCALE_BASE, XPos

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64
load_all()
CFG = ModelConfig(vocab_size=29, d_model=64, n_layers=2, n_heads=2, ffn_mult=2.0, train_len=16, max_len=256,
                  position="xpos")


def _ts_xpos(x: torch.Tensor, offset: int = 0, downscale: bool = False, scale_base: float = 512.0) -> torch.Tensor:
    """torchscale XPOS.forward on x (N, T, d), float64."""
    d = x.shape[-1]
    zeta = (torch.arange(0, d, 2, dtype=F64) + 0.4 * d) / (1.4 * d)
    length = x.shape[1]
    min_pos = -(length + offset) // 2
    max_pos = length + offset + min_pos
    scale = zeta ** (torch.arange(min_pos, max_pos, 1, dtype=F64) / scale_base)[:, None]
    n, dim = scale.shape  # fixed_pos_embedding(scale)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, dtype=F64) / dim))
    ang = torch.arange(0, n, dtype=F64)[:, None] * inv_freq[None, :]
    sin, cos = torch.sin(ang), torch.cos(ang)
    if scale.shape[0] > length:
        scale, sin, cos = scale[-length:], sin[-length:], cos[-length:]
    if downscale:
        scale = 1 / scale
    sin, cos = (torch.repeat_interleave(t * scale, 2, dim=-1) for t in (sin, cos))  # duplicate_interleave
    rot = torch.stack((-x[:, :, 1::2], x[:, :, ::2]), dim=-1).flatten(-2)  # rotate_every_two
    return x * cos + rot * sin


def _interleave(x: torch.Tensor) -> torch.Tensor:
    """Half-split pairs (i, i + d/2) -> interleaved pairs (2i, 2i+1)."""
    d = x.shape[-1]
    return torch.stack((x[..., :d // 2], x[..., d // 2:]), dim=-1).flatten(-2)


def test_registered_as_a_parameter_free_rotary_position():
    e = POSITION["xpos"]
    assert e.supports["kind"] == "rotary" and not e.supports["params"] and "torchscale" in e.paper
    assert isinstance(build_position("xpos", CFG), XPos) and XPos.scale_base == XPOS_SCALE_BASE == 512


@pytest.mark.parametrize("scale_base", [512.0, 8.0])
def test_scores_match_torchscale_xpos(scale_base, monkeypatch):
    monkeypatch.setattr(XPos, "scale_base", scale_base)  # a small base makes the decay large enough to see
    torch.manual_seed(SEED % 2**31)
    pos = build_position("xpos", CFG)
    t, d = 37, CFG.head_dim
    q, k = torch.randn(3, 1, t, d, dtype=F64), torch.randn(3, 1, t, d, dtype=F64)
    ours = pos.rotate_q(q, 0, t) @ pos.rotate_k(k, 0, t).transpose(-1, -2)
    ref = _ts_xpos(_interleave(q[:, 0]), 0, False, scale_base) @ _ts_xpos(_interleave(k[:, 0]), 0, True,
                                                                        scale_base).transpose(-1, -2)
    torch.testing.assert_close(ours[:, 0], ref, rtol=1e-10, atol=1e-10, msg=lambda m: f"{NOTE} {m}")
    rope = build_position("rope", replace(CFG, position="rope"))
    plain = rope.rotate(q, 0, t) @ rope.rotate(k, 0, t).transpose(-1, -2)
    assert not torch.allclose(ours, plain, atol=1e-6)  # the scale is there


def test_scores_depend_on_the_distance_only_and_offsets_match_the_full_sequence():
    torch.manual_seed((SEED + 1) % 2**31)
    pos = build_position("xpos", CFG)
    d = CFG.head_dim
    q, k = torch.randn(d, dtype=F64).expand(1, 1, 40, d), torch.randn(d, dtype=F64).expand(1, 1, 40, d)
    s = pos.rotate_q(q, 0, 40) @ pos.rotate_k(k, 0, 40).transpose(-1, -2)
    torch.testing.assert_close(s[0, 0, 30, 20], s[0, 0, 12, 2], rtol=1e-9, atol=1e-12)
    x = torch.randn(2, 2, 20, d, dtype=F64)
    for fn in (pos.rotate_q, pos.rotate_k):
        torch.testing.assert_close(fn(x[:, :, 7:], 7, 20), fn(x, 0, 20)[:, :, 7:], rtol=1e-12, atol=1e-12)


def test_model_decodes_like_its_full_forward():
    torch.manual_seed((SEED + 2) % 2**31)
    model = Transformer(CFG).double().eval()
    idx = torch.randint(0, CFG.vocab_size, (2, 15))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = torch.cat([model(idx[:, :6], cache)] + [model(idx[:, i:i + 1], cache) for i in range(6, 15)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
