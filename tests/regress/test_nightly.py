"""`ablate nightly` end to end on CPU with micro presets: write a baseline, an unchanged run passes, a planted 20 %
slowdown fails the comparison (exit 1).

Timings on a shared CPU swing by far more than 20 % between two runs, so the CPU timer is replaced by a fixed one
(``ablate.core.timing.bench_cpu`` / ``bench_cpu_calls``: every measurement is 1 ms with p20/p80 at 0.94/1.06 ms; the
callable still runs once). Everything else is real: the suites run and write their rows, the report is made, and
the comparison reads the JSONL. The slowdown is planted with the nightly's own hook, ``ABLATE_NIGHTLY_SLOWDOWN=1.2``,
which scales the timing metrics of the freshly written rows before they are compared (docs/regressions.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ablate.core.timing as timing
import ablate.store.writers as writers
from ablate.cli import main
from ablate.regress.nightly import SLOWDOWN_ENV

LATENCY = ["kernels.keys=sdpa,naive,linear", "parts=kernel,train", "kernels.causal=true", "kernels.seq_lens=32",
           "kernels.layouts=gqa", "kernels.windows=", "kernels.alibi=false", "kernels.passes=fwd,fwd_bwd",
           "kernels.feature_passes=fwd", "train.choices=base"]
EXTRAPOLATION = ["positions=rope,alibi", "rope_scalings=rope_pi", "train.steps=8", "eval.factors=1,2"]


@pytest.fixture
def fixed_timer(monkeypatch):
    calls = {"n": 0}

    def fake(fn, *args, **kwargs):
        fn()
        calls["n"] += 1
        return timing.summarize([0.9, 0.94, 1.0, 1.06, 1.1], "fixed (test)")

    monkeypatch.setattr(timing, "bench_cpu", lambda fn, **kw: fake(fn))
    monkeypatch.setattr(timing, "bench_cpu_calls", lambda fn, **kw: fake(fn))
    # the fixed timings were not taken on a loaded machine (a loaded CPU marks real ones contended: never gated)
    monkeypatch.setattr(writers, "machine_load", lambda: 0.0)
    return calls


def nightly(capsys, tmp_path: Path, out: str, *extra: str) -> tuple[int, str, str]:
    args = ["nightly", "--device", "cpu", "--preset-latency", "micro", "--preset-extrapolation", "micro",
            "--baseline", str(tmp_path / "baselines"), "--out", str(tmp_path / out), "--no-progress",
            "--fail-if", "time_ms:10%", "--fail-if", "tflops:10%", "--fail-if", "ppl:5%"]
    args += [a for s in LATENCY for a in ("--set-latency", s)]
    args += [a for s in EXTRAPOLATION for a in ("--set-extrapolation", s)]
    with pytest.raises(SystemExit) as info:
        main(args + list(extra))
    out_, err = capsys.readouterr()
    return info.value.code, out_, err


def test_nightly_end_to_end(capsys, tmp_path, monkeypatch, fixed_timer):
    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    # 0. no baseline yet: refused before anything runs, in one line
    code, _, err = nightly(capsys, tmp_path, "n0")
    assert code == 2 and "no baseline results for latency, extrapolation under" in err and "--write-baseline" in err
    assert "--first-night" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "n0" / "results").exists()

    # 1. the first night writes the baseline and says so (the committed workflow passes --first-night)
    code, out, err = nightly(capsys, tmp_path, "n1", "--first-night", "--no-report")
    assert code == 0, err
    assert "first night: no baseline for this machine" in err and "baseline written:" in err
    assert "compare:" not in out
    manifest = json.loads((tmp_path / "n1" / "nightly.json").read_text())
    assert manifest["first_night"] is True and manifest["summary"].startswith("first night:")
    assert fixed_timer["n"] > 0
    base = sorted(p.relative_to(tmp_path / "baselines").as_posix() for p in (tmp_path / "baselines").rglob("*.jsonl"))
    assert [p.split("/", 1)[1] for p in base] == ["extrapolation-micro.jsonl", "latency-micro.jsonl"]
    assert base[0].startswith("cpu-")

    # 2. an unchanged run passes (and makes the report); with a baseline, --first-night compares as usual
    code, out, err = nightly(capsys, tmp_path, "n2", "--first-night")
    assert code == 0, out + err
    n2 = tmp_path / "n2"
    assert "compare: ok: 0 regression(s)" in out and "first night" not in err
    # stdout: the comparison only (its metrics table, then its verdict line); the suites' chatter is on stderr
    assert out.lstrip().startswith(("compare", "metrics:")), out
    assert "rows in" not in out and "rows in" in err
    assert "it/s" not in out and "perplexity" not in out.lower()  # progress and the suites' tables: not on stdout
    manifest = json.loads((n2 / "nightly.json").read_text())
    assert manifest["first_night"] is False
    assert manifest["rc"] == 0 and [s["step"] for s in manifest["steps"]] == [
        "env", "run latency", "run extrapolation", "report", "compare"]
    assert all(s["status"] == "ok" for s in manifest["steps"])
    assert manifest["steps"][1]["command"].startswith("ablate run --suite latency --preset micro --device cpu")
    idx = (n2 / "report" / "index.md").read_text()
    assert "ablate run --suite extrapolation --preset micro" in idx and "[latency_index.md]" in idx
    assert (n2 / "report" / "extrapolation_ppl.md").exists() and (n2 / "report" / "latency_kernel_best.md").exists()
    assert "No regression" in (n2 / "compare.md").read_text()
    assert json.loads((n2 / "github-benchmark" / "customSmallerIsBetter.json").read_text())
    assert (n2 / "env.json").exists()
    assert sorted(p.relative_to(n2 / "results").as_posix() for p in (n2 / "results").rglob("*.jsonl")) == [
        "extrapolation/cpu-micro.jsonl", "latency/cpu-micro.jsonl"]  # ablate.plan.runner.results_path under OUT/results

    # 3. a planted 20 % slowdown fails the comparison
    monkeypatch.setenv(SLOWDOWN_ENV, "1.2")
    code, out, err = nightly(capsys, tmp_path, "n3", "--no-report")
    assert code == 1, out + err
    assert "compare: FAIL" in out and "time_ms" in out
    data = json.loads((tmp_path / "n3" / "compare.json").read_text())
    regs = [e for e in data["entries"] if e["category"] == "regression"]
    assert regs and {e["suite"] for e in regs} == {"latency"}
    assert {e["metric"] for e in regs} == {"time_ms", "tflops"}
    assert all(e["change_pct"] == pytest.approx(20.0) for e in regs if e["metric"] == "time_ms")
    assert not [e for e in data["entries"] if e["suite"] == "extrapolation"]  # ppl is not a timing: unchanged
    assert json.loads((tmp_path / "n3" / "nightly.json").read_text())["rc"] == 1
    path = tmp_path / "n3" / "results" / "latency" / "cpu-micro.jsonl"  # <out>/results/<suite>/<device>-<preset>.jsonl
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(r.get("planted_slowdown") == 1.2 for r in rows if r["status"] == "ok")


def test_nightly_refuses_another_machine(capsys, tmp_path, monkeypatch, fixed_timer):
    """A baseline from a different GPU is refused in one line (exit 2) unless --allow-env-mismatch."""
    from ablate.store.results import append_row, make_row

    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    env = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "gpu-box"}
    append_row(tmp_path / "baselines" / "nvidia-h100" / "latency-gpu.jsonl",
               make_row("latency", "ok", {"part": "kernel", "attention": "sdpa", "device": "cuda",
                                          "device_name": "NVIDIA H100 80GB HBM3"}, {"time_ms": 1.0}, env=env))
    code, out, err = nightly(capsys, tmp_path, "n", "--suites", "latency", "--no-report")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("ablate: error: environments differ") and "H100" in lines[-1]
    code, out, err = nightly(capsys, tmp_path, "n", "--suites", "latency", "--no-report", "--allow-env-mismatch")
    assert code == 1, err  # compared across machines, nothing matched: a gate that compared nothing fails
    assert "nightly: compare: FAIL: no row matched" in err and "--allow-missing" in err
    code, out, err = nightly(capsys, tmp_path, "n", "--suites", "latency", "--no-report", "--allow-env-mismatch",
                             "--allow-missing", "--resume")
    assert code == 0, err
    assert "new" in out and "missing" in out


def test_nightly_first_night_on_another_machine(capsys, tmp_path, monkeypatch, fixed_timer):
    """--first-night with a baseline from other hardware only: this machine's rows are written next to it."""
    from ablate.store.results import append_row, make_row

    monkeypatch.delenv(SLOWDOWN_ENV, raising=False)
    env = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "gpu-box"}
    append_row(tmp_path / "baselines" / "nvidia-h100" / "latency-gpu.jsonl",
               make_row("latency", "ok", {"part": "kernel", "attention": "sdpa", "device": "cuda",
                                          "device_name": "NVIDIA H100 80GB HBM3"}, {"time_ms": 1.0}, env=env))
    code, out, err = nightly(capsys, tmp_path, "n", "--suites", "latency", "--no-report", "--first-night")
    assert code == 0, err
    assert "first night" in err
    written = sorted(p.parent.name for p in (tmp_path / "baselines").rglob("latency-*.jsonl"))
    assert written[0].startswith("cpu-") and written[1] == "nvidia-h100"


