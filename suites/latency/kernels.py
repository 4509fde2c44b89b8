"""Part 1, ``kernel``: every attention key x pass (``fwd``, ``bwd``, ``fwd_bwd``) x shape of the plan
(:func:`~.config.plan_kernels`), each checked against its reference (:mod:`.reference`) before it is timed."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from ablate.core.attention_cost import attention_flops
from ablate.core.flops import tflops
from ablate.registry.keys import ATTENTION
from ablate.core.timing import bench_calls, first_call, free_memory, is_cuda, peak_memory_and_ms
from ablate.variants.attention import backend_of, check_call, spec, supports

from .config import LatencyConfig, Shape, compiles_per_shape, attention_spec, kernel_keys, kernel_passes, plan_kernels
from .constants import FLOPS_FA, PASSES
from .harness import Ctx, classify_failure, empty_metrics, timing_metrics
from .reference import FWD_TOL, GRAD_TOL, Reference, shape_inputs, shape_score_bias


def _kernel_config(cfg: LatencyConfig) -> dict[str, Any]:
    k = cfg.kernels
    return {"kernels": {"tokens": k.tokens, "hidden": k.hidden, "warmup_ms": k.warmup_ms, "rep_ms": k.rep_ms,
                        "min_reps": k.min_reps, "min_run_time": k.min_run_time, "check": k.check}}


def run_kernels(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    plan = plan_kernels(cfg, device)
    conf = _kernel_config(cfg)
    unavailable: dict[str, str] = {}
    for key in kernel_keys(cfg):
        ok, why = ATTENTION.get(key).available(device)
        if not ok:
            unavailable[key] = why
            ukey = {**ctx.base_key("kernel"), "attention": key, "pass": None, "seq_len": None, "batch": None,
                    "n_heads": None, "n_kv_heads": None, "head_dim": None, "causal": None,
                    "dtype": None, "bias": None, "window": None}
            ctx.write("unavailable", ukey, empty_metrics(), conf,
                      reason=f"UnavailableError: {key} unavailable on {device}: {why}")
    for shape, keys in plan:
        passes_of = {key: kernel_passes(cfg, shape, key) for key in keys}
        todo = [(key, [p for p in passes_of[key] if not ctx.done(shape.key(ctx, key, p))])
                for key in keys if key not in unavailable]
        todo = [(key, ps) for key, ps in todo if ps]
        ctx.advance(sum(len(passes_of[key]) for key in keys) - sum(len(ps) for _, ps in todo))
        if not todo:
            continue
        if ctx.clock.over():
            n = sum(len(ps) for _, ps in todo)
            ctx.skip_over_budget("kernel", [shape.key(ctx, key, p) for key, ps in todo for p in ps], conf)
            ctx.advance(n)
            continue
        try:
            _run_shape(ctx, shape, todo, conf)
        finally:
            free_memory(device)


def _run_shape(ctx: Ctx, shape: Shape, todo: list[tuple[str, list[str]]], conf: dict) -> None:
    device, k = ctx.device, ctx.cfg.kernels
    try:
        q, k_, v, dout = shape_inputs(shape, device, ctx.cfg.seed)
        bias = shape_score_bias(shape, device)
    except Exception as exc:  # OOM for the inputs themselves
        ctx.write_failure(exc, [shape.key(ctx, key, p) for key, ps in todo for p in ps], conf)
        ctx.advance(sum(len(ps) for _, ps in todo))
        free_memory(device, collect=True)
        return
    refs: dict[Any, Reference | None] = {}  # per reference function

    def reference(key: str, need_grad: bool) -> Reference | None:
        if not k.check:
            return None
        s = attention_spec(key)
        r = refs.get(s.reference)
        if r is None or (need_grad and r.dq is None):
            r = Reference(shape, q, k_, v, dout, bias, device, k.check_mb, s, need_grad)
            refs[s.reference] = r
        return r

    for key, passes in todo:
        ctx.advance(0, f"{key} {shape.describe()}")
        if ctx.clock.over():
            ctx.skip_over_budget("kernel", [shape.key(ctx, key, p) for p in passes], conf)
            ctx.advance(len(passes))
            continue
        try:
            with no_donated_buffers(key, device)[0]:
                _run_key(ctx, shape, key, passes, q, k_, v, dout, bias, reference, conf)
        finally:
            for t in (q, k_, v):
                t.grad = None
            free_memory(device)


def kernel_flops(key: str, pas: str, *, batch: int, n_heads: int, n_kv_heads: int, seq_len: int, head_dim: int,
                 causal: bool, window: int | None, linear_chunk: int | None = None) -> dict[str, Any]:
    """The FLOP columns of a kernel row (before timing): ``flops``, ``flops_convention`` and, for ``linear``, the
    chunk and the softmax-attention count (``equiv_flops``, only ever used for ``equiv_tflops``). Shared with
    ``scripts/recompute_flops.py``, which rewrites these columns of stored rows."""
    s = spec(key)
    chunk = s.chunk if linear_chunk is None else int(linear_chunk)
    fl, conv = s.flops(pas, batch=batch, n_heads=n_heads, n_kv_heads=n_kv_heads, seq_len=seq_len, head_dim=head_dim,
                       causal=causal, window=window, chunk=chunk)
    if conv == FLOPS_FA:
        return {"flops": fl, "flops_convention": FLOPS_FA}
    fa = attention_flops(batch, n_heads, seq_len, seq_len, head_dim, causal=causal, window=window, mode=pas)
    out = {"flops": fl, "flops_convention": conv, "equiv_flops": fa}
    if chunk is not None:
        out["linear_chunk"] = int(chunk)
    return out


def no_donated_buffers(key: str, device: str) -> tuple[Any, str | None]:
    """(context, label): ``torch._functorch.config.donated_buffer=False`` for a kernel that may be compiled here
    (``flex`` on CUDA, ``sliding_window`` when it routes to compiled flex), else a no-op.

    AOT autograd (torch >= 2.6) compiles a backward that *donates* saved tensors (reuses their memory), and then
    refuses ``backward(retain_graph=True)`` -- the way a backward-only pass is timed, as in FlashAttention's own
    benchmarks: one forward, its backward repeated. The option is read when the forward compiles (once per shape,
    inside this context) and, on newer torch, again at backward time, so the whole key's measurement runs in it.
    It only changes memory reuse inside the compiled backward; the kernels are the same. Rows of compiled kernels
    name it in ``compile_opts``. Older torch without the option has no donated buffers."""
    if not (is_cuda(device) or compiles_per_shape(key, device)):
        return contextlib.nullcontext(), None
    try:
        import torch._functorch.config as fconfig
    except Exception:  # pragma: no cover - torch without functorch
        return contextlib.nullcontext(), None
    if not hasattr(fconfig, "donated_buffer"):
        return contextlib.nullcontext(), None
    return fconfig.patch(donated_buffer=False), "torch._functorch.config.donated_buffer=False"


def _donated_buffer_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "donated buffer" in str(exc)


def time_backward(ctx: Ctx, fwd: Callable[[], Any], dout, inputs) -> tuple[Any, int | None]:
    """Backward alone: ``out.backward(dout, retain_graph=True)`` on one forward done outside the timed region, timed
    like every other call. Should a compiled backward still refuse retain_graph (a graph compiled with donated
    buffers before :func:`no_donated_buffers` took effect), the backward of a *fresh* forward is timed instead:
    each rep runs an untimed forward, flushes L2, then times ``backward`` between CUDA events; the row's ``timing``
    says so."""
    device = ctx.device
    out = fwd()
    run = lambda: out.backward(dout, retain_graph=True)  # noqa: E731
    _clear_grads(inputs)
    refused = False
    try:
        mem, est = peak_memory_and_ms(run, device)
    except RuntimeError as exc:
        if not _donated_buffer_error(exc):
            raise
        refused = True
    if refused:  # outside the except block, so the traceback no longer holds the graph
        out = run = None
        return _time_bwd_fresh(ctx, fwd, dout, inputs)
    _clear_grads(inputs)
    return ctx.bench(run, grad_to_none=inputs, est_ms=est), mem


def _time_bwd_fresh(ctx: Ctx, fwd: Callable[[], Any], dout, inputs) -> tuple[Any, int | None]:
    k, device = ctx.cfg.kernels, ctx.device
    held: dict[str, Any] = {}

    def before() -> None:
        _clear_grads(inputs)
        held["out"] = fwd()

    def run() -> None:
        held.pop("out").backward(dout)

    before()
    mem, est = peak_memory_and_ms(run, device)  # memory above the saved forward, as for every bwd row
    est = max(est, 1e-3)
    for _ in range(max(1, int(k.warmup_ms / est))):
        before()
        run()
    n = max(k.min_reps, min(1000, int(k.rep_ms / est)))
    t = bench_calls(run, device, n=n, before=before)
    _clear_grads(inputs)
    t.method = f"{t.method}; backward of a fresh untimed forward each rep (retain_graph refused)"
    return t, mem


def _clear_grads(inputs) -> None:
    for t in inputs:
        t.grad = None


class _Grads:
    """(B, T, H, D) leaves seen as (B, H, T, D) for the reference's gradient check (``.grad`` is all it reads)."""

    def __init__(self, t):
        self.grad = None if t.grad is None else t.grad.transpose(1, 2)


