"""``sink_token`` (StreamingLLM's Sink Token, Xiao et al. 2023 sec. 3.3) on fresh random inputs (``ABLATE_TEST_SEED``),
float64. The reference is the paper's construction: a placeholder token added to the vocabulary and prepended to
every sample -- a vanilla model with one more vocabulary row, fed that token first, its first output dropped -- and
the streaming cache that keeps only it (StreamingLLM's "1 + recent")."""

from __future__ import annotations

import math
import os

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.core.evaluate import incremental_logits
from ablate.core.flops import cache_bytes
from ablate.core.model import Transformer
from ablate.core.validate import param_count, validate_model
from ablate.errors import ConfigError
from ablate.registry.keys import ATTENTION, load_all
from ablate.variants.attention import layer_spec
from ablate.variants.attention.streaming import streaming_nll

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
load_all()
V = 29


def _cfg(**kw):
    base = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=2, ffn_mult=2.0, train_len=8, max_len=64,
                position="rope", attention="sink_token")
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("position,scale", [("rope", False), ("alibi", True), ("learned", False), ("xpos", True)])
def test_equals_a_vanilla_model_fed_a_placeholder_vocabulary_token_first(position, scale):
    torch.manual_seed(SEED % 2**31)
    model = Transformer(_cfg(position=position, scale_embeddings=scale)).double().eval()
    ref = Transformer(_cfg(position=position, scale_embeddings=scale, attention="sdpa", vocab_size=V + 1)).double()
    sd = {k: v for k, v in model.state_dict().items() if k != "sink"}
    sd["tok.weight"] = torch.cat([model.tok.weight.detach(), model.sink.detach()], 0)  # the sink is token V
    ref.load_state_dict(sd)
    ref.eval()
    x = torch.randint(0, V, (3, 13))
    with torch.no_grad():
        ours = model(x)
        want = ref(torch.cat([torch.full((3, 1), V), x], 1))[:, 1:, :V]
    assert ours.shape == (3, 13, V)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{NOTE} {m}")
    plain = Transformer(_cfg(position=position, scale_embeddings=scale, attention="sdpa")).double().eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "sink"})
    with torch.no_grad():
        assert not torch.allclose(plain(x), ours, atol=1e-6)  # the token is there


def test_registered_with_paper_and_one_d_model_of_parameters():
    e = ATTENTION["sink_token"]
    assert "StreamingLLM" in e.paper and "streaming-llm" in e.paper
    cfg = _cfg()
    model = Transformer(cfg)
    assert model.sink_tokens == 1 and model.num_params() == param_count(cfg)
    assert param_count(cfg) - param_count(_cfg(attention="sdpa")) == cfg.d_model


def test_decoding_with_every_cache_equals_the_full_forward():
    torch.manual_seed((SEED + 1) % 2**31)
    model = Transformer(_cfg()).double().eval()
    x = torch.randint(0, V, (2, 17))
    with torch.no_grad():
        full = model(x)
        steps = incremental_logits(model, x, prefill=5, chunk=3)  # static cache sized for the text + the sink
        cache = model.new_cache()
        grow = torch.cat([model(x[:, :1], cache)] + [model(x[:, i:i + 1], cache) for i in range(1, 17)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    torch.testing.assert_close(grow, full, rtol=1e-9, atol=1e-9)
    assert cache.length == 18  # the sink token and 17 tokens
    assert cache.nbytes() == cache_bytes(model.cfg, 17, 8, 2) == layer_spec("sdpa").cache_bytes(model.cfg, 18, 8, 2)
    assert cache_bytes(model.cfg, 17, 8, 2, window=6, sinks=1) == layer_spec("sdpa").cache_bytes(model.cfg, 6, 8, 2)


def test_streaming_keeping_only_the_sink_token_equals_a_fresh_forward_over_the_recent_tokens():
    torch.manual_seed((SEED + 2) % 2**31)
    # one layer: deeper layers' cached keys also carry the context each token saw when it was fed (as in the paper)
    model = Transformer(_cfg(n_layers=1)).double().eval()
    toks = torch.randint(0, V, (2, 30))
    budget = 8
    with torch.no_grad():
        got = streaming_nll(model, toks, mode="sinks", budget=budget, sinks=1)
        for t in range(budget, 29):  # the cache: the sink token, the last budget - 2 tokens, the step's own
            logits = model(toks[:, t - (budget - 2):t + 1])[:, -1]
            want = torch.nn.functional.cross_entropy(logits.float(), toks[:, t + 1], reduction="none")
            torch.testing.assert_close(got[:, t], want, rtol=1e-6, atol=1e-6, msg=lambda m: f"{NOTE} t={t} {m}")
        window = streaming_nll(model, toks, mode="window", budget=budget)
    assert not torch.allclose(window[:, budget:], got[:, budget:], atol=1e-6)  # window evicts the sink token
    assert math.isfinite(float(got.mean()))


def test_refusals():
    with pytest.raises(ConfigError, match="position table"):
        validate_model(_cfg(position="learned", max_len=8))
    validate_model(_cfg(position="learned", max_len=9))


def test_training_step_reaches_the_sink():
    torch.manual_seed((SEED + 3) % 2**31)
    model = Transformer(_cfg())
    x = torch.randint(0, V, (4, 8))
    model.loss(x[:, :-1], x[:, 1:]).backward()
    assert model.sink.grad is not None and float(model.sink.grad.abs().sum()) > 0
