"""``flex``: PyTorch FlexAttention -- a ``block_mask`` for causal/window, a ``score_mod`` for ALiBi or a dense bias.
Compiled (``torch.compile``, once per new shape, never silently run eagerly instead) on CUDA; on CPU the eager,
unfused path unless ``ABLATE_FLEX_COMPILE_CPU=1``. Triton (CUDA) is optional and imported by the probe only."""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from ablate.errors import UnavailableError
from ablate.registry.keys import Availability
from ablate.variants.attention.contract import (BUILTIN, ALL_DTYPES, AttentionSpec, bias_slopes, first_line, LRUCache,
                                                check_call, fa_flops, full_caps)
from ablate.variants.attention.reference import naive_attention

__all__ = ["SPEC", "FLEX_RECOMPILE_LIMIT"]

_FLEX_COMPILED: dict[str, Callable[..., Any]] = {}
_BLOCK_MASKS = LRUCache(32)


def flex_mode(dev: str) -> str:
    if dev == "cuda" or os.environ.get("ABLATE_FLEX_COMPILE_CPU", "") not in ("", "0"):
        return "compiled"
    return "eager"


# Compiled flex specialises on shapes/dtype/GQA/score_mod (dynamic=False), so a sweep or a test matrix needs many
# graphs of the one flex_attention code object. Past dynamo's default recompile_limit (8) dynamo runs the frame
# *eagerly* (unfused, materialised scores) with only a log warning -- on the first H100 run every flex call after the
# 9th specialisation did, while reported as "flex:compiled". Compiled calls therefore run with this limit and
# fullgraph=True: past it (or on any graph break) they raise instead of degrading.
FLEX_RECOMPILE_LIMIT = 128


def _flex_callable(dev: str) -> Callable[..., Any]:
    from torch.nn.attention.flex_attention import flex_attention

    if flex_mode(dev) == "eager":
        return flex_attention
    if "fn" not in _FLEX_COMPILED:
        _FLEX_COMPILED["fn"] = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    return _FLEX_COMPILED["fn"]


def _compile_guard(limit: int) -> Any:
    """Dynamo config for a compiled kernel call: at least ``limit`` recompilations, and a hard error (never a silent
    eager run) once the limit is reached."""
    cfg = torch._dynamo.config
    over: dict[str, Any] = {}
    for name in ("recompile_limit", "cache_size_limit"):  # older torch: cache_size_limit (later an alias)
        if hasattr(cfg, name):
            if getattr(cfg, name) < limit:
                over[name] = limit
            break
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(cfg, name):
            over[name] = True
            break
    return cfg.patch(**over)


def _run_compiled(key: str, fn: Callable[..., Tensor], *args: Any, **kw: Any) -> Tensor:
    """Call a torch.compile'd kernel under :func:`_compile_guard`; the two compile-time refusals that are limits of
    the machine or of the compile cache (not bugs in the request) become UnavailableError with the reason."""
    try:
        with _compile_guard(FLEX_RECOMPILE_LIMIT):
            return fn(*args, **kw)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if type(exc).__name__ == "FailOnRecompileLimitHit":
            raise UnavailableError(f"{key}: torch.compile cache full ({FLEX_RECOMPILE_LIMIT} specialisations of "
                                   f"flex_attention in this process; raise {__name__}.FLEX_RECOMPILE_LIMIT); "
                                   f"refusing to run it uncompiled") from exc
        if "out of resource" in text and "Hardware limit" in text:
            at = text.find("out of resource")
            raise UnavailableError(f"{key}: the Triton kernel compiled for these inputs does not fit this GPU's "
                                   f"shared memory ({first_line(text[at:], 200)})") from exc
        raise


def _flex_block_mask(tq: int, tk: int, causal: bool, window: int | None, device: torch.device) -> Any:
    if not causal and window is None:
        return None
    from torch.nn.attention.flex_attention import create_block_mask

    off = tk - tq

    def make() -> Any:
        if window is None:
            def mask_mod(b, h, qi, kv):  # noqa: ANN001
                return kv <= qi + off
        else:
            def mask_mod(b, h, qi, kv):  # noqa: ANN001
                return (kv <= qi + off) & (kv > qi + off - window)
        return create_block_mask(mask_mod, None, None, tq, tk, device=device)

    return _BLOCK_MASKS.get_or((tq, tk, causal, window, str(device)), make)