def test_bad_slowdown_and_suite(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(SLOWDOWN_ENV, "fast")
    code, _, err = nightly(capsys, tmp_path, "n", "--write-baseline")
    assert code == 2 and f"{SLOWDOWN_ENV}='fast' is not a number" in err
    monkeypatch.delenv(SLOWDOWN_ENV)
    code, _, err = nightly(capsys, tmp_path, "n", "--write-baseline", "--suites", "training")
    assert code == 2 and "unknown nightly suite 'training'" in err


def test_workflow_calls_the_same_entry_point():
    """The nightly workflow runs `ablate nightly` with options that exist (the local runner is the workflow)."""
    import re

    import typer

    from ablate.cli import app

    root = Path(__file__).resolve().parents[2]
    wf = root / ".github" / "workflows" / "nightly-gpu.yml"
    if not wf.exists():
        pytest.skip("no .github/workflows/nightly-gpu.yml in this tree")
    text = wf.read_text()
    assert "runs-on: [self-hosted, gpu]" in text and "schedule:" in text and "workflow_dispatch:" in text
    assert "nvidia-smi" in text and 'ablate nightly "${args[@]}"' in text
    step = text[text.index("- name: ablate nightly"):text.index("- name: Summary")]
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", step))
    cmd = typer.main.get_command(app).commands["nightly"]
    known = {o for p in cmd.params for o in list(p.opts) + list(p.secondary_opts)}
    assert used and used <= known, used - known
    assert {"--preset-latency", "--preset-extrapolation", "--baseline", "--write-baseline", "--first-night"} <= used
    # the first night's baseline is uploaded, and said to be one
    assert "steps.nightly.outputs.first_night == 'true'" in text and "::warning title=first night::" in text
    ci = (root / ".github" / "workflows" / "ci.yml").read_text()
    assert "bash .ci/run" in ci and "push:" in ci and "pull_request:" in ci


def test_a_contended_baseline_says_its_timings_will_not_gate(tmp_path, capsys):
    from ablate.regress.nightly import write_baseline
    from ablate.store.results import append_row, make_row

    path = tmp_path / "latency.jsonl"
    env = {"env.hostname": "box", "env.cpu": "cpu", "env.contended": True, "env.contended_by": "load 8.4 on 2 CPUs"}
    append_row(path, make_row("latency", "ok", {"part": "kernel", "attention": "sdpa"}, {"time_ms": 1.0}, env=env))
    (dest,) = write_baseline({"latency": (path, "micro")}, tmp_path / "baselines")
    assert dest.is_file()
    err = capsys.readouterr().err
    assert "1 of 1 latency baseline row(s) were timed while contended (load 8.4 on 2 CPUs)" in err
