"""The recall suite end to end through the command line: rows (ok and status rows), resume, the report, the claims
engine's verdicts on synthetic rows, the dry run's plan and refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ablate.cli import main
from ablate.suites.recall import recall_claims, report

VERDICTS = {"reproduced", "not reproduced", "inconclusive", "not testable"}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def test_micro_run_rows_resume_and_report(tmp_path, capsys):
    args = ("run", "--suite", "recall", "--preset", "micro", "--device", "cpu", "--out", str(tmp_path),
            "--no-progress", "--sweep", "model.attention=sdpa,linear,flash_attn")
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    path = tmp_path / "recall" / "cpu-micro.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["attention"]: r["status"] for r in rows} == {"sdpa": "ok", "linear": "ok",
                                                          "flash_attn": "unavailable"}
    bad = next(r for r in rows if r["status"] != "ok")
    assert bad["reason"] and bad["value"] is None
    for r in (r for r in rows if r["status"] == "ok"):
        assert r["suite"] == "recall" and r["metric"] == "accuracy" and r["value"] == r["accuracy"]
        assert r["answers"] == 64 * 4 and 0 <= r["correct"] <= r["answers"]
        assert sum(r["dist.dist_total"]) == r["answers"] and r["state_bytes"] > 0
        assert r["steps"] == 12 and r["examples"] == 12 * 16 and len(r["curve.val_accuracy"]) == 3
        assert r["val_accuracy"] == r["curve.val_accuracy"][-1]  # the last curve point is the row's validation
        assert r["train_flops"] > r["eval_flops"] > 0 and r["run_s"] > 0 and r["cpu_s"] > 0
    code, out, err = cli(capsys, *args)  # resume: the finished rows are not run again
    assert code == 0, err
    assert len(path.read_text().splitlines()) == 4  # the unavailable row is retried, the ok ones are not
    code, out, err = cli(capsys, "report", str(path), "--out", str(tmp_path / "rep"))
    assert code == 0, err
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"recall_points.md", "recall_claims.md", "recall_index.md", "recall_accuracy.png",
            "recall_memory.png"} <= names
    index = (tmp_path / "rep" / "recall_index.md").read_text()
    assert "Rows that did not run" in index and "flash_attn" in index


def _rows(acc: dict, far: dict | None = None, seeds=(0, 1, 2), improving=False) -> pd.DataFrame:
    """Synthetic ok rows: acc maps (attention, d_model, window, form) -> accuracy; far: window rows' accuracy
    beyond reach (inside the window: the row's accuracy)."""
    out = []
    for (att, d, w, form), a in acc.items():
        for s in seeds:
            jitter = 0.001 * (s - 1)
            a_s = min(1.0, max(0.0, a + jitter))
            f = (far or {}).get((att, d, w), a_s)
            f = min(1.0, max(0.0, f + jitter))
            out.append({"suite": "recall", "status": "ok", "attention": att, "position": "rope", "d_model": d,
                        "n_heads": 1, "n_kv_heads": 1, "window": w, "seq_len": 64, "kv_pairs": 4, "lr": 3e-3,
                        "seed": s, "n_layers": 2, "accuracy": (a_s + f) / 2, "val_accuracy": a_s, "val_loss": 1.0,
                        "correct": int(1000 * a_s) + int(1000 * f), "answers": 2000, "state_form": form,
                        "state_kind": form, "state_bytes": 1000 * d, "params": 1, "steps": 10,
                        "still_improving": improving, "dist.dist": [2, 40], "dist.dist_correct":
                        [int(1000 * a_s), int(1000 * f)], "dist.dist_total": [1000, 1000]})
    return pd.DataFrame(out)


def test_claims_follow_the_rows():
    good = _rows({("sdpa", 16, None, "kv"): 1.0, ("sdpa", 32, None, "kv"): 1.0,
                  ("sliding_window", 32, 8, "window"): 0.98, ("linear", 16, None, "recurrent"): 0.3,
                  ("linear", 32, None, "recurrent"): 0.8}, far={("sliding_window", 32, 8): 0.1})
    v = dict(zip(recall_claims(good)["claim"].str[:20], recall_claims(good)["verdict"]))
    assert set(v.values()) <= VERDICTS
    assert list(v.values())[:4] == ["reproduced"] * 4 and list(v.values())[4] == "not testable"
    # the same claims fail when the rows say otherwise
    bad = _rows({("sdpa", 16, None, "kv"): 0.6, ("sdpa", 32, None, "kv"): 0.6,
                 ("sliding_window", 32, 8, "window"): 0.98, ("linear", 16, None, "recurrent"): 0.8,
                 ("linear", 32, None, "recurrent"): 0.3}, far={("sliding_window", 32, 8): 0.98})
    assert list(recall_claims(bad)["verdict"])[:3] == ["not reproduced"] * 3
    # linear attention at the guessing plateau (1/kv_pairs = 0.25) at every width: its growth is not testable
    flat = _rows({("linear", 16, None, "recurrent"): 0.26, ("linear", 32, None, "recurrent"): 0.295})
    assert list(recall_claims(flat)["verdict"])[2] == "not testable"
    assert "guessing plateau" in list(recall_claims(flat)["detail"])[2]
    # ... and then linear's gap to softmax at equal d_model says nothing about width: not testable either
    stuck = _rows({("sdpa", 16, None, "kv"): 1.0, ("sdpa", 32, None, "kv"): 1.0,
                   ("linear", 16, None, "recurrent"): 0.26, ("linear", 32, None, "recurrent"): 0.295})
    claims = recall_claims(stuck)
    assert list(claims["verdict"])[3] == "not testable"
    assert "measured: reproduced" in list(claims["detail"])[3] and "guessing plateau" in list(claims["detail"])[3]
    # a claim resting on an undertrained point is not testable; one seed is inconclusive
    assert recall_claims(_rows({("sdpa", 16, None, "kv"): 0.6}, improving=True))["verdict"][0] == "not testable"
    assert recall_claims(_rows({("sdpa", 16, None, "kv"): 1.0}, seeds=(0,)))["verdict"][0] == "inconclusive"


def test_report_from_synthetic_rows(tmp_path):
    df = _rows({("sdpa", 16, None, "kv"): 1.0, ("linear", 16, None, "recurrent"): 0.5})
    df["preset"], df["device"], df["vocab_size"], df["examples"] = "micro", "cpu", 64, 10
    files = report(df, tmp_path)
    assert (tmp_path / "recall_memory.png") in files and (tmp_path / "recall_claims.md") in files
    assert "| linear" in (tmp_path / "recall_points.md").read_text()


def test_dry_run_plans_the_figure_2_grid(capsys):
    code, out, err = cli(capsys, "run", "--suite", "recall", "--preset", "gpu", "--device", "cpu", "--dry-run")
    assert code == 0, err
    # 4 lengths x 4 widths x (sdpa + sliding_window at 2 windows + linear) x 4 learning rates
    assert "plan: 256 task(s)" in out and "estimate:" in out and "nothing was run" in out


@pytest.mark.parametrize("argv,needle", [
    (("--sweep", "model.attention=nope"), "valid:"),
    (("--set", "model.attention=sdpa"), "--sweep model.attention"),
    (("--set", "data.seq_lens=33"), "even"),
    (("--preset", "huge"), "valid:"),
])
def test_bad_settings_are_one_line(capsys, tmp_path, argv, needle):
    base = ["run", "--suite", "recall", "--device", "cpu", "--out", str(tmp_path), "--dry-run"]
    if "--preset" not in argv:
        base += ["--preset", "micro"]
    code, out, err = cli(capsys, *base, *argv)
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "recall").exists()
