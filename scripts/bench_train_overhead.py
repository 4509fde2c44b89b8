#!/usr/bin/env python
"""What the training harness costs: the training suite's tokens/s for one grid point next to a bare PyTorch loop
training the same model on the same batches.

    python scripts/bench_train_overhead.py                       # the `small` preset's reference point, 2 threads
    python scripts/bench_train_overhead.py --preset tiny --steps 60 --rounds 3 --threads 1

The suite's figure comes from a real ``ablate run --suite training`` restricted to the grid's reference point (one
seed, ``--steps`` steps, into a temporary folder, no resume): the row's ``tokens_per_s``, the steady throughput it
reports (first step and evaluations excluded, as the suite documents). The bare figure trains a fresh model of the
row's configuration (``ablate.core.model.Transformer`` -- the thing being measured, not the harness) with a loop written
here: batches drawn exactly as the suite draws them, AdamW with the same groups and settings, cross-entropy,
gradient clipping, no logging, no progress bar, no loss sync; wall time of steps 2..N with ``time.perf_counter``
(CPU work is synchronous; on CUDA the loop synchronises before reading the clock). The two alternate ``--rounds``
times; medians are compared, and the script exits 1 when the harness is more than ``--tolerance`` (5%) slower.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def suite_figure(args, out: Path) -> tuple[float, dict]:
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite
    from ablate.suites import training

    ref = training.grid_points(training.resolve(args.preset, []))[1].name
    overrides = (f"grid.only={ref}", f"train.steps={args.steps}", f"train.eval_every={args.steps}",
                 f"cpu_threads={args.threads}", "eval.tokens=4096", "eval.curve_tokens=1024")
    opts = RunOptions(suite="training", preset=args.preset, out=out, device=args.device, overrides=overrides,
                      progress=False, resume=False)
    path = run_suite(opts)
    rows = [r for r in read_rows(path) if r.get("status") == "ok"]
    if not rows:
        sys.exit(f"the suite wrote no ok row into {path}")
    return float(rows[-1]["tokens_per_s"]), rows[-1]


def bare_figure(args, row: dict) -> float:
    from ablate.core.config import ModelConfig
    from ablate.io.data import Batches, load_corpus
    from ablate.core.model import Transformer

    fields = {k.split(".", 2)[2]: v for k, v in row.items() if k.startswith("config.model.")}
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()}
    mcfg = ModelConfig(**fields)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Transformer(mcfg).to(device).train()
    corpus = load_corpus(None, default=row["config.data.corpus"], val_frac=row["config.data.val_frac"])
    batches = Batches(corpus.train, int(row["config.train.batch_size"]), int(row["config.train.seq_len"]), seed=0,
                      device=device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": row["config.train.weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=row["config.train.lr"],
                            betas=tuple(row["config.train.betas"]))
    clip = float(row["config.train.grad_clip"])
    tokens = int(row["config.train.batch_size"]) * int(row["config.train.seq_len"])
    t0 = None
    for step in range(args.steps):
        if step == 1:  # steady state: the first step (allocations, lazy init) excluded, as the suite does
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        x, y = batches(step)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    assert t0 is not None and math.isfinite(loss.item())
    return tokens * (args.steps - 1) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.05)
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error("--steps must be at least 3")
    torch.set_num_threads(args.threads)
    suite, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            s, row = suite_figure(args, Path(tmp) / f"r{i}")
            b = bare_figure(args, row)
            suite.append(s)
            bare.append(b)
            print(f"round {i + 1}: suite {s:,.0f} tok/s   bare loop {b:,.0f} tok/s   suite/bare {s / b:.3f}",
                  flush=True)
    ms, mb = statistics.median(suite), statistics.median(bare)
    ratio = ms / mb
    print(f"median: suite {ms:,.0f} tok/s, bare loop {mb:,.0f} tok/s -> the harness runs at {ratio:.3f}x the bare "
          f"loop ({(1 - ratio) * 100:+.1f}% cost; tolerance {args.tolerance * 100:.0f}%)")
    print(f"point {row['point']}, preset {args.preset}, {args.steps} steps of {row['tokens_per_step']} tokens, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    return 0 if ratio >= 1 - args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
