"""StreamingLLM's streaming evaluation in the extrapolation suite (Xiao et al. 2023, Table 1; ``stream.*``
settings): the rows each trained LM owes and their measurement through
:func:`ablate.variants.attention.streaming.streaming_nll`.

Per trained variant, stream length ``factor x train_len`` and mode, one row (``metric="stream_ppl"``): the
perplexity of the tokens past the first ``budget`` (where the modes start to differ) over ``sequences`` consecutive
stretches of the held-out test stream, and ``cache_bytes``, what the mode's cache held after the last token
(measured from the cache). The claims are computed from these rows on the report side
(:mod:`suites.extrapolation.streaming_report`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from ablate.variants.attention.streaming import streaming_nll

from .config import ExtrapolationConfig, stream_budget
from .constants import METRIC_STREAM, SINKS

__all__ = ["stream_keys", "score_stream"]


def stream_keys(cfg: ExtrapolationConfig, base: dict[str, Any], es) -> list[tuple[dict[str, Any], int]]:
    """``(row key, stream length)`` of every streaming row a trained LM owes (``base``: its key fields without the
    metric); none unless ``stream.modes`` is set."""
    st, budget = cfg.stream, stream_budget(cfg)
    out = []
    for f in st.factors:
        length = f * cfg.model.train_len
        for mode in st.modes:
            key = {**base, "eval_len": length, "metric": METRIC_STREAM, "stream_mode": mode, "budget": budget,
                   "sequences": st.sequences, "eval_set": es.hash}
            if mode == SINKS:
                key["sinks"] = st.sinks
            out.append((key, length))
    return out


def score_stream(cfg: ExtrapolationConfig, model, es, key: dict[str, Any], device: str) -> dict[str, Any]:
    """The metrics of one streaming row: ``value`` / ``ppl`` / ``loss`` over the scored tokens, ``cache_bytes``,
    ``cache_tokens`` (tokens the cache held at the end), ``scored_tokens``, ``streams``, ``eval_s``."""
    length, budget = int(key["eval_len"]), int(key["budget"])
    n = min(int(key["sequences"]), len(es.stream) // (length + 1))
    if n < 1:
        raise ValueError(f"the test stream holds {len(es.stream)} tokens, fewer than one stream of {length + 1}")
    toks = torch.as_tensor(np.asarray(es.stream[:n * (length + 1)], dtype=np.int64), device=device).view(n, -1)
    stats: dict[str, Any] = {}
    was = model.training
    model.eval()
    t0 = time.perf_counter()
    losses = streaming_nll(model, toks, mode=str(key["stream_mode"]), budget=budget,
                           sinks=int(key.get("sinks") or cfg.stream.sinks), stats=stats)
    elapsed = time.perf_counter() - t0
    model.train(was)
    scored = losses[:, budget - 1:]  # targets at positions >= budget: where a mode may have evicted something
    loss = float(scored.double().mean())
    ppl = math.exp(min(loss, 700.0)) if math.isfinite(loss) else None
    return {"value": ppl, "ppl": ppl, "loss": loss,
            "cache_bytes": stats["cache_bytes"], "cache_tokens": stats["kept"], "scored_tokens": int(scored.numel()),
            "streams": n, "eval_s": elapsed,
            # the layer's own learned sink logit (the claims tell such a model from a vanilla one, torch-free)
            "learned_sink": all(isinstance(getattr(b.attn, "sinks", None), torch.nn.Parameter) for b in model.blocks),
            # learned tokens the model prepends to every sequence (StreamingLLM's sink token): the first it keeps
            "sink_tokens": int(getattr(model, "sink_tokens", 0) or 0)}