def _flex_score_mod(bias: Any, tq: int, tk: int, device: torch.device, dtype: torch.dtype) -> Any:
    if bias is None:
        return None
    # flex computes scores in float32 (float64 for float64 inputs); ALiBi slopes are captured in that precision
    work = torch.float64 if dtype == torch.float64 else torch.float32
    off = tk - tq
    slopes = bias_slopes(bias)
    if slopes is not None:
        sl = slopes.to(device=device, dtype=work)

        def alibi(score, b, h, qi, kv):  # noqa: ANN001
            return score - sl[h] * (qi + off - kv).abs()

        return alibi
    # A dense (Hb, Tq, Tk) bias is read tile by tile inside the kernel. It is kept in the input dtype for fp16/bf16
    # (as SDPA and naive add it): half the memory traffic and shared memory of a float32 copy. With a float32 bias the
    # compiled bf16 head_dim-64 kernel on H100 (torch 2.11) asked for 240 KiB of shared memory (limit 227 KiB).
    dense = bias.dense(tq, tk, device, dtype if dtype in (torch.float16, torch.bfloat16) else work)
    if dense.dim() == 2:
        dense = dense.unsqueeze(0)
    dense = dense.contiguous()
    if dense.shape[0] == 1:
        d2 = dense[0]

        def shared_bias(score, b, h, qi, kv):  # noqa: ANN001
            return score + d2[qi, kv]

        return shared_bias

    def head_bias(score, b, h, qi, kv):  # noqa: ANN001  (h: query head, also under GQA)
        return score + dense[h, qi, kv]

    return head_bias


def _flex_kernel_options(dev: str, bias: Any) -> dict[str, Any] | None:
    """Triton options for compiled CUDA flex. A dense score bias is a (BLOCK_M, BLOCK_N) tile loaded in every loop
    iteration, which Triton's software pipeliner may stage in shared memory once per pipeline stage; such kernels use
    2 stages (forward and backward) instead of the default 3 to keep a margin below the per-block limit (227 KiB on
    H100). Costs some speed on dense-bias (T5) flex only; ALiBi and masks keep the defaults."""
    if dev == "cuda" and bias is not None and bias_slopes(bias) is None:
        return {"num_stages": 2}
    return None


def flex_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
               scale: float | None) -> Tensor:
    tq, tk = q.shape[2], k.shape[2]
    dev = q.device.type
    fn = _flex_callable(dev)
    block_mask = _flex_block_mask(tq, tk, causal, window, q.device)
    score_mod = _flex_score_mod(bias, tq, tk, q.device, q.dtype)
    kw: dict[str, Any] = {"score_mod": score_mod, "block_mask": block_mask, "scale": scale}
    if q.shape[1] != k.shape[1]:
        kw["enable_gqa"] = True
    opts = _flex_kernel_options(dev, bias) if flex_mode(dev) == "compiled" else None
    if opts:
        kw["kernel_options"] = opts
    if dev == "cpu" and not torch.is_grad_enabled():
        # torch refuses CPU flex for inputs that require grad even under no_grad; no graph is built anyway
        q, k, v = q.detach(), k.detach(), v.detach()
    if flex_mode(dev) == "compiled":
        return _run_compiled("flex", fn, q, k, v, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return fn(q, k, v, **kw)


def _flex(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
          scale: float | None = None) -> Tensor:
    check_call("flex", q, k, v, causal, bias, window)
    return flex_impl(q, k, v, causal, bias, window, scale)


def _probe_flex(dev: str) -> Availability:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False, f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs >= 2.5)"
    if dev == "cuda":
        try:
            import triton  # noqa: F401  # type: ignore[import-not-found]
        except ImportError:
            return False, "compiled FlexAttention needs triton (pip install triton)"
    return True, ""


def _flex_refusal(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str | None:
    if q.device.type == "cpu" and q.dtype == torch.float64 and flex_mode("cpu") == "compiled":
        return "flex: compiled FlexAttention on CPU takes float32/float16/bfloat16 only (unset ABLATE_FLEX_COMPILE_CPU)"
    return None


SPEC = AttentionSpec(
    key="flex",
    fn=_flex,
    description=("FlexAttention: block_mask for causal/window, score_mod for ALiBi/bias (compiled on CUDA, "
                 "eager on CPU)"),
    paper="Dong et al. 2024 FlexAttention",
    # torch: "FlexAttention does not support backward on CPU"
    caps={"cpu": full_caps(backward=False, dtypes=ALL_DTYPES),
          "cuda": full_caps(dtypes=("float16", "bfloat16", "float32"))},
    flops=fa_flops,
    reference=naive_attention,
    backend_name=lambda q, k, v, causal, bias, window: "flex:" + flex_mode(q.device.type),
    probe=_probe_flex,
    compiled=True,
    compiles_on=lambda dev: flex_mode(dev) == "compiled",
    refusal=_flex_refusal,
    native_bias=True,
).register(BUILTIN)
