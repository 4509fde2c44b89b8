"""Checks that a model configuration can run, before any compute. Each failure is one line naming the fix."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Iterator

from ablate.core.config import ModelConfig, check_fields
from ablate.errors import ConfigError, UnavailableError
from ablate.registry.keys import ACTIVATION, ATTENTION, NORM, POSITION

__all__ = ["validate_model", "is_valid", "variant_grid", "param_count", "estimate_memory_bytes",
           "available_memory_bytes", "check_fits"]

PLACEMENTS = ("pre", "post")


def _attention_spec(key: str) -> Any:
    """The registration facts of the kernel attention ``key`` runs (:class:`ablate.variants.attention.AttentionSpec`)."""
    ATTENTION.get(key)  # unknown key: UnknownKeyError naming the valid ones
    from ablate.variants.attention import spec

    return spec(key)


def _layer(key: str) -> Any:
    """The layer attention ``key`` names (:class:`ablate.variants.attention.LayerSpec`): counts and capabilities."""
    ATTENTION.get(key)  # unknown key: UnknownKeyError naming the valid ones
    from ablate.variants.attention import layer_spec

    return layer_spec(key)


def validate_model(cfg: ModelConfig, device: str | None = None, *, backward: bool = False) -> None:
    """Raise :class:`ConfigError` for an impossible config (and :class:`UnavailableError` for a variant that
    cannot run on ``device``, when one is given). Unknown keys raise ``UnknownKeyError`` listing valid keys.

    Without ``device`` a feature counts as supported if the attention has it on any device; with ``device`` the
    check is exact for that device (and ``backward=True`` also requires a backward pass there, for training).
    """
    attn, pos = ATTENTION.get(cfg.attention), POSITION.get(cfg.position)
    layer = _layer(cfg.attention)

    has = attn.supports_  # supported on some device: anything else is a config error
    # Features this config needs from the attention, each (alternatives, what), re-checked per device at the end.
    needed: list[tuple[tuple[str, ...], str]] = [(("causal",) if cfg.causal else ("bidirectional",),
                                                  "causal attention" if cfg.causal else "bidirectional attention")]
    if cfg.kv_heads != cfg.n_heads:
        needed.append((("gqa",), "grouped KV heads"))
    if pos.supports_("needs_bias"):
        needed.append((("bias", "alibi") if pos.supports_("alibi") else ("bias",), f"the {cfg.position} score bias"))
    if cfg.window is not None:
        needed.append((("window",), "a sliding window"))

    if device is not None:
        ok, reason = attn.available(device)
        if not ok:
            raise UnavailableError(f"attention {cfg.attention!r} cannot run on {device}: {reason}")

    NORM.get(cfg.norm)
    ACTIVATION.get(cfg.activation)
    if cfg.norm_placement not in PLACEMENTS:
        raise ConfigError(f"unknown norm_placement {cfg.norm_placement!r}; valid: {', '.join(PLACEMENTS)}")
    # Ranges of single fields (ablate.core.config.RANGES) and the shape rules (ablate.core.config.check_model_shape): the same
    # rules --set applies, kept in one place.
    check_fields(cfg)
    if cfg.kv_lora_rank is not None and "kv_lora_rank" not in getattr(layer, "knobs", ()):
        from ablate.variants.attention import LAYERS

        takes = [k for k, s in LAYERS.items() if "kv_lora_rank" in getattr(s, "knobs", ())]
        raise ConfigError(f"model.kv_lora_rank sets the KV latent width of latent attention ({', '.join(takes)}); "
                          f"attention {cfg.attention!r} has none")
    if cfg.kv_heads != cfg.n_heads and not has("gqa"):
        raise ConfigError(f"attention {cfg.attention!r} does not support grouped KV heads (n_kv_heads)")
    if pos.supports.get("kind") == "rotary" and cfg.head_dim % 2:
        raise ConfigError(f"position {cfg.position!r} needs an even head_dim, got {cfg.head_dim}")
    if cfg.causal and not has("causal"):
        raise ConfigError(f"attention {cfg.attention!r} cannot do causal attention")
    if not cfg.causal and not has("bidirectional"):
        raise ConfigError(f"attention {cfg.attention!r} is causal-only; it cannot run with causal=False")
    if pos.supports_("needs_bias"):
        takes = has("bias") or (pos.supports_("alibi") and has("alibi"))
        if not takes:
            raise ConfigError(f"position {cfg.position!r} adds a bias to attention scores, which attention "
                              f"{cfg.attention!r} cannot take; use one of: {', '.join(_bias_attentions(cfg.position))}")
    why = layer.check(cfg) if layer.check is not None else None
    if why:
        raise ConfigError(f"attention {cfg.attention!r}: {why}")
    for name in _attention_spec(cfg.attention).requires:
        if getattr(cfg, name) is None:
            raise ConfigError(f"attention {cfg.attention!r} needs a {name} size: set {name}=W")
    if cfg.window is not None:
        if not has("window"):
            raise ConfigError(f"attention {cfg.attention!r} has no sliding-window mode; unset window or use "
                              f"one of: {', '.join(k for k in ATTENTION.keys() if ATTENTION[k].supports_('window'))}")
        if not cfg.causal:
            raise ConfigError("a sliding window is defined for causal models only (causal=True)")
    if device is not None:
        for alternatives, what in needed:
            if not any(layer.supports_on(f, device) for f in alternatives):
                raise UnavailableError(f"attention {cfg.attention!r} cannot take {what} on {device}")
        if backward and not layer.supports_on("backward", device):
            raise UnavailableError(f"attention {cfg.attention!r} has no backward pass on {device}, so it cannot train there")
        if (backward and pos.supports_("needs_bias") and pos.supports_("params")
                and not layer.supports_on("bias_grad", device)):
            raise UnavailableError(f"attention {cfg.attention!r} cannot backpropagate into the learned "
                                   f"{cfg.position} bias on {device}, so it cannot train with it there")


def _bias_attentions(position: str) -> list[str]:
    alibi = POSITION.get(position).supports_("alibi")  # an ALiBi bias also runs on kernels with native slopes
    return [k for k in ATTENTION.keys() if ATTENTION[k].supports_("bias") or (alibi and ATTENTION[k].supports_("alibi"))]


def is_valid(cfg: ModelConfig) -> tuple[bool, str]:
    try:
        validate_model(cfg)
    except ConfigError as exc:
        return False, str(exc)
    return True, ""


def variant_grid(base: ModelConfig) -> Iterator[ModelConfig]:
    """Every combination of the registries' keys (and both norm placements) applied to ``base``."""
    for a in ATTENTION.keys():
        for p in POSITION.keys():
            for n in NORM.keys():
                for act in ACTIVATION.keys():
                    for place in PLACEMENTS:
                        window = base.window if base.window is not None else (4 if "window" in _attention_spec(a).requires else None)
                        yield replace(base, attention=a, position=p, norm=n, activation=act,
                                      norm_placement=place, window=window)


