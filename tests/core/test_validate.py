"""Memory estimates (closed form, a lower bound) and the check that refuses configurations that cannot fit."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.core.model import Transformer
from ablate.registry.keys import ACTIVATION, NORM, POSITION, load_all
from ablate.core.validate import (
    GiB,
    available_memory_bytes,
    check_fits,
    estimate_memory_bytes,
    param_count,
    validate_model,
)

load_all()
SMALL = ModelConfig(vocab_size=37, d_model=24, n_layers=2, n_heads=4, max_len=40, train_len=16, ffn_mult=2.7)


def _variants():
    """Every position x norm x activation, with placement, linear biases and KV-head layout cycling through their
    values (every value of each appears many times, next to every position)."""
    cycle = itertools.cycle(itertools.product(("pre", "post"), (False, True), (None, 2, 1)))
    for pos, norm, act in itertools.product(POSITION.keys(), NORM.keys(), ACTIVATION.keys()):
        place, bias, kv = next(cycle)
        yield replace(SMALL, position=pos, norm=norm, activation=act, norm_placement=place, bias=bias, n_kv_heads=kv)


def test_param_count_is_exact_for_every_variant():
    n = 0
    for cfg in _variants():
        assert param_count(cfg) == Transformer(cfg).num_params(), cfg
        n += 1
    assert n == len(POSITION) * len(NORM) * len(ACTIVATION) >= 100


@pytest.mark.parametrize("changes", [
    dict(), dict(ffn_mult=1.0), dict(ffn_mult=0.1, activation="geglu"), dict(vocab_size=1, d_model=2, n_heads=1),
    dict(position="learned", max_len=1000), dict(position="t5_bias", causal=False), dict(n_layers=5, bias=True),
])
def test_param_count_is_exact_for_edge_shapes(changes):
    cfg = replace(SMALL, **changes)
    assert param_count(cfg) == Transformer(cfg).num_params()


# Hand-computed: V=10, d=8, 1 layer, H=2 (hd=4, kvd=8), plain ReLU FFN f=32, RMSNorm, pre-norm, RoPE.
HAND = ModelConfig(vocab_size=10, d_model=8, n_layers=1, n_heads=2, ffn_mult=4.0, activation="relu",
                   attention="naive", position="rope", train_len=4, max_len=16)


def test_estimate_by_hand_training_naive():
    # params: 10*8 (tied embedding) + 2*8 (norms) + (64 + 128 + 64) (q, kv, out) + 2*8*32 (FFN) + 8 (final norm) = 872
    # activations (elements), B=2, T=3: layer 6*(6*8 + 2*8 + 32) = 576, scores 2*2*3*3 = 36; the final norm's input
    # and output 6*16 = 96; logits and log-softmax 2*6*10 = 120 -> 828
    e = estimate_memory_bytes(HAND, batch=2, seq_len=3, training=True)
    assert e == {"n_params": 872, "params": 872 * 4, "grads": 872 * 4, "optimizer": 2 * 872 * 4,
                 "activations": 828 * 4, "kv_cache": 0, "total": 4 * 872 * 4 + 828 * 4}


def test_estimate_by_hand_forward_with_kv_cache():
    # Tk = 5: attention phase 6*(3*8 + 2*8) + scores 2*2*3*5 = 240 + 60 = 300 > FFN phase 6*(16 + 32) = 288 >
    # head 6*(8 + 10) = 108; KV cache 2 (k, v) * 1 layer * B=2 * kvd=8 * 5 = 160; no gradients or moments
    e = estimate_memory_bytes(HAND, batch=2, seq_len=3, training=False, kv_cache_len=5)
    assert e == {"n_params": 872, "params": 872 * 4, "grads": 0, "optimizer": 0, "activations": 300 * 4,
                 "kv_cache": 160 * 4, "total": 872 * 4 + 300 * 4 + 160 * 4}


def test_estimate_by_hand_glu_bias_bf16():
    # SwiGLU: h = int(2*32/3) = 21, F = 3h = 63; ALiBi through sdpa: no scores (O(T) kernel); its dense bias is a
    # transient, not counted for training. Layer 6*(48 + 16 + 63) = 762; + 96 + 120 = 978 elements at 2 bytes (bf16).
    # params: 80 + 16 + 256 + 3*8*21 + 8 = 864 at 4 bytes (fp32 master weights).
    cfg = replace(HAND, activation="swiglu", attention="sdpa", position="alibi")
    e = estimate_memory_bytes(cfg, batch=2, seq_len=3, training=True, dtype_bytes=2, param_dtype_bytes=4)
    assert param_count(cfg) == Transformer(cfg).num_params() == 864
    assert (e["params"], e["grads"], e["optimizer"], e["activations"]) == (864 * 4, 864 * 4, 2 * 864 * 4, 978 * 2)
    # Post-norm: no final norm (864 - 8 params), and the head's input is the last block's output: 978 - 6*8
    post = estimate_memory_bytes(replace(cfg, norm_placement="post"), batch=2, seq_len=3, training=True, dtype_bytes=2,
                                 param_dtype_bytes=4)
    assert (post["n_params"], post["activations"]) == (856, 930 * 2)
    # Forward only: attention phase 6*(3*8 + 2*8) = 240 (no scores), FFN phase 6*(2*8 + 2*21) = 348, head
    # 6*(8 + 10) = 108; the largest (348) plus the dense ALiBi bias 2*3*3 = 18 -> 366
    fwd = estimate_memory_bytes(cfg, batch=2, seq_len=3, training=False)
    assert fwd["activations"] == 366 * 4 and fwd["grads"] == fwd["optimizer"] == 0


def test_scores_grow_quadratically_only_for_materialising_kernels():
    def act(attention, t):
        cfg = replace(HAND, attention=attention)
        return estimate_memory_bytes(cfg, batch=1, seq_len=t, training=True)["activations"]

    for key in ("naive", "sdpa_math"):
        assert act(key, 2048) - 2 * act(key, 1024) == 4 * HAND.n_layers * HAND.n_heads * (2048 ** 2 - 2 * 1024 ** 2)
    assert estimate_memory_bytes(HAND, batch=1, seq_len=64, training=False)["activations"] > \
        estimate_memory_bytes(replace(HAND, attention="sdpa"), batch=1, seq_len=64, training=False)["activations"]
    for key in ("sdpa", "flash_attn", "linear", "flex"):
        assert act(key, 2048) == 2 * act(key, 1024)


def _alive_bytes(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """Bytes alive when the forward of one training loss ends, not counting parameters: the tensors autograd keeps
    for backward (distinct storages) and the logits."""
    torch.manual_seed(0)
    model = Transformer(cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def note(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params and s.data_ptr() != 0:
            seen[s.data_ptr()] = s.nbytes()

    def pack(t):
        note(t)
        return t

    model.register_forward_hook(lambda mod, args, out: note(out))  # the logits, alive until the loss returns
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.loss(x, x)
    return sum(seen.values())


@pytest.mark.parametrize("changes", [dict(), dict(attention="naive"), dict(attention="sdpa_math", n_kv_heads=1),
                                     dict(activation="gelu", position="alibi"), dict(activation="relu"),
                                     dict(activation="relu", norm="layernorm", attention="naive", position="alibi"),
                                     dict(position="t5_bias", attention="naive", norm="layernorm",
                                          norm_placement="post")])
def test_training_activations_are_a_lower_bound_of_what_is_alive(changes):
    """CPU check of the training estimate: at most what is alive when the forward ends, and within 2.5x of it (the
    uncounted: rotary copies, norm statistics, SDPA's saved mask or attention weights on its CPU math path)."""
    cfg = replace(ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_len=256, train_len=128), **changes)
    est = estimate_memory_bytes(cfg, batch=2, seq_len=128, training=True)["activations"]
    alive = _alive_bytes(cfg, 2, 128)
    assert est <= alive <= 2.5 * est, (est, alive)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="peak-memory comparison needs CUDA")
