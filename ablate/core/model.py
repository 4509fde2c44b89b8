"""The reference model: one readable decoder-only LM (nanoGPT spirit) whose slots are registry lookups.

    token embedding -> position slot (absolute: added here) -> N x Block -> final norm -> tied LM head
    Block (pre):  x + Attn(Norm(x)),  then  x + FFN(Norm(x))
    Block (post): Norm(x + Attn(x)),  then  Norm(x + FFN(x))       (Vaswani et al. 2017)

``Attn`` is the layer ``cfg.attention`` names (:func:`ablate.variants.attention.layer_spec`: the standard
multi-head layer over a kernel, or a layer of its own). Rotary variants rotate q and k inside it, bias variants
(ALiBi, T5) hand it an additive ``ScoreBias``. ``causal=False`` gives encoder-style blocks (the latency suite uses
them). Incremental decoding: pass a cache (:meth:`Transformer.new_cache`) to ``forward``; positions continue from
the cache's length.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.registry.keys import POSITION
from ablate.core.validate import validate_model
from ablate.variants.attention.cache import KVCache, RollingKVCache, SinkKVCache, StaticKVCache
from ablate.variants.attention.layer import layer_spec
from ablate.variants.attention.sink_token import sink_tokens
from ablate.variants.activations import build_ffn
from ablate.variants.norms import build_norm
from ablate.variants.positions import build_position

__all__ = ["Transformer", "Block", "KVCache", "StaticKVCache", "RollingKVCache", "SinkKVCache"]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm_placement == "pre"
        self.norm1 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.norm2 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn = layer_spec(cfg.attention).build(cfg)
        self.ffn = build_ffn(cfg.activation, cfg.d_model, int(cfg.ffn_mult * cfg.d_model), cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, pos, bias, cache, layer):
        if self.pre:
            x = x + self.drop(self.attn(self.norm1(x), pos, bias, cache, layer))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, pos, bias, cache, layer)))
        return self.norm2(x + self.drop(self.ffn(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        validate_model(cfg)
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = build_position(cfg.position, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # Post-norm blocks already end in a norm; pre-norm needs one before the head.
        self.norm_f = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps) if cfg.norm_placement == "pre" else nn.Identity()
        # a layer whose spec asks for it (StreamingLLM's sink token, variants/attention/sink_token.py): learned tokens
        # put in front of every sequence at position 0, embedded like a token; their outputs are dropped
        self.sink_tokens = sink_tokens(layer_spec(cfg.attention))
        self.sink = nn.Parameter(torch.zeros(self.sink_tokens, cfg.d_model)) if self.sink_tokens else None
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * layers)
            if name.endswith(("attn.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))
        if cfg.scale_embeddings:
            # fairseq's transformer (the code behind Vaswani et al. and the ALiBi paper's sinusoidal baseline):
            # embeddings ~ N(0, d^-1/2) times sqrt(d), so tokens enter at RMS 1 beside unit-amplitude sinusoids
            # (RMS 0.71). With init_std 0.02 they would enter at RMS 0.02 * sqrt(d) and drown.
            nn.init.normal_(self.tok.weight, std=cfg.d_model ** -0.5)
        if self.sink is not None:  # drawn as a token embedding is
            nn.init.normal_(self.sink, std=cfg.d_model ** -0.5 if cfg.scale_embeddings else cfg.init_std)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens ``idx`` (B, T); with ``cache``, positions start at ``cache.length``. A
        model with sink tokens puts them in front of a sequence's first forward (no cache, or an empty one)."""
        if cache is not None and not self.cfg.causal:
            raise ConfigError("a KV cache needs a causal model (causal=True)")
        offset = cache.length if cache is not None else 0
        x = self.tok(idx)
        lead = self.sink_tokens if self.sink is not None and offset == 0 else 0
        if lead:
            x = torch.cat([self.sink.to(x.dtype).expand(x.shape[0], lead, -1), x], dim=1)
        if self.cfg.scale_embeddings:  # fairseq: N(0, d^-1/2) embeddings times sqrt(d) (see __init__)
            x = x * math.sqrt(self.cfg.d_model)
        x = self.drop(self.pos.embed(x, offset))
        bias = self.pos.score_bias()
        for i, block in enumerate(self.blocks):
            x = block(x, self.pos, bias, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm_f(x[:, lead:]) @ self.tok.weight.t()

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats."""
        logits = self(idx)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def new_cache(self, *, static_len: int | None = None, batch: int = 1, dtype: torch.dtype | None = None,
                  window: int | None = None, sinks: int | None = None) -> KVCache:
        """A cache in the layout of this model's attention layer: growing (default); with ``static_len`` a
        :class:`StaticKVCache` of that many positions for ``batch`` sequences (dtype: the model's parameters'
        unless given); with ``window`` a :class:`RollingKVCache` keeping the last ``window`` tokens, and with
        ``sinks`` as well a :class:`SinkKVCache` keeping the first ``sinks`` tokens and the last ``window - 1``."""
        spec = layer_spec(self.cfg.attention)
        layout = spec.cache
        if window is None and sinks is None:
            if static_len is None:
                return KVCache(self.cfg.n_layers, layout)
            ref = next(self.parameters())  # static_len counts the text's tokens; the sink tokens come on top
            return StaticKVCache(self.cfg.n_layers, layout=layout, cfg=self.cfg, batch=batch,
                                 max_len=static_len + self.sink_tokens,
                                 dtype=dtype or ref.dtype, device=ref.device)
        kind = "rolling" if sinks is None else "sink"
        why = None
        if window is None:
            why = "a sink-keeping cache needs a window too (window=W, sinks=S)"
        elif static_len is not None:
            why = "a cache is either static (static_len) or evicting (window), not both"
        elif kind not in spec.cache_kinds():
            why = f"attention {self.cfg.attention!r} cannot mask a window, so it cannot decode with a rolling cache"
        elif self.pos.needs_raw_cache:
            why = (f"position {self.cfg.position!r} re-rotates every cached key at each length; an evicting cache "
                   "cannot keep its positions")
        elif kind == "sink" and (self.pos.score_bias() is not None or self.cfg.window is not None):
            why = (f"a sink-keeping cache keeps keys that are not contiguous: no score bias (position "
                   f"{self.cfg.position!r}) and no window of the model's own (window={self.cfg.window})")
        if why:
            raise ConfigError(why)
        if kind == "sink":
            return SinkKVCache(self.cfg.n_layers, window, sinks, layout)
        return RollingKVCache(self.cfg.n_layers, window, layout)

    def set_position(self, key: str, **changes) -> None:
        """Swap the position variant for evaluation, e.g. ``set_position("rope_ntk", rope_scale=4.0)``.

        Parameter-free variants (the RoPE family, ALiBi, sinusoidal, none) swap freely; a learned one (``learned``,
        ``t5_bias``) keeps its trained parameters and can only be re-configured, not swapped for another key.
        """
        new_cfg = replace(self.cfg, position=key, **changes)
        validate_model(new_cfg)
        old = self.pos
        has_params = any(True for _ in old.parameters())
        if key != self.cfg.position and (has_params or POSITION.get(key).supports_("params")):
            raise ConfigError(f"cannot swap position {self.cfg.position!r} for {key!r} after training: only "
                              "parameter-free variants can be swapped at evaluation")
        new = build_position(key, new_cfg)
        if has_params:
            new.load_state_dict(old.state_dict())
        ref = next(self.parameters())
        self.pos = new.to(device=ref.device)
        self.cfg = new_cfg

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok.weight.numel() if non_embedding else n