# ---------------------------------------------------------------------------------------------------------------
# Memory: a closed-form lower bound of what a configuration needs, checked against the device before anything runs.

GiB = 2 ** 30


def param_count(cfg: ModelConfig) -> int:
    """Parameters of ``ablate.core.model.Transformer(cfg)``, in closed form (equal to ``num_params()``; tested for every
    norm, activation, position, placement, bias and KV-head layout):

    tied embedding ``V·d`` + position (``learned``: ``max_len·d``; ``t5_bias``: ``num_buckets·H``, shared by all
    layers) + per layer [2 norms + the attention layer's own count (its spec's ``param_count``; the standard layer:
    ``d·H·hd + d·2·Hkv·hd + H·hd·d``, + biases ``H·hd + 2·Hkv·hd + d``) + FFN (plain, ``f = int(ffn_mult·d)``: ``2·d·f`` (+ ``f + d``); GLU, ``h = max(1, int(2f/3))``: ``3·d·h``
    (+ ``2h + d``))] + a final norm for pre-norm + ``d`` per prepended sink token (``sink_token``). A norm has ``d``
    weights, plus ``d`` biases if it learns one.
    """
    d = cfg.d_model
    norm = d * (2 if NORM.get(cfg.norm).supports_("learned_bias") else 1)
    attn = _layer(cfg.attention).param_count(cfg)
    f = int(cfg.ffn_mult * d)
    if ACTIVATION.get(cfg.activation).supports_("glu"):
        g = max(1, int(2 * f / 3))
        ffn = 3 * d * g + ((2 * g + d) if cfg.bias else 0)
    else:
        ffn = 2 * d * f + ((f + d) if cfg.bias else 0)
    pos_params = POSITION.get(cfg.position).fn.param_count(cfg)  # the position slot states its own parameters
    final = norm if cfg.norm_placement == "pre" else 0
    # learned tokens the layer's model prepends to every sequence (variants/attention/sink_token.py: SinkTokenSpec)
    sink = d * int(getattr(_layer(cfg.attention), "sink_tokens", 0) or 0)
    return cfg.vocab_size * d + pos_params + cfg.n_layers * (2 * norm + attn + ffn) + final + sink


