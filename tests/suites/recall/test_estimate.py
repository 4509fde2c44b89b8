"""The dry run's estimate of the recall suite rests on recall rows (these narrow models run far below the language-model
suites' FLOP/s); the rows carry the work and seconds it divides; the recall-memory front."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ablate.cli import main
from ablate.store.env import fingerprint
from ablate.suites.recall import StepCost, point_table, points, recall_cost, resolve, train_jobs
from ablate.plan.estimate import EvalWork, TrainJob
from ablate.suites.recall.aggregate import front_table
from ablate.suites.recall.measure import n_evals, point_work


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def _row(flops: float, cpu_s: float, threads: int = 1, **kw) -> dict:
    return {"suite": "recall", "status": "ok", "device": "cpu", "env.cpu": fingerprint().get("cpu"),
            "train_flops": flops * 0.9, "eval_flops": flops * 0.1, "cpu_s": cpu_s, "run_s": 3 * cpu_s,
            "threads": threads, **kw}


def test_cost_is_recall_flops_per_cpu_second_per_thread(tmp_path):
    f = tmp_path / "recall" / "cpu-tiny.jsonl"
    f.parent.mkdir(parents=True)
    rows = [_row(1e9, 1.0), _row(1e9, 2.0), _row(1e9, 4.0, threads=2),  # 1, 0.5, 0.5 GFLOP/s per thread-second
            _row(1e12, 1.0, suite="training"), _row(1e12, 1.0, status="oom"), _row(1e12, 1.0, device="cuda"),
            {**_row(1e12, 1.0), "env.cpu": "another cpu"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    cost = recall_cost("cpu", [tmp_path], gpu=None, cpu=fingerprint().get("cpu"))
    assert cost is not None and cost.flops_per_s == pytest.approx(0.5e9) and cost.step_s == 0
    assert "3 measured recall rows" in cost.source and "1/2 thread(s)" in cost.source
    assert recall_cost("cpu", [tmp_path / "nothing"], gpu=None, cpu=None) is None


def test_rows_of_two_sizes_fit_a_per_step_time_and_a_rate(tmp_path):
    # seconds = steps x 10 ms + FLOPs / 50 GFLOP/s, at two sizes (FLOPs per step 0.25 G and 1 G)
    rows = [_row(f * s, s * 0.010 + f * s / 50e9, steps=s) for f in (0.25e9, 1e9) for s in (1000, 2400)]
    f = tmp_path / "recall" / "cpu-tiny.jsonl"
    f.parent.mkdir(parents=True)
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cost = recall_cost("cpu", [tmp_path], gpu=None, cpu=fingerprint().get("cpu"))
    assert cost.step_s == pytest.approx(0.010) and cost.flops_per_s == pytest.approx(50e9)
    assert "ms per training step" in cost.source
    m = resolve("tiny").model
    assert StepCost(0.01, 50e9, "").seconds([TrainJob(m, 64, 32, 100)], [EvalWork(m, 32, 0)]) > 100 * 0.01


def test_dry_run_uses_recall_rows_or_says_it_has_none(tmp_path, capsys, monkeypatch):
    import ablate.suites.recall.suite as suite

    monkeypatch.setattr(suite, "measured_where", lambda out: [Path(out)])  # not the checkout's results/
    base = ("run", "--suite", "recall", "--preset", "tiny", "--device", "cpu", "--dry-run", "--out")
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, *base, str(tmp_path / "empty"))
    assert code == 0, err
    assert "no recall rows of this machine" in out and "measured recall rows" not in out
    f = tmp_path / "rows" / "recall" / "cpu-earlier.jsonl"  # another file: the plan reads its own
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(_row(1e15, 1.0)) + "\n")  # absurdly fast: the estimate must come out tiny
    code, out, err = cli(capsys, *base, str(tmp_path / "rows"))
    assert code == 0, err
    assert "measured recall rows" in out and "estimate: 0 s at" in out


def test_planned_work_is_what_a_run_does():
    cfg = resolve("tiny")
    p = points(cfg)[0]
    job, work = point_work(cfg, p)
    assert job.steps == 2400 and job.batch == 64 and job.seq_len == 32
    assert n_evals(cfg, p) == 8  # every 300 steps before the last, and at the end
    assert work.tokens == (250 * 8 + 1000) * 32
    jobs, evals = train_jobs(cfg, [0, 1, 2])
    assert len(jobs) == len(evals) == 3 * len(points(cfg)) == 24  # 4 attentions x 2 widths x 3 seeds


def test_front_keeps_the_points_nothing_beats():
    rows = []
    for att, sb, acc in (("sdpa", 4096, 1.0), ("sliding_window", 1024, 0.7), ("linear", 512, 0.9),
                         ("linear", 2048, 0.8)):  # the last: more state and less recall than linear at 512
        for s in (0, 1):
            rows.append({"suite": "recall", "status": "ok", "attention": att, "position": "rope", "d_model": sb // 16,
                         "n_heads": 1, "n_kv_heads": 1, "window": None, "seq_len": 32, "kv_pairs": 4, "lr": 3e-3,
                         "seed": s, "n_layers": 2, "accuracy": acc, "val_accuracy": acc, "val_loss": 1.0,
                         "correct": int(100 * acc), "answers": 100, "state_form": "kv", "state_kind": "kv",
                         "state_bytes": sb, "params": 1, "steps": 10, "still_improving": False})
    front = front_table(point_table(pd.DataFrame(rows)))
    assert list(front["attention"]) == ["linear", "sdpa"] and list(front["state_bytes"]) == [512, 4096]
