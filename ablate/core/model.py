"""The reference model: one readable decoder-only LM (nanoGPT spirit) whose slots are registry lookups.

    token embedding -> position slot (absolute: added here) -> N x Block -> final norm -> tied LM head
    Block (pre):  x + Attn(Norm(x)),  then  x + FFN(Norm(x))
    Block (post): Norm(x + Attn(x)),  then  Norm(x + FFN(x))       (Vaswani et al. 2017)

Rotary variants rotate q/k inside attention, bias variants (ALiBi, T5) hand the attention an additive
``ScoreBias``. ``causal=False`` gives encoder-style blocks (the latency suite uses them). Incremental decoding:
pass a :class:`KVCache` to ``forward``; positions continue from the cache's length.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ablate.core.config import ModelConfig
from ablate.errors import ConfigError
from ablate.registry.keys import ATTENTION, POSITION
from ablate.core.validate import validate_model
from ablate.variants.activations import build_ffn
from ablate.variants.norms import build_norm
from ablate.variants.positions import Position, ScoreBias, build_position


class KVCache:
    """Per-layer key/value buffers for incremental decoding; grows by doubling, returns views."""

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0  # tokens already in the cache (positions 0..length-1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` (B, Hkv, T, D) at position ``self.length``; return all keys/values so far."""
        start, t = self.length, k.shape[2]
        buf_k, buf_v = self.k[layer], self.v[layer]
        if buf_k is None or buf_k.shape[2] < start + t:
            cap = max(16, 2 * (start + t))
            new_k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            new_v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
            if buf_k is not None:
                new_k[:, :, :start] = buf_k[:, :, :start]
                new_v[:, :, :start] = buf_v[:, :, :start]
            buf_k, buf_v = self.k[layer], self.v[layer] = new_k, new_v
        buf_k[:, :, start:start + t] = k
        buf_v[:, :, start:start + t] = v
        return buf_k[:, :, :start + t], buf_v[:, :, :start + t]

    def nbytes(self) -> int:
        """Bytes of keys and values actually held (the first ``length`` positions of every layer)."""
        total = 0
        for buf in self.k + self.v:
            if buf is not None:
                total += buf[:, :, :self.length].numel() * buf.element_size()
        return total


class StaticKVCache(KVCache):
    """Key/value buffers allocated once at ``max_len`` (``(B, Hkv, max_len, D)`` per layer): a step writes its keys in
    place and attends over a view of the first ``length + t`` positions, so nothing is allocated or copied while
    decoding, and a step at a given length can be captured once as a CUDA graph and replayed
    (:class:`ablate.core.decode.DecodeStep`)."""

    def __init__(self, n_layers: int, *, batch: int, kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str):
        super().__init__(n_layers)
        if max_len < 1:
            raise ConfigError(f"a static KV cache needs max_len >= 1, got {max_len}")
        self.max_len = max_len
        shape = (batch, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, t = self.length, k.shape[2]
        if start + t > self.max_len:
            raise ConfigError(f"static KV cache full: {start} + {t} tokens > max_len={self.max_len}")
        buf_k, buf_v = self.k[layer], self.v[layer]
        buf_k[:, :, start:start + t] = k
        buf_v[:, :, start:start + t] = v
        return buf_k[:, :, :start + t], buf_v[:, :, :start + t]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.bias)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.kv_heads * cfg.head_dim, bias=cfg.bias)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.attn = ATTENTION.get(cfg.attention).fn
        self.causal, self.window = cfg.causal, cfg.window

    def forward(self, x: torch.Tensor, pos: Position, bias: ScoreBias | None,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.n_kv, self.head_dim).permute(2, 0, 3, 1, 4)
        offset = cache.length if cache is not None else 0
        seq_len = offset + t
        q = pos.rotate(q, offset, seq_len)
        if cache is not None and pos.needs_raw_cache:
            # Length-dependent rotation (dynamic NTK): keep raw keys, rotate all of them at the current length.
            k, v = cache.update(layer, k, v)
            k = pos.rotate(k, 0, seq_len)
        else:
            k = pos.rotate(k, offset, seq_len)
            if cache is not None:
                k, v = cache.update(layer, k, v)
        y = self.attn(q, k, v, causal=self.causal, bias=bias, window=self.window)
        return self.out(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre = cfg.norm_placement == "pre"
        self.norm1 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.norm2 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
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
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * layers)
            if name.endswith(("attn.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))
        if cfg.scale_embeddings:
            # fairseq's transformer (the code behind Vaswani et al. and the ALiBi paper's sinusoidal baseline):
            # embeddings ~ N(0, d^-1/2) times sqrt(d), so tokens enter at RMS 1 beside unit-amplitude sinusoids
            # (RMS 0.71). With init_std 0.02 they would enter at RMS 0.02 * sqrt(d) and drown.
            nn.init.normal_(self.tok.weight, std=cfg.d_model ** -0.5)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.cfg.init_std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens ``idx`` (B, T); with ``cache``, positions start at ``cache.length``."""
        if cache is not None and not self.cfg.causal:
            raise ConfigError("a KV cache needs a causal model (causal=True)")
        offset = cache.length if cache is not None else 0
        x = self.tok(idx)
        if self.cfg.scale_embeddings:  # fairseq: N(0, d^-1/2) embeddings times sqrt(d) (see __init__)
            x = x * math.sqrt(self.cfg.d_model)
        x = self.drop(self.pos.embed(x, offset))
        bias = self.pos.score_bias()
        for i, block in enumerate(self.blocks):
            x = block(x, self.pos, bias, cache, i)
        if cache is not None:
            cache.length += idx.shape[1]
        return self.norm_f(x) @ self.tok.weight.t()

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats."""
        logits = self(idx)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def new_cache(self, *, static_len: int | None = None, batch: int = 1,
                  dtype: torch.dtype | None = None) -> KVCache:
        """A growing :class:`KVCache`, or with ``static_len`` a :class:`StaticKVCache` of that many positions for
        ``batch`` sequences (dtype: the model's parameters' unless given)."""
        if static_len is None:
            return KVCache(self.cfg.n_layers)
        ref = next(self.parameters())
        return StaticKVCache(self.cfg.n_layers, batch=batch, kv_heads=self.cfg.kv_heads, head_dim=self.cfg.head_dim,
                             max_len=static_len, dtype=dtype or ref.dtype, device=ref.device)

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
