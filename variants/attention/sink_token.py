"""``sink_token``: a learnable placeholder token prepended to every sequence (StreamingLLM's *Sink Token*, Xiao et
al. 2023, *Efficient Streaming Language Models with Attention Sinks*, Section 3.3 and Table 3: their 160M Pythia
models pre-trained with "a learnable placeholder token (Sink Token) in all training samples"; reference code
``mit-han-lab/streaming-llm``, whose start + recent cache then keeps that one token).

The layer is the standard multi-head layer over SDPA; what makes the variant is stated in its spec,
:class:`SinkTokenSpec` (``sink_tokens = 1``), and read by :class:`ablate.core.model.Transformer`, which owns the
token: one learned vector of width ``d_model`` (initialised and scaled like a token embedding), put in front of the
tokens at position 0 of every sequence -- every training sample, every evaluation window, the first step of a
cache -- whose own output is dropped, so the model's logits keep the shape of its input. Every query can attend it,
so it is where the heads learn to put the weight they do not need (the paper's Figure 7); a streaming cache that
keeps the first token keeps it (``SinkKVCache(sinks=1)``: StreamingLLM's "1 + recent").

Adds ``d_model`` parameters to the model (not per layer: ``ablate.core.validate.param_count`` reads
:attr:`SinkTokenSpec.sink_tokens`); the cache holds one more token than the text. Compare with ``sinks`` (the
gpt-oss learned per-head sink *logit*, nothing prepended).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ablate.registry.keys import POSITION
from ablate.variants.attention.contract import BUILTIN
from ablate.variants.attention.layer import LayerSpec, MultiHeadAttention

__all__ = ["SinkTokenSpec", "SPEC", "sink_tokens"]


@dataclass(frozen=True, eq=False)
class SinkTokenSpec(LayerSpec):
    """A :class:`LayerSpec` whose model prepends ``sink_tokens`` learned tokens to every sequence."""

    sink_tokens: int = 1


def sink_tokens(spec: Any) -> int:
    """Learned tokens the model of a layer ``spec`` prepends to every sequence (0 for every other layer)."""
    return int(getattr(spec, "sink_tokens", 0) or 0)


def _check(cfg: Any) -> str | None:
    if not cfg.causal:
        return "sink_token prepends a token every later token attends: it needs a causal model (causal=true)"
    if POSITION.get(cfg.position).supports_("max_len_bound") and cfg.max_len < cfg.train_len + 1:
        return (f"sink_token puts its token at position 0, so {cfg.train_len} tokens need a position table of "
                f"{cfg.train_len + 1}; model.max_len is {cfg.max_len}")
    return None


SPEC = SinkTokenSpec(
    key="sink_token", module=lambda cfg: MultiHeadAttention(cfg, kernel="sdpa"), kernel="sdpa",
    description="a learnable sink token prepended to every sequence (its output dropped); standard layer over SDPA",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (StreamingLLM), sec. 3.3 / "
          "Table 3 (160M models pre-trained with a Sink Token); reference: mit-han-lab/streaming-llm",
    check=_check,
).register(BUILTIN)
