#!/usr/bin/env python
"""Recompute the derived FLOP columns of stored latency rows from their shapes and measured times.

    python scripts/recompute_flops.py results/latency/gpu.jsonl results/latency/cpu.jsonl
    python scripts/recompute_flops.py --check results/latency/*.jsonl      # exit 1 if a file would change

Why: rows written before the fix gave ``linear`` attention the softmax-attention count (``4·b·h·n²·d``), so its
``tflops`` were impossible (1834 "TFLOP/s" on an H100 whose dense bf16 peak is 989). This rewrites, for every ``ok``
latency row with a time:

* ``part = kernel``: ``flops`` (``linear``: the FLOPs of the linear-attention algorithm that ran, with
  ``linear_chunk``, the chunk size in effect -- 64, ``variants.attention.LINEAR_CHUNK``, since the kernel was added;
  every other key: the FlashAttention convention, unchanged), ``flops_convention`` (``fa`` / ``linear``), ``tflops``
  = flops / ``time_ms``, and for ``linear`` ``equiv_tflops`` (the softmax-equivalent rate, the old number);
* ``part = train`` with ``attention = linear``: ``model_flops`` (its attention term by the linear algorithm),
  ``flops_convention``, ``tflops`` and ``mfu`` (against the row's own ``peak_tflops``); other train rows get
  ``flops_convention = fa`` and unchanged numbers.

Nothing measured is touched: times, spreads, reps, memory, errors, shapes, keys, timestamps and every other column
keep their values (the script checks this before writing), other rows and the line order stay byte-identical, and a
second run changes nothing. The counts come from the suite's own functions (``kernel_flops``, ``train_flops``), so
stored and newly measured rows agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DERIVED = {"flops", "tflops", "flops_convention", "linear_chunk", "equiv_tflops", "model_flops", "mfu"}
NUMBERS = ("flops", "tflops", "model_flops", "mfu")  # derived values that existed before (the rest are new labels)


def _dumps(row: dict[str, Any]) -> str:
    # exactly the writer's serialisation (ablate.store.results._serialize)
    return json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def recompute_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` with its derived FLOP columns recomputed (the row itself when nothing applies)."""
    from ablate.core.flops import tflops
    from ablate.suites.latency import FLOPS_FA, kernel_flops, train_flops

    if row.get("suite") != "latency" or row.get("status") != "ok" or not row.get("time_ms"):
        return row
    ms = float(row["time_ms"])
    part = row.get("part")
    new = dict(row)
    if part == "kernel" and row.get("attention") and row.get("pass") and "flops" in row:
        f = kernel_flops(row["attention"], row["pass"], batch=int(row["batch"]), n_heads=int(row["n_heads"]),
                         n_kv_heads=int(row["n_kv_heads"]), seq_len=int(row["seq_len"]),
                         head_dim=int(row["head_dim"]), causal=bool(row["causal"]), window=row.get("window"),
                         linear_chunk=row.get("linear_chunk"))
        new["flops"] = f["flops"]
        new["flops_convention"] = f["flops_convention"]
        new["tflops"] = tflops(f["flops"], ms)
        if "linear_chunk" in f:
            new["linear_chunk"] = f["linear_chunk"]
            new["equiv_tflops"] = tflops(f["equiv_flops"], ms)
        return new
    if part == "train" and "model_flops" in row:
        if row.get("attention") != "linear":
            new["flops_convention"] = FLOPS_FA
            return new
        from ablate.core.config import ModelConfig

        mcfg = ModelConfig(d_model=int(row["d_model"]), n_layers=int(row["n_layers"]), n_heads=int(row["n_heads"]),
                           n_kv_heads=row.get("n_kv_heads"), attention="linear",
                           causal=bool(row.get("config.model.causal", True)), window=row.get("config.model.window"))
        flops, conv = train_flops(int(row["matmul_params"]), mcfg, int(row["batch"]), int(row["seq_len"]),
                                  linear_chunk=row.get("linear_chunk"))
        new["model_flops"] = flops
        new["flops_convention"] = conv
        new["tflops"] = tflops(flops, ms)
        peak = row.get("peak_tflops")
        new["mfu"] = new["tflops"] / peak if peak else None
        return new
    return row


def recompute_file(path: Path, *, write: bool = True) -> dict[str, int]:
    """Rewrite ``path`` in place (atomically); returns counts of changed rows by ``part/attention`` and whether
    their numbers changed or only labels (``flops_convention``, ``linear_chunk``, ``equiv_tflops``) were added."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, changed = [], {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            out.append(line)
            continue
        row = json.loads(line)
        new = recompute_row(row)
        if new is row:
            out.append(line)
            continue
        untouched = {k: v for k, v in row.items() if k not in DERIVED}
        if {k: v for k, v in new.items() if k not in DERIVED} != untouched:
            raise SystemExit(f"{path}:{i}: refusing to write, a measured column would change")
        text = _dumps(new) + ("\n" if line.endswith("\n") else "")
        if text != line:
            numbers = any(row.get(k) != new.get(k) for k in NUMBERS if k in row)
            what = f"{row.get('part')}/{row.get('attention')}" + (" (new numbers)" if numbers else " (labels)")
            changed[what] = changed.get(what, 0) + 1
        out.append(text)
    if write and changed:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(out), encoding="utf-8")
        os.replace(tmp, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    args = ap.parse_args(argv)
    any_change = False
    for f in args.files:
        changed = recompute_file(f, write=not args.check)
        any_change |= bool(changed)
        verb = "would change" if args.check else "rewrote"
        summary = ", ".join(f"{k}: {n}" for k, n in sorted(changed.items())) or "nothing to change"
        print(f"{f}: {verb if changed else 'unchanged'} ({summary})")
    return 1 if (args.check and any_change) else 0


if __name__ == "__main__":
    sys.exit(main())
