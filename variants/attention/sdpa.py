"""The SDPA family: ``torch.nn.functional.scaled_dot_product_attention`` with PyTorch's own dispatch (``sdpa``) or
forced to one kernel (``sdpa_flash``, ``sdpa_efficient``, ``sdpa_cudnn``, ``sdpa_math``); how a request is routed
(plain / bottom-right causal / explicit mask, K/V expansion for GQA); and the dispatch recorder that reads off which
aten kernel really ran (``backend_of``)."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ablate.errors import UnavailableError
from ablate.registry.keys import Availability
from ablate.variants.attention.contract import (BUILTIN, ALL_DTYPES, HALF, AttentionSpec, expand_kv_heads, first_line,
                                                masked_dense_bias, tiny_inputs, allowed_mask, attention_fn, check_call,
                                                fa_flops, full_caps)
from ablate.variants.attention.reference import naive_attention

__all__ = ["SPECS_SDPA", "sdpa_backend_name"]

_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - torch < 2.3
    SDPBackend = None  # type: ignore[assignment]
    sdpa_kernel = None  # type: ignore[assignment]

_FORCED = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
           "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_math": "MATH"}


def _sdpa_plain(q: Tensor, k: Tensor, v: Tensor, **kw: Any) -> Tensor:
    if q.shape[1] != k.shape[1]:
        if _SDPA_HAS_GQA:
            kw["enable_gqa"] = True
        else:
            k, v = expand_kv_heads(k, v, q.shape[1])
    return F.scaled_dot_product_attention(q, k, v, **kw)


def _sdpa_route(key: str, dev: str, h: int, hkv: int, tq: int, tk: int, causal: bool, has_bias: bool,
                window: int | None) -> tuple[str, bool]:
    """How ``sdpa_impl`` serves a request: ``(route, expand_kv)``.

    route: ``"plain"`` (``is_causal`` / no mask; also one causal query, which sees every key), ``"lower_right"`` (CUDA flash/efficient: bottom-right causal through
    ``torch.nn.attention.bias.causal_lower_right``, no mask tensor) or ``"mask"`` (an explicit boolean / additive
    mask). ``expand_kv``: K/V heads are materialised with ``repeat_interleave`` for GQA/MQA because that kernel path
    takes no ``enable_gqa``: the lower-right path calls the aten kernels directly, and PyTorch's memory-efficient
    kernel requires equal head counts ("For dense input, both fused kernels require query, key and value to have the
    same num_heads"). ``backend_of`` reports it as ``"+expand_kv"``.
    """
    if not has_bias and window is None and (not causal or tq == tk or tq == 1):
        route = "plain"  # one query (a decode step) is the last position: bottom-right causal masks nothing
    elif not has_bias and window is None and dev == "cuda" and key in ("sdpa_flash", "sdpa_efficient"):
        route = "lower_right"
    else:
        route = "mask"
    expand = h != hkv and (route == "lower_right" or not _SDPA_HAS_GQA
                           or (key == "sdpa_efficient" and dev == "cuda"))
    return route, expand


def _causal_lower_right(tq: int, tk: int) -> Any:
    """``torch.nn.attention.bias.causal_lower_right(tq, tk)``, built outside any active TorchDispatchMode.

    ``CausalBias`` is a data-less Tensor subclass. Constructed while a dispatch mode is active (``backend_of``'s aten
    recorder, a profiler or debug mode), the raw tensor is first wrapped as a plain ``Tensor`` and torch raises
    "Creating a new Tensor subclass CausalBias but the raw Tensor object is already associated to a python object of
    type Tensor". The mode still sees every aten op of the attention call itself.
    """
    from torch.nn.attention.bias import causal_lower_right
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        return causal_lower_right(int(tq), int(tk))


def sdpa_impl(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None,
               scale: float | None) -> Tensor:
    tq, tk = q.shape[2], k.shape[2]
    kw: dict[str, Any] = {} if scale is None else {"scale": scale}
    route, expand = _sdpa_route(key, q.device.type, q.shape[1], k.shape[1], tq, tk, causal, bias is not None,
                                window)
    if expand:
        k, v = expand_kv_heads(k, v, q.shape[1])
    if route == "plain" and tq == 1 and k.shape[1] < q.shape[1]:
        # one query per head over shared KV heads (GQA/MQA decode): the heads of a group become the query rows of
        # their KV head (FlashMLA's decode layout), so each KV head is read once, not once per query head; exact
        # (one query sees every key; head i uses KV head i // group, as repeat_interleave expands them)
        b, h, _, d = q.shape
        hkv = k.shape[1]
        out = F.scaled_dot_product_attention(q.reshape(b, hkv, h // hkv, d), k, v, **kw)
        return out.reshape(b, h, 1, v.shape[-1])
    if route == "plain":  # is_causal is top-left aligned: only for square calls (one query sees every key)
        return _sdpa_plain(q, k, v, is_causal=causal and tq > 1, **kw)
    if route == "lower_right":
        # CUDA flash refuses attn_mask and non-square is_causal; PyTorch's lower-right CausalBias drives the flash
        # kernel (is_causal there means bottom-right) or the efficient one (custom_mask_type=LOWER_RIGHT) directly.
        # Under sdpa_kernel(<one backend>) the other one is runtime-disabled, so no other kernel can be picked; if the
        # forced one cannot take the inputs, CausalBias materialises a mask and the forced call is refused.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_causal_lower_right(tq, tk), **kw)
    if bias is None:
        mask = allowed_mask(tq, tk, causal, window, q.device)  # bool (Tq, Tk)
    else:
        mask = masked_dense_bias(bias, tq, tk, causal, window, q.device, q.dtype).unsqueeze(0)  # (1,Hb,Tq,Tk)
        if key == "sdpa_flash" and mask.requires_grad and torch.is_grad_enabled():
            raise UnavailableError("sdpa_flash: PyTorch's CPU flash kernel cannot backpropagate into a score bias "
                                   "that requires grad; use sdpa or sdpa_math")
    return _sdpa_plain(q, k, v, attn_mask=mask, **kw)


def _run_forced(key: str, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` with only ``key``'s SDPA backend enabled; a refusal becomes UnavailableError with torch's reason."""
    if sdpa_kernel is None:
        raise UnavailableError(f"{key}: torch.nn.attention.sdpa_kernel needs torch >= 2.3")
    backend = getattr(SDPBackend, _FORCED[key], None)
    if backend is None:
        raise UnavailableError(f"{key}: this torch ({torch.__version__}) has no SDPBackend.{_FORCED[key]}")
    # torch explains a refusal only through warnings; capture them (re-issued unchanged when the call succeeds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(backend):
                out = fn()
            failed = None
        except RuntimeError as exc:
            if "No available kernel" not in str(exc) and "No viable backend" not in str(exc):
                raise
            failed = exc
    if failed is None:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out
    reasons = []
    for w in caught:
        msg = str(w.message).split("(Triggered internally")[0].strip()
        if msg and "kernel not used because" not in msg and msg not in reasons:
            reasons.append(msg)
    why = "; ".join(first_line(r, 200) for r in reasons[:2]) or "torch gave no reason"
    raise UnavailableError(f"{key}: PyTorch's {_FORCED[key].lower()} SDPA kernel refused these inputs: {why}")


def _make_sdpa(key: str) -> Callable[..., Tensor]:
    def attn(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
             scale: float | None = None) -> Tensor:
        check_call(key, q, k, v, causal, bias, window)
        if key == "sdpa":
            return sdpa_impl(key, q, k, v, causal, bias, window, scale)
        return _run_forced(key, lambda: sdpa_impl(key, q, k, v, causal, bias, window, scale))

    attn.__name__ = key
    attn.__qualname__ = key
    return attn


def _make_native(key: str, registered: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The package's own call for ``key``: ``F.scaled_dot_product_attention`` (under ``sdpa_kernel(<backend>)`` for a
    forced key) with no request check, warning capture or routing in between -- what a benchmark of SDPA times.
    Inputs this key serves through a mask, a lower-right causal bias or expanded K/V heads (:func:`_sdpa_route`)
    go through the registered call, since building those is part of what the key does; so does a refusal, which
    then raises the registered call's one-line reason."""
    backend = _FORCED.get(key)

    def native(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, bias: Any = None, window: int | None = None,
               scale: float | None = None) -> Tensor:
        route, expand = _sdpa_route(key, q.device.type, q.shape[1], k.shape[1], q.shape[2], k.shape[2], causal,
                                    bias is not None, window)
        if route != "plain" or expand or (q.shape[1] != k.shape[1] and not _SDPA_HAS_GQA) or (
                backend is not None and sdpa_kernel is None):
            return registered(q, k, v, causal=causal, bias=bias, window=window, scale=scale)
        kw: dict[str, Any] = {"is_causal": causal}
        if scale is not None:
            kw["scale"] = scale
        if q.shape[1] != k.shape[1]:
            kw["enable_gqa"] = True
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                return F.scaled_dot_product_attention(q, k, v, **kw)
        except RuntimeError as exc:
            if "No available kernel" not in str(exc) and "No viable backend" not in str(exc):
                raise
        return registered(q, k, v, causal=causal, bias=bias, window=window, scale=scale)  # its reason

    native.__name__ = f"{key}_native"
    return native


def _probe_sdpa(key: str) -> Callable[[str], Availability]:
    def probe(dev: str) -> Availability:
        dtype = torch.float32 if dev == "cpu" else torch.float16
        q, k, v = tiny_inputs(dev, dtype)
        _run_forced(key, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return True, ""

    return probe


# ---------------------------------------------------------------------------------------------------------------
# What really ran: the aten kernel below the CompositeImplicit SDPA.

# which aten op (seen by a TorchDispatchMode below the CompositeImplicit SDPA) means which kernel
_SDPA_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "_scaled_dot_product_flash_attention": "flash",
    "_flash_attention_forward": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_efficient_attention_forward": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_cudnn_attention_forward": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def _record_aten_ops(fn: Callable[[], Any]) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    names: list[str] = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with _Recorder():
        fn()
    return names


def sdpa_kernel_name(call: Callable[[], Any]) -> str:
    for name in _record_aten_ops(call):
        if name in _SDPA_OPS:
            return _SDPA_OPS[name]
    return "math"  # the math path is CompositeImplicit: only bmm/softmax show up


def expand_suffix(key: str, q: Tensor, k: Tensor, causal: bool, bias: Any, window: int | None) -> str:
    expand = _sdpa_route(key, q.device.type, q.shape[1], k.shape[1], q.shape[2], k.shape[2], causal,
                         bias is not None, window)[1]
    return "+expand_kv" if expand else ""


def sdpa_backend_name(key: str, q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any,
                      window: int | None) -> str:
    """``"sdpa:<kernel>[+expand_kv]"``: the call is executed once under the dispatch recorder."""
    fn = attention_fn(key)
    name = "sdpa:" + sdpa_kernel_name(lambda: fn(q, k, v, causal=causal, bias=bias, window=window))
    return name + expand_suffix(key, q, k, causal, bias, window)


def _refuse_head_dim_not_multiple_of_8(key: str) -> Callable[..., str | None]:
    def refusal(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Any, window: int | None) -> str | None:
        d = q.shape[-1]
        return f"{key}: head_dim must be a multiple of 8, got {d}" if d % 8 else None

    return refusal


def _spec(key: str, description: str, paper: str, caps: dict[str, dict[str, Any]], **kw: Any) -> AttentionSpec:
    fn = _make_sdpa(key)
    name = "torch.nn.functional.scaled_dot_product_attention" + (
        f" under sdpa_kernel(SDPBackend.{_FORCED[key]})" if key in _FORCED else "")
    return AttentionSpec(key=key, fn=fn, description=description, paper=paper, caps=caps,
                         flops=fa_flops, reference=naive_attention, native=_make_native(key, fn), native_name=name,
                         backend_name=lambda q, k, v, causal, bias, window: sdpa_backend_name(key, q, k, v, causal,
                                                                                              bias, window),
                         **kw).register(BUILTIN)


SPECS_SDPA: tuple[AttentionSpec, ...] = (
    _spec("sdpa", "torch scaled_dot_product_attention with PyTorch's default kernel dispatch",
          "Vaswani et al. 2017 (PyTorch SDPA)",
          {"cpu": full_caps(dtypes=ALL_DTYPES), "cuda": full_caps(dtypes=ALL_DTYPES)}),
    # CPU flash (_scaled_dot_product_flash_attention_for_cpu) takes masks, but not one that requires grad (a learned
    # bias such as T5's), so only ALiBi and windows there; the CUDA one takes no mask at all (bottom-right causal
    # goes through torch.nn.attention.bias.causal_lower_right).
    _spec("sdpa_flash", "SDPA forced to its FlashAttention kernel (FA2 inside PyTorch on CUDA; flash_cpu on CPU)",
          "Dao 2023 FlashAttention-2",
          {"cpu": full_caps(bias=False, dtypes=ALL_DTYPES),
           "cuda": full_caps(bias=False, alibi=False, window=False, dtypes=HALF)},
          probe=_probe_sdpa("sdpa_flash")),
    _spec("sdpa_efficient", "SDPA forced to its memory-efficient (xFormers/CUTLASS) kernel",
          "Rabe & Staats 2021; Lefaudeux et al. 2022 xFormers",
          {"cuda": full_caps(dtypes=("float16", "bfloat16", "float32"))},
          no_device_reason={"*": "needs CUDA: PyTorch has no memory-efficient SDPA kernel for CPU"},
          probe=_probe_sdpa("sdpa_efficient")),
    # cuDNN takes a float mask but no gradient for it (seen on an H100, torch 2.11): no training with t5_bias.
    _spec("sdpa_cudnn", "SDPA forced to its cuDNN fused-attention kernel",
          "NVIDIA cuDNN 9 fused attention (Shah et al. 2024 FlashAttention-3 style)",
          {"cuda": full_caps(bias_grad=False, dtypes=HALF)},
          no_device_reason={"*": "needs CUDA: cuDNN attention is a GPU kernel"},
          probe=_probe_sdpa("sdpa_cudnn"), refusal=_refuse_head_dim_not_multiple_of_8("sdpa_cudnn")),
    _spec("sdpa_math", "SDPA forced to its unfused math (reference) implementation", "Vaswani et al. 2017",
          {"cpu": full_caps(dtypes=ALL_DTYPES), "cuda": full_caps(dtypes=ALL_DTYPES)},
          materialises_scores=True),
)
