"""``sinks``: the standard multi-head layer with a learned sink logit per head (attention sinks, Xiao et al. 2023,
*Efficient Streaming Language Models with Attention Sinks*; the learned form of OpenAI's gpt-oss, 2025).

Follows Hugging Face transformers' ``GptOssAttention`` / ``eager_attention_forward``: each head ``h`` has a
parameter ``sinks[h]`` (initialised ``N(0, init_std)``) appended as one more logit to every query's row of scaled
scores, the softmax runs over the row with it, and the sink's probability is dropped -- the head may put weight on
"nothing" instead of on the first tokens. Here the sink is one key of zeros with a value of zeros in front of the
kept keys, scored ``q·0·scale + sinks[h]``, so the row is the reference's and the call is the ordinary SDPA kernel
with a dense bias (``(H, Tq, 1 + Tk)``: the sink column, then the position's bias if any, and ``-inf`` where a
sliding window hides a key -- the kernel's own window would hide the sink).

Streaming (StreamingLLM's start + recent cache) is the cache, not the layer: ``Transformer.new_cache(window=W,
sinks=S)`` (:class:`ablate.variants.attention.cache.SinkKVCache`) works with every layer, this one included, and so
does the rolling cache (``window=W``: the layer masks the window in its bias).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ablate.variants.attention.contract import BUILTIN
from ablate.variants.attention.layer import LayerSpec, MultiHeadAttention, mha_params

__all__ = ["SinkAttention", "SinkBias", "SPEC"]


class SinkBias:
    """A score bias whose first key column is the per-head sink logit and whose other columns are ``inner``'s
    (a position's :class:`ScoreBias`, or zeros). Bottom-right aligned like every bias (``dense(Tq, Tk)``)."""

    kind = "sink"
    alibi_slopes = None

    def __init__(self, sinks: Tensor, inner: Any = None, window: int | None = None):
        self.sinks, self.inner, self.window = sinks, inner, window

    def dense(self, tq: int, tk: int, device: Any, dtype: torch.dtype) -> Tensor:
        h = self.sinks.shape[0]
        col = self.sinks.to(device=device, dtype=dtype).view(h, 1, 1).expand(h, tq, 1)
        if self.inner is None:
            rest = col.new_zeros(h, tq, tk - 1)
        else:
            rest = self.inner.dense(tq, tk - 1, device, dtype).expand(h, tq, tk - 1)
        if self.window is not None:  # the keys a window hides (the sink column is never hidden)
            p = torch.arange(tk - 1 - tq, tk - 1, device=device)[:, None]
            j = torch.arange(tk - 1, device=device)[None, :]
            rest = rest.masked_fill(j <= p - self.window, float("-inf"))
        return torch.cat([col, rest], dim=-1)


class SinkAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` whose softmax has one more logit per head, the learned ``sinks[h]``."""

    def __init__(self, cfg: Any):
        super().__init__(cfg, kernel="sdpa")
        self.sinks = nn.Parameter(torch.randn(cfg.n_heads) * cfg.init_std)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Any, window: int | None, layer: int) -> Tensor:
        zk = k.new_zeros(k.shape[0], k.shape[1], 1, k.shape[3])
        zv = v.new_zeros(v.shape[0], v.shape[1], 1, v.shape[3])
        return self.attn(q, torch.cat([zk, k], 2), torch.cat([zv, v], 2), causal=self.causal,
                         bias=SinkBias(self.sinks, bias, window), window=None)


SPEC = LayerSpec(
    key="sinks", module=SinkAttention, kernel="sdpa",
    description="learned attention sink: one extra logit per head in every softmax row, its weight dropped",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (StreamingLLM); learned "
          "per-head sinks as in gpt-oss; reference: transformers GptOssAttention / eager_attention_forward",
    params=lambda cfg: mha_params(cfg) + cfg.n_heads,
).register(BUILTIN)
