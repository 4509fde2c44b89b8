"""The reference model: every valid registry combination trains a step; KV-cache decoding equals full forwards."""

from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError, PositionRangeError, UnavailableError
from ablate.core.model import Transformer
from ablate.registry.keys import ATTENTION, POSITION, load_all
from ablate.core.validate import is_valid, validate_model, variant_grid
from ablate.variants.attention import layer_spec

load_all()
MICRO = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=4, n_kv_heads=2, ffn_mult=2.0,
                    train_len=8, max_len=64, window=None)
T = 8

GRID = list(variant_grid(MICRO))
VALID = [c for c in GRID if is_valid(c)[0]]
INVALID = [c for c in GRID if not is_valid(c)[0]]


def _id(c: ModelConfig) -> str:
    return f"{c.attention}-{c.position}-{c.norm}-{c.norm_placement}-{c.activation}"


def _cpu_trainable(cfg: ModelConfig) -> tuple[bool, str]:
    try:
        validate_model(cfg, "cpu", backward=True)
    except UnavailableError as exc:
        return False, str(exc)
    return True, ""


def test_grid_has_valid_and_invalid_parts():
    assert len(VALID) > 1000 and INVALID
    # Every attention, position, norm and activation key appears in at least one valid combination: of the GQA
    # model, or of the same model with one KV head per query head (latent attention refuses GQA).
    mha = [c for c in variant_grid(replace(MICRO, n_kv_heads=None)) if is_valid(c)[0]]
    for axis in ("attention", "position", "norm", "activation"):
        assert {getattr(c, axis) for c in VALID + mha} == {getattr(c, axis) for c in GRID}, axis


@pytest.mark.parametrize("cfg", VALID, ids=_id)
def test_every_valid_combination_trains(cfg):
    ok, reason = _cpu_trainable(cfg)
    if not ok and "no backward pass" in reason:  # e.g. flex on CPU: check the forward, skip the training step
        with torch.no_grad():
            logits = Transformer(cfg)(torch.randint(0, cfg.vocab_size, (2, T)))
        assert logits.shape == (2, T, cfg.vocab_size) and torch.isfinite(logits).all()
        pytest.skip(reason)
    if not ok:
        pytest.skip(reason)
    torch.manual_seed(0)
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, T))
    loss = model.loss(idx, torch.roll(idx, -1, 1))
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(32.0)).item()) < 1.0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.tok.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg", INVALID, ids=_id)
def test_every_invalid_combination_rejected_in_one_line(cfg):
    with pytest.raises(ConfigError) as info:
        Transformer(cfg)
    msg = str(info.value)
    assert "\n" not in msg and (cfg.attention in msg or cfg.position in msg)


def _decode_matches_prefix_forwards(cfg: ModelConfig, n: int = 12) -> None:
    """Token-by-token decoding with the cache gives the logits of a full forward over each prefix."""
    torch.manual_seed(int.from_bytes(__import__("os").urandom(4), "little"))
    model = Transformer(cfg).double().eval()
    with torch.no_grad():
        for p in model.pos.parameters():  # t5 bias starts at zero otherwise; make it matter
            p.normal_()
        idx = torch.randint(0, cfg.vocab_size, (2, n))
        cache = model.new_cache()
        # Prefill 5 tokens, then decode one at a time.
        steps = [model(idx[:, :5], cache)] + [model(idx[:, t:t + 1], cache) for t in range(5, n)]
        decoded = torch.cat(steps, dim=1)
        for t in range(n):
            full = model(idx[:, :t + 1])[:, -1]
            torch.testing.assert_close(decoded[:, t], full, rtol=1e-9, atol=1e-9, msg=f"position {t}")
        assert cache.length == n


CACHE_ATTENTIONS = ["naive", "sdpa", "linear"]


