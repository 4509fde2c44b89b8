"""Parts 2 and 3, ``position`` and ``train``: each position variant's hooks on their own, and one training step of
the reference model for a few attention / position / norm / activation choices."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch

from ablate.core.config import ModelConfig, flatten
from ablate.core.flops import matmul_params, mfu, peak_tflops, step_flops, tflops
from ablate.core.model import Transformer
from ablate.registry.keys import ATTENTION, POSITION
from ablate.core.timing import first_call, free_memory, is_cuda, peak_memory_and_ms, sync
from ablate.core.train import TrainConfig, autocast_for, lm_loss, make_optimizer
from ablate.core.validate import validate_model
from ablate.variants.positions import Position, build_position

from .config import DTYPES, compiles_per_shape, train_model_config
from .constants import FLOPS_FA
from .harness import Ctx, timing_metrics, model_id


# ---------------------------------------------------------------------------------------------------------------
# Part 2: position variants on their own


def position_hooks(pos) -> list[str]:
    out = []
    if type(pos).embed is not Position.embed:
        out.append("embed")
    if type(pos).rotate is not Position.rotate:
        out.append("rotate_qk")
    if type(pos).score_bias is not Position.score_bias:
        out.append("bias_dense")
    return out


def run_positions(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    ps = cfg.positions
    dt = DTYPES[cfg.kernels.dtype]
    conf = {"positions": flatten(ps)}
    for key in (list(ps.keys) or POSITION.keys()):
        for n in ps.seq_lens:
            b = max(1, ps.tokens // n)
            d_model = ps.n_heads * ps.head_dim
            mcfg = ModelConfig(d_model=d_model, n_heads=ps.n_heads, max_len=n, train_len=n, position=key)
            base = {**ctx.base_key("position"), "position": key, "seq_len": n, "batch": b, "n_heads": ps.n_heads,
                    "head_dim": ps.head_dim, "dtype": cfg.kernels.dtype}
            try:
                pos = build_position(key, mcfg).to(device=device)
                ops = position_hooks(pos) + ["all"]
            except Exception as exc:
                ctx.write_failure(exc, [k for k in ({**base, "op": "all"},) if not ctx.done(k)], conf)
                ctx.advance(1)
                continue
            gen = torch.Generator(device=device).manual_seed(cfg.seed)
            x = torch.randn(b, n, d_model, device=device, dtype=dt, generator=gen)
            q = torch.randn(b, ps.n_heads, n, ps.head_dim, device=device, dtype=dt, generator=gen)
            kk = torch.randn_like(q)

            def embed():
                return pos.embed(x, 0)

            def rotate():
                return pos.rotate_q(q, 0, n), pos.rotate_k(kk, 0, n)  # what the layer calls (xpos: apart)

            def dense():
                sb = pos.score_bias()
                return None if sb is None else sb.dense(n, n, torch.device(device), dt)

            def all_hooks():
                return embed(), rotate(), dense()

            fns = {"embed": embed, "rotate_qk": rotate, "bias_dense": dense, "all": all_hooks}
            for op in ops:
                ctx.measure("position", {**base, "op": op}, partial(_time_hook, ctx, fns[op], pos, key), conf,
                            info=f"position {key} {op}")
            del x, q, kk, pos
            free_memory(device)


def _time_hook(ctx: Ctx, fn, pos, key: str) -> dict[str, Any]:
    with torch.no_grad():
        fn()  # warm caches (cos/sin tables) before timing
        mem, est = peak_memory_and_ms(fn, ctx.device)
        t = ctx.bench(fn, est_ms=est)
    return {**timing_metrics(t), "peak_mem_bytes": mem, "hooks": ",".join(position_hooks(pos)) or "identity",
            "kind": POSITION.get(key).supports.get("kind")}


# ---------------------------------------------------------------------------------------------------------------
# Part 3: training step


def train_flops(n_matmul: int, mcfg: ModelConfig, batch: int, seq_len: int,
                linear_chunk: int | None = None) -> tuple[float, str]:
    """(model FLOPs of one step, convention): ``6·N·tokens + 3·layers·attention_fwd``, the attention term by the
    FlashAttention convention, or for ``attention=linear`` the linear-attention algorithm that runs (so MFU counts the
    work the model needs, not a softmax it never computes). Shared with ``scripts/recompute_flops.py``."""
    return step_flops(n_matmul, mcfg, batch, seq_len, chunk=None if linear_chunk is None else int(linear_chunk))


def run_train(ctx: Ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    ts = cfg.train
    amp = ts.amp if is_cuda(device) else None
    peak = peak_tflops() if is_cuda(device) else None
    for choice in ts.choices:
        mcfg = train_model_config(ts, choice)
        for mode in ts.modes:  # eager, then compiled: side by side in the table
            key = {**ctx.base_key("train"), "choice": choice, "attention": mcfg.attention,
                   "position": mcfg.position, "norm": mcfg.norm, "activation": mcfg.activation,
                   "n_kv_heads": mcfg.n_kv_heads, "d_model": mcfg.d_model, "n_layers": mcfg.n_layers,
                   "n_heads": mcfg.n_heads, "seq_len": ts.seq_len, "batch": ts.batch, "amp": amp,
                   "model_id": model_id(mcfg), **({} if mode == "eager" else {"train_mode": mode})}
            ctx.measure("train", key, partial(_time_train_step, ctx, mcfg, amp, peak, mode),
                        {"model": flatten(mcfg), "train": flatten(ts)}, info=f"train {choice} {mode}",
                        error_config={"model": flatten(mcfg)},
                        available=partial(_available_here, mcfg.attention, device),
                        cleanup=partial(free_memory, device, collect=True))


def _available_here(attention: str, device: str) -> bool:
    return ATTENTION.get(attention).available(device)[0]


def _time_train_step(ctx: Ctx, mcfg: ModelConfig, amp: str | None, peak, mode: str = "eager") -> dict[str, Any]:
    """One training step of ``mcfg`` (forward, backward, grad clipping, AdamW), timed; the train row's metrics.
    ``mode="compiled"``: the model runs as ``torch.compile(model)`` (its first step compiles: ``compile_s``).

    MFU counts ``6 N tokens + 3 layers attention_fwd`` with causal attention's FLOPs halved (the FlashAttention
    convention: the work a causal kernel does); ``mfu_palm`` counts attention unhalved as PaLM's appendix B does
    (``6 N + 12 L H Q T`` per token), so it reads higher for the same step."""
    cfg, device = ctx.cfg, ctx.device
    ts = cfg.train
    dev = torch.device(device)
    validate_model(mcfg, device=device)
    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg).to(dev)
    tcfg = TrainConfig(steps=10, batch_size=ts.batch, seq_len=ts.seq_len, lr=1e-4, warmup=0, amp=amp)
    opt = make_optimizer(model, tcfg, dev)
    run_model = torch.compile(model) if mode == "compiled" else model
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    data = torch.randint(0, mcfg.vocab_size, (ts.batch, ts.seq_len + 1), device=device, generator=gen)
    xb, yb = data[:, :-1], data[:, 1:]
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with autocast_for(dev, amp):
            loss = lm_loss(run_model, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        return loss

    first_s = first_call(step, device)
    for _ in range(max(0, ts.warmup_steps - 1)):
        step()
    sync(device)
    base_mem = torch.cuda.memory_allocated() if is_cuda(device) else None
    extra, est = peak_memory_and_ms(step, device)
    t = ctx.bench(step, est_ms=est)
    n_mm = matmul_params(model)
    flops, conv = train_flops(n_mm, mcfg, ts.batch, ts.seq_len)
    palm = train_flops(n_mm, replace(mcfg, causal=False), ts.batch, ts.seq_len)[0] if conv == FLOPS_FA else None
    pk = peak
    compiled = mode == "compiled" or compiles_per_shape(mcfg.attention, device)
    return {**timing_metrics(t), "tokens_per_s": ts.batch * ts.seq_len / (t.median_ms / 1e3),
            "train_backend": mode, "model_flops": flops, "flops_convention": conv, "tflops": tflops(flops, t.median_ms),
            "mfu": mfu(flops, t.median_ms, pk) if pk is not None else None, "model_flops_palm": palm,
            "mfu_palm": mfu(palm, t.median_ms, pk) if pk is not None and palm is not None else None,
            "peak_tflops": pk.tflops if pk is not None else None,
            "peak_source": pk.source if pk is not None else "no peak for CPU (MFU n/a)",
            "peak_mem_bytes": (base_mem + extra) if extra is not None else None,
            "step_extra_mem_bytes": extra, "mem_note": None if extra is not None else "n/a on cpu",
            "params": model.num_params(), "matmul_params": n_mm, "first_step_s": first_s,
            "compile_s": max(0.0, first_s - t.median_ms / 1e3) if compiled else None}
