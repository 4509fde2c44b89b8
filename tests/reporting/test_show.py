"""`ablate show`: the summary tables `ablate report` writes, printed as Markdown; nothing written; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.store.results import to_frame
from ablate.plan.runner import report_rows
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


@pytest.fixture(scope="module")
def latency(tmp_path_factory) -> Path:
    """A few committed latency rows: sdpa kernels, decode, and rows without a number."""
    lines = [line for line in (RESULTS / "latency" / "cpu.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip() and (lambda r: r.get("attention") == "sdpa" and r["part"] in ("kernel", "decode")
                                  or r["status"] == "unavailable")(json.loads(line))]
    path = tmp_path_factory.mktemp("show") / "latency.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_show_prints_the_reports_summary_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = RESULTS / "training" / "cpu-tiny.jsonl"
    code, out, err = cli(capsys, "show", str(src))
    assert code == 0, err
    assert out.startswith(f"{src}: training, ") and "## training: cpu-tiny/training_table" in out
    written = report_rows(to_frame(src), tmp_path / "report")  # what `ablate report` writes for the same rows
    table = next(f for f in written["training"] if f.name == "training_table.md")
    assert table.read_text(encoding="utf-8").rstrip() in out
    assert "training_findings" not in out  # a detail table: --all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # show itself wrote nothing


def test_show_all_adds_the_detail_tables(latency, capsys):
    code, summary, err = cli(capsys, "show", str(latency))
    assert code == 0, err
    assert "## latency: kernel_best" in summary and "## latency: decode" in summary
    assert "## latency: status" not in summary and "ablate show --all" in summary
    code, everything, err = cli(capsys, "show", str(latency), "--all")
    assert code == 0, err
    assert "## latency: status" in everything and "## latency: kernels_" in everything
    assert everything.index("## latency: kernel_best") < everything.index("## latency: status")
    assert "flash_attn" in everything and "needs CUDA" in everything  # the reasons of rows without a number
    assert not list(latency.parent.glob("*.md")) and not list(latency.parent.glob("*.png"))


def test_show_bad_input_is_one_line(tmp_path, capsys):
    code, _, err = cli(capsys, "show", str(tmp_path / "missing.jsonl"))
    assert code == 2 and err.startswith("ablate: error: ") and "does not exist" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    code, _, err = cli(capsys, "show", str(empty))
    assert code == 2 and "no result rows" in err and len(err.splitlines()) == 1
    bad = tmp_path / "latency.jsonl"
    bad.write_text('{"suite": "latency"}\n', encoding="utf-8")
    code, _, err = cli(capsys, "show", str(bad))
    assert code == 2 and "--skip-invalid" in err and len(err.splitlines()) == 1
