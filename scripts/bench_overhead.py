#!/usr/bin/env python
"""Show that the latency harness adds no overhead: the suite's figure for one kernel and shape next to a bare
``triton.testing.do_bench`` (CUDA) or a bare ``torch.utils.benchmark.Timer`` (CPU) of the same call.

    python scripts/bench_overhead.py                       # CUDA if visible: sdpa, n=8192, hd 128, bf16, fwd
    python scripts/bench_overhead.py --key flex --pass fwd_bwd --seq-len 4096 --causal
    python scripts/bench_overhead.py --device cpu          # CPU: tiny-preset shape (n=512, hd 64, fp32)

The suite's number comes from a real ``ablate run --suite latency`` restricted to that one measurement (into a
temporary folder, no resume); the bare number times the *package's own function* -- ``spec(key).native``:
``flash_attn.cute.flash_attn_func`` / ``flash_attn_func`` on contiguous (B, T, H, D) tensors, SDPA as
``F.scaled_dot_product_attention`` under the forced ``sdpa_kernel`` backend -- or, for a key without one, its
registered call, on inputs made the same way (same seed, shapes, dtype, ``requires_grad``), written here without
any of the suite's code. Both are repeated ``--rounds`` times, alternating, and the medians compared. On CUDA the
ratio must lie within 3% (exit 1 otherwise); on CPU it is printed (a shared CPU is noisier than that). For
information the registered call (the registry wrapper: request checks, layout conversion) is timed too.

The bare figure is ``triton.testing.do_bench`` with its defaults (warm-up 25 ms, rep 100 ms, median). The suite calls
the same function with the same settings (``kernels.warmup_ms`` / ``rep_ms``; a call slower than
``rep_ms / min_reps`` gets more reps, which does not apply to the default shape). An earlier GPU preset used
5 ms / 30 ms: its figure came out 7% lower than the bare one and unrepeatable, because those reps ran before the GPU
settled at its sustained clock (see ``ablate.core.timing``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch


def suite_figure(args, out: Path) -> dict:
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite

    hidden = args.heads * args.head_dim
    over = ["parts=kernel", f"kernels.keys={args.key}", f"kernels.seq_lens={args.seq_len}",
            f"kernels.head_dims={args.head_dim}", f"kernels.hidden={hidden}", f"kernels.tokens={args.tokens}",
            f"kernels.causal={str(args.causal).lower()}", f"kernels.dtype={args.dtype}", f"kernels.passes={args.pass_}",
            "kernels.layouts=", "kernels.extra_dtypes=", "kernels.alibi=false", "kernels.windows=",
            "budget_s=0", "kernels.budget_s=0"]
    if args.device == "cuda":  # compiled kernels (flex) compile per shape on CUDA only
        over.append(f"kernels.compiled_seq_lens={args.seq_len}")
    preset = "gpu" if args.device == "cuda" else "tiny"
    path = run_suite(RunOptions(suite="latency", preset=preset, overrides=tuple(over), out=out, device=args.device,
                                progress=False, resume=False))
    rows = [r for r in read_rows(path) if r.get("attention") == args.key and r.get("pass") == args.pass_]
    if not rows or rows[-1]["status"] != "ok":
        raise SystemExit(f"the suite did not measure {args.key}: {rows[-1]['status'] if rows else 'no row'} "
                         f"{rows[-1].get('reason') if rows else ''}")
    return rows[-1]


def bare_figure(args, registered: bool = False) -> float | None:
    """The package's own call on inputs in its layout (``registered``: the call through the registry instead)."""
    from ablate.registry.keys import ATTENTION
    from ablate.variants.attention import spec

    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    b = max(1, args.tokens // args.seq_len)
    gen = torch.Generator(device=args.device).manual_seed(0)  # the suite's input recipe (seed 0, this order)
    shape = (b, args.heads, args.seq_len, args.head_dim)
    q = torch.randn(shape, device=args.device, dtype=dt, generator=gen).requires_grad_()
    k = torch.randn(shape, device=args.device, dtype=dt, generator=gen).requires_grad_()
    v = torch.randn(shape, device=args.device, dtype=dt, generator=gen).requires_grad_()
    dout = torch.randn(shape, device=args.device, dtype=dt, generator=gen)
    s = spec(args.key)
    fn = ATTENTION.get(args.key).fn
    if not registered:
        if s.native is None:
            return None  # no package call apart from the registered one: the registered figure is the bare one
        fn = s.native
        if s.layout == "bthd":
            q, k, v = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))
            dout = dout.transpose(1, 2).contiguous()
    causal = args.causal
    from ablate.suites.latency import no_donated_buffers

    with no_donated_buffers(args.key, args.device)[0]:  # as the suite times it (compiled backward, retain_graph)
        return _bare_time(args, fn, q, k, v, dout, causal)