def estimate_memory_bytes(cfg: ModelConfig, *, batch: int, seq_len: int, training: bool, dtype_bytes: int = 4,
                          kv_cache_len: int | None = None, param_dtype_bytes: int | None = None) -> dict[str, int]:
    """A closed-form *lower bound* of the memory a forward (``training=False``) or a training step needs, in bytes:
    ``{"n_params", "params", "grads", "optimizer", "activations", "kv_cache", "total"}``.

    ``dtype_bytes``: activations and KV cache (2 under bf16 autocast); ``param_dtype_bytes`` (default
    ``dtype_bytes``): weights, gradients and AdamW's two moments (``training``: gradients ``P`` and moments ``2P``).
    With ``B = batch``, ``T = seq_len`` (query tokens), ``Tk = kv_cache_len or T`` (keys attended), ``d``, ``H``,
    ``2·kvd`` the elements per token the attention layer caches (its spec's ``cache_per_token``; the standard
    layer: k and v, ``2·Hkv·hd``), ``V = vocab_size``, FFN widths ``f``/``h`` as in :func:`param_count`, and
    ``S = B·H·T·Tk`` for a layer whose spec says ``materialises_scores`` (else 0), ``Sb = H·T·Tk`` for a bias
    position on a layer without ``native_bias`` (else 0), in elements:

    * training: what is alive when the forward ends (kept for backward, plus the logits). Per layer
      ``B·T·(6d + 2·kvd + F) + S``: the block input, both norm outputs (inputs of the projections), q, k, v, the
      attention output, the residual after attention, and F = ``f`` (plain FFN: the activation output) or ``3h``
      (GLU: gate, up and their product); dropout masks, rotary copies and kernel workspaces are not counted. Times
      ``n_layers``, plus ``B·T·2d`` for pre-norm (the final norm's input and output) or ``B·T·d`` for post-norm (the
      last block's output, the head's input) and ``2·B·T·V`` (logits and the cross-entropy's log-softmax);
      transients (the dense bias ``Sb``, pre-softmax scores) are not counted;
    * forward only: nothing is kept across layers, so the largest live set: ``max(B·T·(3d + 2·kvd) + S,
      B·T·(2d + F'), B·T·(d + V)) + Sb`` (attention: input, normed input, q, k, v; FFN: residual, normed input and
      F' = ``f`` or ``2h``; head: hidden and logits);
    * KV cache (``kv_cache_len``): the layer spec's ``cache_bytes`` for ``Tk`` tokens (``2·n_layers·B·kvd·Tk``).
    """
    if batch < 1 or seq_len < 1 or dtype_bytes < 1 or (kv_cache_len is not None and kv_cache_len < 1):
        raise ConfigError(f"estimate_memory_bytes: batch, seq_len, dtype_bytes and kv_cache_len must be >= 1 (got "
                          f"{batch}, {seq_len}, {dtype_bytes}, {kv_cache_len})")
    pb = dtype_bytes if param_dtype_bytes is None else param_dtype_bytes
    n = param_count(cfg)
    B, T, d, H, V = batch, seq_len, cfg.d_model, cfg.n_heads, cfg.vocab_size
    tk = kv_cache_len or T
    layer = _layer(cfg.attention)
    kv2 = layer.cache_per_token(cfg)  # 2·kvd for the standard layer
    f = int(cfg.ffn_mult * d)
    glu = ACTIVATION.get(cfg.activation).supports_("glu")
    g = max(1, int(2 * f / 3))
    scores = B * H * T * tk if layer.materialises_scores else 0
    bias = H * T * tk if POSITION.get(cfg.position).supports_("needs_bias") and not layer.native_bias else 0
    if training:
        per_layer = B * T * (6 * d + kv2 + (3 * g if glu else f)) + scores
        head_in = 2 * d if cfg.norm_placement == "pre" else d
        act = cfg.n_layers * per_layer + B * T * head_in + 2 * B * T * V
    else:
        act = max(B * T * (3 * d + kv2) + scores, B * T * (2 * d + (2 * g if glu else f)), B * T * (d + V)) + bias
    kv = layer.cache_bytes(cfg, kv_cache_len, dtype_bytes, B) if kv_cache_len else 0
    out = {"n_params": n, "params": n * pb, "grads": n * pb if training else 0,
           "optimizer": 2 * n * pb if training else 0, "activations": act * dtype_bytes, "kv_cache": kv}
    out["total"] = out["params"] + out["grads"] + out["optimizer"] + out["activations"] + out["kv_cache"]
    return out


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """Room left under a cgroup v2 memory limit (a container's), or None without one."""
    try:
        with open(os.path.join(root, "memory.max")) as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(root, "memory.current")) as fh:
            current = int(fh.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError):
        return None