@pytest.mark.parametrize("position", POSITION.keys())
@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("attention", CACHE_ATTENTIONS)
def test_kv_cache_decoding_equals_full_forward(attention, position, kv_heads):
    # Dynamic NTK rescales every position once the sequence outgrows train_len; a cache keeps the hidden states
    # of earlier tokens as first computed (as transformers does), so the match is exact for one layer only.
    layers = 1 if position == "rope_dynamic_ntk" else 2
    cfg = replace(MICRO, attention=attention, position=position, n_kv_heads=kv_heads, n_layers=layers,
                  rope_scale=2.0, train_len=6)
    ok, reason = is_valid(cfg)
    if not ok:
        pytest.skip(reason)
    _decode_matches_prefix_forwards(cfg)


def test_kv_cache_with_sliding_window():
    _decode_matches_prefix_forwards(replace(MICRO, attention="sliding_window", window=3, position="alibi"))
    _decode_matches_prefix_forwards(replace(MICRO, attention="naive", window=4, position="rope"))


def test_kv_cache_bytes_closed_form():
    cfg = replace(MICRO, n_layers=3, n_heads=4, n_kv_heads=1)
    model = Transformer(cfg)
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 32, (2, 10)), cache)
    assert cache.nbytes() == 2 * cfg.n_layers * cfg.kv_heads * cfg.head_dim * 10 * 2 * 4
    assert cache.nbytes() == layer_spec(cfg.attention).cache_bytes(cfg, 10, 4, batch=2)  # what the spec states


def test_cache_needs_causal():
    model = Transformer(replace(MICRO, causal=False, position="sinusoidal"))
    with pytest.raises(ConfigError, match="causal"):
        model(torch.zeros(1, 4, dtype=torch.long), model.new_cache())


def test_bidirectional_sees_the_future():
    idx = torch.randint(0, 32, (1, T))
    for causal, changes in ((True, False), (False, True)):
        torch.manual_seed(0)
        model = Transformer(replace(MICRO, causal=causal, position="sinusoidal")).eval()
        changed = idx.clone()
        changed[0, -1] = (idx[0, -1] + 1) % 32
        with torch.no_grad():
            differs = not torch.allclose(model(idx)[0, 0], model(changed)[0, 0])
        assert differs == changes


def test_rope_model_evaluated_with_every_scaling():
    torch.manual_seed(0)
    model = Transformer(replace(MICRO, position="rope")).eval()
    idx = torch.randint(0, 32, (1, 32))
    with torch.no_grad():
        plain = model(idx)
        for key in ("rope_pi", "rope_ntk", "rope_yarn"):
            model.set_position(key, rope_scale=1.0)
            torch.testing.assert_close(model(idx), plain)
            model.set_position(key, rope_scale=4.0)
            assert not torch.allclose(model(idx), plain)
        model.set_position("rope_dynamic_ntk")
        torch.testing.assert_close(model(idx[:, :MICRO.train_len]), plain[:, :MICRO.train_len])


def test_learned_positions_cannot_be_swapped_or_exceeded():
    model = Transformer(replace(MICRO, position="learned", max_len=16))
    with pytest.raises(ConfigError, match="cannot swap position 'learned' for 'rope'"):
        model.set_position("rope")
    with pytest.raises(PositionRangeError, match="max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_glu_parameter_count_matches_plain():
    n = {act: Transformer(replace(MICRO, d_model=96, n_heads=4, activation=act)).num_params()
         for act in ("relu", "swiglu")}
    assert abs(n["relu"] - n["swiglu"]) / n["relu"] < 0.01


GPU_PAIRS = [(a, p) for a in ATTENTION.keys() for p in POSITION.keys()]


@pytest.mark.gpu
@pytest.mark.parametrize("attention, position", GPU_PAIRS, ids=[f"{a}-{p}" for a, p in GPU_PAIRS])
def test_every_combination_trains_on_gpu_bf16(attention, position):
    """Forward + backward under bf16 autocast on CUDA, for every attention x position that can run there."""
    cfg = replace(MICRO, d_model=128, n_heads=2, n_kv_heads=1, max_len=256, attention=attention, position=position,
                  window=32 if attention == "sliding_window" else None)
    try:
        validate_model(cfg, "cuda", backward=True)
    except (ConfigError, UnavailableError) as exc:
        pytest.skip(str(exc))
    model = Transformer(cfg).cuda()
    idx = torch.randint(0, cfg.vocab_size, (2, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(idx, torch.roll(idx, -1, 1))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
