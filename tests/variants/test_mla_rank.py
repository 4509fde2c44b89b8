"""MLA's KV latent width ``d_c`` as a knob (``model.kv_lora_rank``, DeepSeek-V2's / transformers' ``kv_lora_rank``;
default ``4·head_dim``): parameters and cache bytes follow it (closed form = allocated = measured from the cache:
``(d_c + d_R)`` elements per token and layer), the absorbed decode path still gives the naive path's and the full
forward's logits at a width other than the default (float64, fresh random inputs, ``ABLATE_TEST_SEED``), and the
range and the layers it applies to are checked in one line."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig, flatten
from ablate.core.flops import cache_bytes
from ablate.core.model import Transformer
from ablate.core.validate import param_count, validate_model
from ablate.errors import ConfigError
from ablate.registry.keys import load_all
from ablate.variants.attention import layer_spec

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
load_all()
BASE = ModelConfig(vocab_size=37, d_model=64, n_layers=2, n_heads=2, ffn_mult=2.0, train_len=8, max_len=64,
                   attention="mla")  # head_dim 32: default d_c 128, d_R 16


@pytest.mark.parametrize("key", ["mla", "mla_q"])
@pytest.mark.parametrize("rank", [8, 40, 128])
def test_parameters_and_cache_bytes_follow_d_c(key, rank):
    cfg = replace(BASE, attention=key, kv_lora_rank=rank)
    model = Transformer(cfg).eval()
    assert model.num_params() == param_count(cfg)
    h, hd = cfg.n_heads, cfg.head_dim
    # per layer, d_c enters kv_a (d·d_c), its norm (d_c) and kv_b (d_c·H·2·hd)
    default = param_count(replace(cfg, kv_lora_rank=None))
    assert default - param_count(cfg) == cfg.n_layers * (4 * hd - rank) * (cfg.d_model + 1 + 2 * h * hd)
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 37, (3, 9)), cache)
    assert cache.nbytes() == cache_bytes(cfg, 9, 4, 3) == cfg.n_layers * (rank + hd // 2) * 9 * 4 * 3
    assert layer_spec(key).cache_per_token(cfg) == rank + hd // 2


@pytest.mark.parametrize("position", ["rope", "xpos"])
def test_absorbed_decode_equals_the_naive_path_and_the_full_forward_at_another_width(position):
    torch.manual_seed(SEED % 2**31)
    cfg = replace(BASE, position=position, kv_lora_rank=24)
    model = Transformer(cfg).double().eval()
    for p in model.parameters():  # not the init's small values: every path's weights matter
        p.data.normal_(0, 0.3)
    idx = torch.randint(0, 37, (2, 13))
    outs = {}
    with torch.no_grad():
        full = model(idx)
        for absorb in (True, False):
            for block in model.blocks:
                block.attn.absorb = absorb
            cache = model.new_cache()
            outs[absorb] = torch.cat([model(idx[:, :4], cache)] + [model(idx[:, i:i + 1], cache)
                                                                   for i in range(4, 13)], 1)
        assert cache.tensors()[0].shape[-1] == 24
    torch.testing.assert_close(outs[True], outs[False], rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    torch.testing.assert_close(outs[True], full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")


def test_the_default_is_4_head_dim_and_leaves_ids_unchanged():
    assert param_count(replace(BASE, kv_lora_rank=128)) == param_count(BASE)
    assert "kv_lora_rank" not in flatten(BASE) and flatten(replace(BASE, kv_lora_rank=8))["kv_lora_rank"] == 8


@pytest.mark.parametrize("changes, match", [
    ({"kv_lora_rank": 129}, r"must be in 1\.\.128"),
    ({"kv_lora_rank": 0}, "kv_lora_rank must be an integer >= 1"),
    ({"kv_lora_rank": 8, "attention": "sdpa"}, r"latent attention \(mla, mla_q\); attention 'sdpa' has none"),
])
def test_refused_in_one_line(changes, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate_model(replace(BASE, **changes))
    assert "\n" not in str(e.value)