def available_memory_bytes(device: Any) -> int | None:
    """Memory a new allocation can still get on ``device``, or None where it cannot be told (then nothing is
    refused). CUDA: free memory (``torch.cuda.mem_get_info``) plus what this process's caching allocator holds
    unused. CPU: ``MemAvailable`` from /proc/meminfo (else ``os.sysconf`` available pages), capped by a cgroup v2
    limit."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(idx)
        return int(free + torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx))
    if dev.type != "cpu":
        return None
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def _gib(b: int) -> str:
    x = b / GiB
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}" if x >= 0.01 else f"{x:.1g}"


def check_fits(estimate: dict[str, int], device: Any, *, what: str = "this configuration", hint: str | None = None,
               available: int | None = None) -> int | None:
    """Refuse (one-line :class:`ConfigError`) an :func:`estimate_memory_bytes` whose total exceeds the memory
    available on ``device`` (``available``: given instead of measured, e.g. in tests). The estimate is a lower bound,
    so a refusal is certain to be right and a borderline configuration runs. Returns the available bytes (None where
    they cannot be told). ``hint``: what to lower, in the suite's setting names."""
    avail = available if available is not None else available_memory_bytes(device)
    total = int(estimate["total"])
    if avail is None or total <= avail:
        return avail
    state = estimate["params"] + estimate.get("grads", 0) + estimate.get("optimizer", 0)
    state_name = "params+grads+AdamW" if estimate.get("optimizer", 0) else "params"
    parts = {"params": state, "activations": estimate["activations"], "kv_cache": estimate.get("kv_cache", 0)}
    if hint is None:
        biggest = max(parts, key=parts.get)
        hint = {"params": "model.d_model, model.n_layers or the vocabulary",
                "activations": "the batch size or sequence length (or use a flash-style attention)",
                "kv_cache": "the batch size or context length (or use fewer KV heads)"}[biggest]
    dev = str(device)
    raise ConfigError(f"{what} needs ~{_gib(total)} GiB ({state_name} {_gib(state)} GiB, activations "
                      f"{_gib(estimate['activations'])} GiB, KV cache {_gib(parts['kv_cache'])} GiB) but the {dev} has "
                      f"{_gib(avail)} GiB available; lower {hint}")