def _native_inputs(spec, fn, q, k, v, dout):
    """The kernel's inputs in the layout its package takes (contiguous, made outside any timed region), or the
    registry's own when that is its layout. Returns (call, inputs, dout, to_bhtd, fields)."""
    if spec.native is None:
        return fn, [q, k, v], dout, (lambda o: o), {"input_layout": "bhtd", "timed_call": spec.key}
    if spec.layout == "bhtd":
        return spec.native, [q, k, v], dout, (lambda o: o), {"input_layout": "bhtd",
                                                              "timed_call": spec.native_name or spec.key}
    qn, kn, vn = (x.detach().transpose(1, 2).contiguous().requires_grad_(x.requires_grad) for x in (q, k, v))
    return (spec.native, [qn, kn, vn], dout.transpose(1, 2).contiguous(), (lambda o: o.transpose(1, 2)),
            {"input_layout": spec.layout, "timed_call": spec.native_name or spec.layout})


def _run_key(ctx: Ctx, shape: Shape, key: str, passes: list[str], q, k, v, dout, bias, reference, conf) -> None:
    """Check, then time, one kernel at one shape. The timed call is the package's own: a key whose package takes
    another layout (``spec(key).layout``, e.g. flash-attn's (B, T, H, D)) gets contiguous inputs in that layout and
    ``spec(key).native`` is timed; the conversion from the registry's layout is timed apart (``layout_ms``)."""
    device = ctx.device
    spec = attention_spec(key)
    fn, inputs, dout_n, to_bhtd, native_fields = _native_inputs(spec, ATTENTION.get(key).fn, q, k, v, dout)
    qi, ki, vi = inputs
    call_kw = {"causal": shape.causal, "bias": bias, "window": shape.window}
    has_bwd = supports(key, "backward", device)
    need_grad = any(p != "fwd" for p in passes) and has_bwd
    common: dict[str, Any] = {"layout": shape.layout, "group": shape.group, "tokens": shape.batch * shape.seq_len,
                              "fwd_grad": has_bwd}
    common.update(native_fields)
    written: set[str] = set()

    def write(p: str, status: str, metrics: dict[str, Any], reason: str = "") -> None:
        ctx.write(status, shape.key(ctx, key, p), {**empty_metrics(), **common, **metrics}, conf, reason=reason)
        written.add(p)
        ctx.advance(1)

    def write_rest(status: str, reason: str, metrics: dict[str, Any] | None = None) -> None:
        for p in passes:
            if p not in written:
                write(p, status, metrics or {}, reason)

    # 1. can it run at all?
    try:
        with torch.set_grad_enabled(has_bwd):
            check_call(key, q, k, v, **call_kw)
    except Exception as exc:
        write_rest(*classify_failure(exc))
        return
    fl = {p: kernel_flops(key, p, batch=shape.batch, n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads,
                          seq_len=shape.seq_len, head_dim=shape.head_dim, causal=shape.causal, window=shape.window)
          for p in PASSES}
    flops = {p: f["flops"] for p, f in fl.items()}
    equiv = {p: f.get("equiv_flops") for p, f in fl.items()}
    common["flops_convention"] = fl["fwd"]["flops_convention"]
    if "linear_chunk" in fl["fwd"]:
        common["linear_chunk"] = fl["fwd"]["linear_chunk"]
    if not has_bwd:
        for p in passes:
            if p != "fwd":
                write(p, "unsupported", {}, f"UnavailableError: {key} does not support backward on {device}")

    if has_bwd:  # the timed closure is the bare call: nothing of the harness runs inside the timed region
        def fwd():
            return fn(qi, ki, vi, **call_kw)
    else:
        def fwd():
            with torch.no_grad():
                return fn(qi, ki, vi, **call_kw)

    # 2. first call (compilation happens here), correctness of the output against the reference, backend
    out = None
    try:
        holder: dict[str, Any] = {}
        first_s = first_call(lambda: holder.__setitem__("out", fwd()), device)
        out = holder.pop("out")
        common["first_call_s"] = first_s
        with torch.set_grad_enabled(has_bwd):
            common["backend"] = backend_of(key, q, k, v, **call_kw)
        opts = no_donated_buffers(key, device)[1]
        if opts and "compiled" in str(common["backend"]):
            common["compile_opts"] = opts
        if inputs[0] is not q:  # what converting the registry's layout to the package's costs, timed apart
            convert = lambda: [x.transpose(1, 2).contiguous() for x in (q, k, v)]  # noqa: E731
            common["layout_ms"] = ctx.bench(convert).median_ms
        ref = reference(key, need_grad)
        if ref is not None:
            err = ref.fwd_err(to_bhtd(out))
            common.update(rel_err=err, check_ref=ref.name, tol=FWD_TOL[shape.dtype])
            if not err <= FWD_TOL[shape.dtype]:
                write_rest("error", f"wrong output: relative error {err:.3g} vs {ref.name} exceeds "
                                    f"{FWD_TOL[shape.dtype]:g}; not timed")
                return
    except Exception as exc:
        failure = classify_failure(exc)
    else:
        failure = None
    if failure is not None:  # outside the except block: the traceback's frames (and their tensors) are gone
        out = None
        free_memory(device, collect=failure[0] == "oom")
        write_rest(*failure)
        return

    # 2b. first backward and the gradients' correctness; a failure here still lets the forward be timed
    if need_grad:
        try:
            first_b = first_call(lambda: out.backward(dout_n), device)
            common["first_bwd_s"] = first_b
            if ref is not None:
                gerr = ref.grad_err(q, k, v) if inputs[0] is q else ref.grad_err(*(_Grads(t) for t in inputs))
                common.update(grad_rel_err=gerr, grad_tol=GRAD_TOL[shape.dtype])
                if not gerr <= GRAD_TOL[shape.dtype]:
                    for p in passes:
                        if p != "fwd" and p not in written:
                            write(p, "error", {}, f"wrong gradients: relative error {gerr:.3g} vs {ref.name} "
                                                  f"exceeds {GRAD_TOL[shape.dtype]:g}; not timed")
        except Exception as exc:
            failure = classify_failure(exc)
        else:
            failure = None
        for t in inputs:
            t.grad = None
        if failure is not None:
            out = None
            free_memory(device, collect=failure[0] == "oom")
            for p in passes:
                if p != "fwd" and p not in written:
                    write(p, failure[0], {}, failure[1])
    out = None  # frees the graph of the checked call before timing

    # 3. time each pass
    for p in passes:
        if p in written:
            continue
        try:
            if p == "fwd":
                mem, est = peak_memory_and_ms(fwd, device)
                t_ = ctx.bench(fwd, est_ms=est)
                write(p, "ok", _kernel_metrics(t_, flops[p], mem, equiv[p]))
            elif p == "bwd":
                t_, mem = time_backward(ctx, fwd, dout_n, inputs)
                write(p, "ok", _kernel_metrics(t_, flops[p], mem, equiv[p]))
            else:
                run = lambda: fwd().backward(dout_n)  # noqa: E731
                mem, est = peak_memory_and_ms(run, device)
                t_ = ctx.bench(run, grad_to_none=inputs, est_ms=est)
                m = _kernel_metrics(t_, flops[p], mem, equiv[p])
                if "first_call_s" in common and compiles_per_shape(key, device):
                    m["compile_s"] = max(0.0, common["first_call_s"] + common.get("first_bwd_s", 0.0)
                                         - t_.median_ms / 1e3)
                write(p, "ok", m)
        except Exception as exc:
            failure = classify_failure(exc)
        else:
            failure = None
        out = run = None
        for t in inputs:
            t.grad = None
        if failure is not None:
            free_memory(device, collect=failure[0] == "oom")
            write(p, failure[0], {}, failure[1])


def _kernel_metrics(t, flops: float, mem: int | None, equiv_flops: float | None = None) -> dict[str, Any]:
    m = {**timing_metrics(t), "flops": flops, "tflops": tflops(flops, t.median_ms), "peak_mem_bytes": mem,
         "mem_note": None if mem is not None else "n/a on cpu"}
    if equiv_flops is not None:  # linear: the softmax-attention-equivalent rate, never in `tflops`
        m["equiv_tflops"] = tflops(equiv_flops, t.median_ms)
    return m
