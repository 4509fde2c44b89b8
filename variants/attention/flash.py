"""``flash_attn``: Dao's flash-attn package, FA4 (CuTe DSL, package flash-attn-4) preferred on sm90+, else
FlashAttention-2 (the only one with ALiBi, through ``alibi_slopes``). ``ABLATE_FLASH_ATTN=fa2|fa4`` pins the
generation. Both packages are optional and imported on first use."""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable

import torch
from torch import Tensor

from ablate.errors import UnavailableError
from ablate.registry.keys import Availability
from ablate.variants.attention.contract import (BUILTIN, HALF, AttentionSpec, bias_slopes, first_line, tiny_inputs, check_call,
                                                fa_flops, full_caps)
from ablate.variants.attention.reference import naive_attention

__all__ = ["SPEC"]

_FLASH_ERRORS: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def _flash_modules() -> dict[str, Callable[..., Any]]:
    mods: dict[str, Callable[..., Any]] = {}
    try:
        from flash_attn.cute import flash_attn_func as fa4  # type: ignore[import-not-found]

        mods["fa4"] = fa4
    except Exception as exc:  # ImportError, or a CUDA/cutlass import failure
        _FLASH_ERRORS["fa4"] = f"{type(exc).__name__}: {first_line(exc, 120)}"
    try:
        from flash_attn import flash_attn_func as fa2  # type: ignore[import-not-found]

        mods["fa2"] = fa2
    except Exception as exc:
        _FLASH_ERRORS["fa2"] = f"{type(exc).__name__}: {first_line(exc, 120)}"
    return mods


def _flash_missing_reason() -> str:
    return "flash-attn not installed: pip install 'ablate-bench[flash]' (FA2) or 'ablate-bench[flash4]' (FA4, sm90+)"


def flash_variant(q: Tensor, bias: Any = None) -> str:
    mods = _flash_modules()
    pinned = os.environ.get("ABLATE_FLASH_ATTN", "").strip().lower()
    if pinned:
        if pinned not in mods:
            raise UnavailableError(f"flash_attn: ABLATE_FLASH_ATTN={pinned} but that generation is not importable "
                                   f"({_FLASH_ERRORS.get(pinned, 'unknown variant')})")
        return pinned
    fa4_ok = "fa4" in mods and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] in (9, 10, 11)
    if fa4_ok and (bias is None or "fa2" not in mods):
        return "fa4"
    if "fa2" in mods:
        return "fa2"
    if "fa4" in mods:
        return "fa4" if fa4_ok else "fa4-unsupported-arch"
    raise UnavailableError(f"flash_attn: {_flash_missing_reason()}")


@functools.lru_cache(maxsize=None)
def _params(fn: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


def flash_impl(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
                scale: float | None) -> Tensor:
    """The registry's (B, H, T, D) call: to the package's (B, T, H, D) layout (FA4 wants it contiguous: a copy
    unless the caller's tensors already are (B, T, H, D) in memory, as a model's q projection is), the package's
    own call (:func:`_flash_native`), and back."""
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D) views
    if flash_variant(q, bias) == "fa4":
        qt, kt, vt = qt.contiguous(), kt.contiguous(), vt.contiguous()
    return _flash_native(qt, kt, vt, causal=causal, bias=bias, window=window, scale=scale).transpose(1, 2)


def _flash_native(qt: Tensor, kt: Tensor, vt: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                  scale: float | None = None) -> Tensor:
    """The package's own function on (B, T, H, D) tensors, nothing else: what a benchmark of flash-attn times."""
    variant = flash_variant(qt, bias)
    if variant not in _flash_modules():
        raise UnavailableError("flash_attn: FA4 needs an sm90/sm100 GPU and FlashAttention-2 is not installed")
    fn = _flash_modules()[variant]
    params = _params(fn)
    kw: dict[str, Any] = {"softmax_scale": scale, "causal": causal}
    if window is not None:
        if "window_size" not in params:
            raise UnavailableError(f"flash_attn ({variant}): this version has no window_size")
        kw["window_size"] = (window - 1, 0)
    if bias is not None:
        slopes = bias_slopes(bias)
        if slopes is None or "alibi_slopes" not in params:
            raise UnavailableError(f"flash_attn ({variant}): no support for this score bias")
        kw["alibi_slopes"] = slopes.to(device=qt.device, dtype=torch.float32).contiguous()
    out = fn(qt, kt, vt, **kw)
    if isinstance(out, tuple):  # FA4 returns (out, lse)
        out = out[0]
    return out


def flash_refusal(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str | None:
    """Limits of the installed generations for these inputs (may raise UnavailableError via flash_variant)."""
    d = q.shape[-1]
    mods = _flash_modules()
    if d > 256:
        return f"flash_attn: head_dim {d} > 256"
    variant = flash_variant(q, bias)
    if variant == "fa4" and d % 8:
        return f"flash_attn (FA4): head_dim must be a multiple of 8, got {d}"
    if bias is not None and variant != "fa2":
        return ("flash_attn: ALiBi needs FlashAttention-2's alibi_slopes (pip install 'ablate-bench[flash]'); "
                f"FA4 offers no ALiBi here (installed: {', '.join(sorted(mods)) or 'none'})")
    return None


def _flash_attn(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
                scale: float | None = None) -> Tensor:
    check_call("flash_attn", q, k, v, causal, bias, window)
    return flash_impl(q, k, v, causal, bias, window, scale)


def _probe_flash(dev: str) -> Availability:
    mods = _flash_modules()
    if not mods:
        return False, _flash_missing_reason()
    q, k, v = tiny_inputs(dev, torch.bfloat16, t=128)
    variant = flash_variant(q)
    if variant not in mods:
        return False, ("flash-attn-4 needs an sm90/sm100/sm110 GPU, FlashAttention-2 not installed: "
                       "pip install 'ablate-bench[flash]'")
    flash_impl(q, k, v, True, None, None, None)
    torch.cuda.synchronize()
    return True, ""


def _no_cuda_reason(dev: str) -> str:
    return "needs CUDA" if _flash_modules() else f"needs CUDA; {_flash_missing_reason()}"


SPEC = AttentionSpec(
    key="flash_attn",
    fn=_flash_attn,
    description="Dao's flash-attn package: FA4 (CuTe DSL) if importable on sm90+, else FlashAttention-2",
    paper="Dao 2023 FlashAttention-2; Shah et al. 2024 FlashAttention-3/Dao FA4",
    # ALiBi only through FlashAttention-2's alibi_slopes (see flash_refusal); no arbitrary bias.
    caps={"cuda": full_caps(bias=False, dtypes=HALF)},
    flops=fa_flops,
    reference=naive_attention,
    backend_name=lambda q, k, v, causal, bias, window: "flash_attn:" + flash_variant(q, bias),
    no_device_reason={"*": _no_cuda_reason},
    probe=_probe_flash,
    refusal=flash_refusal,
    feature_check=lambda feature, dev: feature != "alibi" or "fa2" in _flash_modules(),
    native_bias=True,
    layout="bthd",
    native=_flash_native,
    native_name="flash_attn.cute.flash_attn_func (FA4) / flash_attn.flash_attn_func (FA2)",
).register(BUILTIN)