@pytest.mark.parametrize("attention", ["sdpa", "naive"])
def test_training_estimate_matches_cuda_peak_in_order_of_magnitude(attention):
    torch.cuda.empty_cache()
    cfg = ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=4, max_len=1024, train_len=512,
                      attention=attention)
    model = Transformer(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randint(0, 512, (8, 512), device="cuda")
    model.loss(x, x).backward()
    opt.step()  # moments allocated
    opt.zero_grad(set_to_none=False)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model.loss(x, x).backward()
    opt.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    est = estimate_memory_bytes(cfg, batch=8, seq_len=512, training=True)
    assert est["params"] + est["grads"] + est["optimizer"] <= base
    assert est["activations"] <= peak - base + est["grads"] <= 10 * est["activations"]


def test_estimate_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="batch, seq_len, dtype_bytes and kv_cache_len must be >= 1"):
        estimate_memory_bytes(HAND, batch=0, seq_len=3, training=True)


def test_check_fits_refuses_only_above_available():
    e = estimate_memory_bytes(HAND, batch=2, seq_len=3, training=True)
    assert check_fits(e, "cpu", available=e["total"]) == e["total"]  # borderline: runs
    with pytest.raises(ConfigError) as exc:
        check_fits(e, "cpu", available=e["total"] - 1, what="training 'rope'", hint="train.batch_size")
    msg = str(exc.value)
    assert msg.startswith("training 'rope' needs ~") and "params+grads+AdamW " in msg and "activations " in msg
    assert "KV cache 0 GiB" in msg and "but the cpu has" in msg and msg.endswith("; lower train.batch_size")
    assert "\n" not in msg


def test_absurd_config_is_refused_on_this_cpu():
    big = ModelConfig(d_model=65536, n_layers=64, n_heads=64)
    e = estimate_memory_bytes(big, batch=8, seq_len=256, training=True)
    assert e["n_params"] == param_count(big) > 3e12
    with pytest.raises(ConfigError) as exc:
        check_fits(e, "cpu")
    msg = str(exc.value)
    assert msg.startswith("this configuration needs ~49,665 GiB (params+grads+AdamW 49,152 GiB, activations 513 GiB, "
                          "KV cache 0 GiB) but the cpu has ")
    assert msg.endswith(" GiB available; lower model.d_model, model.n_layers or the vocabulary") and "\n" not in msg


def test_default_hint_names_the_largest_part():
    kv = estimate_memory_bytes(HAND, batch=64, seq_len=1, training=False, kv_cache_len=10 ** 7)
    with pytest.raises(ConfigError, match="lower the batch size or context length"):
        check_fits(kv, "cuda", available=1)
    act = estimate_memory_bytes(HAND, batch=64, seq_len=10 ** 5, training=True)
    with pytest.raises(ConfigError, match="lower the batch size or sequence length"):
        check_fits(act, "cpu", available=1)


def test_available_memory():
    cpu = available_memory_bytes("cpu")
    assert cpu is None or 0 < cpu < 2 ** 50
    assert available_memory_bytes("meta") is None
    e = estimate_memory_bytes(HAND, batch=1, seq_len=1, training=False)
    assert check_fits(e, "meta") is None  # unknown: nothing refused
    assert GiB == 1 << 30


def test_validate_model_still_refuses_combinations():
    with pytest.raises(ConfigError, match="needs a window size"):
        validate_model(replace(HAND, attention="sliding_window"))
