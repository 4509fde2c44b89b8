"""`ablate run` as users of tqdm and lm-eval expect it (issue 23): stdout carries the results only (the summary
tables, the results line), progress bars and status lines go to stderr; `--no-summary` prints no summary table
anywhere; one summary table, not two; `--dry-run` honours `--task` and prices nothing when nothing is left."""

from __future__ import annotations

import pytest

from tests.helpers import cli


TABLE_MARKS = ("┏", "┃", "│", "|---", "|:--", "## extrapolation", "## training")
ONE_MODEL = ("--suite", "extrapolation", "--preset", "micro", "--device", "cpu", "--sweep", "model.position=alibi")
TRAINING = ("--suite", "training", "--preset", "micro", "--device", "cpu")


def _tables(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in TABLE_MARKS)]


def test_progress_and_status_on_stderr_results_on_stdout_one_table(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *ONE_MODEL, "--out", str(tmp_path), "--progress")
    assert code == 0, err
    path = tmp_path / "extrapolation" / "cpu-micro.jsonl"
    assert "━" in err and "━" not in out  # the progress bar
    assert "trained 1 model(s)" in err and "model(s);" not in out  # the suite's status line
    assert "caveat" not in out
    assert "## extrapolation: ppl" in out and out.count("## extrapolation: ppl") == 1  # ablate show's table, once
    assert not any(m in out + err for m in ("┏", "┃")), "the suite's own box table is printed too"
    assert out.rstrip("\n").splitlines()[-1].startswith(f"results: {path} (")


def test_no_summary_prints_no_summary_table(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *ONE_MODEL, "--out", str(tmp_path), "--no-summary", "--progress")
    assert code == 0, err
    assert not _tables(out) and not _tables(err), _tables(out) + _tables(err)
    path = tmp_path / "extrapolation" / "cpu-micro.jsonl"
    assert out.splitlines() == [f"results: {path} (3 new rows: 3 ok)"]
    code, out, err = cli(capsys, "run", *ONE_MODEL, "--out", str(tmp_path), "--dry-run")
    assert code == 0, err  # the estimate counts what is left to run, not the whole plan again
    assert "plan: 1 task(s), 1 done already, 0 to run" in out
    assert "estimate: nothing left to run (every task is done; --no-resume runs them again)" in out
    assert "FLOP" not in out


def test_training_no_summary_prints_no_summary_table(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *TRAINING, "--task", "modern@s0", "--out", str(tmp_path), "--no-summary",
                         "--no-progress")
    assert code == 0, err
    assert not _tables(out) and not _tables(err), _tables(out) + _tables(err)
    path = tmp_path / "training" / "cpu-micro.jsonl"
    assert out.splitlines() == [f"results: {path} (1 new rows: 1 ok)"]
    assert "trained 1 run(s)" in err  # the suite's status line: trained 1 run(s) in ... s; results: PATH


def test_dry_run_with_an_unknown_task_is_one_line_naming_how_to_list_them(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *TRAINING, "--out", str(tmp_path), "--task", "nosuch@s0", "--dry-run")
    assert code == 2 and "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: unknown training task 'nosuch@s0'"), err
    assert "without --task lists the 14 valid task ids" in lines[0] and "--dry-run" in lines[0]
    assert not tmp_path.joinpath("training").exists()


def test_dry_run_lists_only_the_selected_tasks(capsys, tmp_path):
    code, out, err = cli(capsys, "run", *TRAINING, "--out", str(tmp_path), "--task", "modern@s0", "--task",
                         "original@s0", "--dry-run")
    assert code == 0, err
    listed = [line.split("]", 1)[1].split(":", 1)[0].strip() for line in out.splitlines()
              if line.startswith("  [todo]") or line.startswith("  [done]")]
    assert sorted(listed) == ["modern@s0", "original@s0"]
    assert "plan: 2 task(s) (--task: 2 of 14), 0 done already, 2 to run" in out
    assert "[the whole plan: 14 task(s), 2 to run]" in out  # the estimate still prices every task
    assert out.rstrip().endswith("dry run: nothing was run or written")
    code, out, _ = cli(capsys, "run", *TRAINING, "--out", str(tmp_path), "--dry-run")
    assert code == 0 and "plan: 14 task(s), 0 done already, 14 to run" in out