def _bare_time(args, fn, q, k, v, dout, causal):
    if args.pass_ == "fwd":
        call = lambda: fn(q, k, v, causal=causal)  # noqa: E731
    elif args.pass_ == "fwd_bwd":
        call = lambda: fn(q, k, v, causal=causal).backward(dout)  # noqa: E731
    else:
        out = fn(q, k, v, causal=causal)
        call = lambda: out.backward(dout, retain_graph=True)  # noqa: E731
    call()  # compile / warm
    if args.device == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(call, grad_to_none=[q, k, v] if args.pass_ != "fwd" else None,
                                     return_mode="median")
        return float(ms)
    from torch.utils.benchmark import Timer

    def stmt():
        if args.pass_ != "fwd":
            q.grad = k.grad = v.grad = None
        call()

    m = Timer("stmt()", globals={"stmt": stmt}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=0.5)
    return m.median * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    ap.add_argument("--key", default="sdpa")
    ap.add_argument("--pass", dest="pass_", default="fwd", choices=("fwd", "bwd", "fwd_bwd"))
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.03)
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    args.seq_len = args.seq_len or (8192 if gpu else 512)
    args.head_dim = args.head_dim or (128 if gpu else 64)
    args.heads = args.heads or ((2048 if gpu else 128) // args.head_dim)
    args.tokens = args.tokens or (16384 if gpu else 1024)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")

    suite_ms, bare_ms, reg_ms = [], [], []
    row = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            row = suite_figure(args, Path(tmp) / f"r{i}")
            suite_ms.append(float(row["time_ms"]))
            r = bare_figure(args, registered=True)
            reg_ms.append(r)
            b = bare_figure(args)
            bare_ms.append(r if b is None else b)
    s, b = statistics.median(suite_ms), statistics.median(bare_ms)
    ratio = s / b
    what = (f"{args.key} {args.pass_} n={args.seq_len} b={max(1, args.tokens // args.seq_len)} h={args.heads} "
            f"d={args.head_dim} {'causal' if args.causal else 'non-causal'} {args.dtype} on {args.device}")
    bare_name = "triton.testing.do_bench (median)" if gpu else "torch.utils.benchmark blocked_autorange (median)"
    print(what)
    how = (f", warm-up {row.get('config.kernels.warmup_ms')} ms, rep {row.get('config.kernels.rep_ms')} ms, "
           f"{row.get('reps')} reps; bare: do_bench's defaults, 25 ms / 100 ms" if gpu else f", {row.get('reps')} reps")
    print(f"  backend            : {row.get('backend')}  (suite timing: {row.get('timing')}{how})")
    print(f"  timed call         : {row.get('timed_call')} on {row.get('input_layout')} inputs"
          + (f"; layout conversion {row.get('layout_ms'):.4f} ms apart" if row.get("layout_ms") else ""))
    print(f"  ablate suite       : {s:.4f} ms   rounds: {', '.join(f'{x:.4f}' for x in suite_ms)}")
    print(f"  bare call          : {b:.4f} ms   rounds: {', '.join(f'{x:.4f}' for x in bare_ms)}   [{bare_name}]")
    print(f"  ratio suite / bare : {ratio:.4f}  ({(ratio - 1) * 100:+.2f}%)")
    rg = statistics.median(reg_ms)
    print(f"  (info) the registered call (registry wrapper, (B, H, T, D) inputs): {rg:.4f} ms; "
          f"registered / bare = {rg / b:.4f}")
    if gpu and abs(ratio - 1) > args.tolerance:
        print(f"FAIL: the suite's figure differs from the bare do_bench by more than {args.tolerance:.0%}")
        return 1
    if gpu:
        print(f"OK: within {args.tolerance:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
