"""scripts/gpu_evidence.py: the plan (priority order, fits the budget, estimates from the committed H100 rows), the
run under a fake runner and a fake clock (resume after an interruption, a stop at the budget, a failed command),
publishing, the summary page, and the overhead step's glue on CPU. The real GPU run is marked ``gpu``."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ("latency", "overhead", "train", "decode", "repeat")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_evidence", ROOT / "scripts" / "gpu_evidence.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_evidence"] = mod
    spec.loader.exec_module(mod)
    return mod


ge = _load()
GPU = ge.committed_gpu(ROOT)
needs_rows = pytest.mark.skipif(GPU is None, reason="no committed CUDA rows under results/latency")


def _ctx(root: Path, budget: float = ge.DEFAULT_BUDGET_S, steps=CORE, reports: bool = True):
    return ge.Context(root, GPU, ge.machine_slug(GPU), budget, reports=reports, rows=ge.earlier_rows(ROOT, GPU),
                      steps=steps)


@pytest.fixture(scope="module")
def built():
    """The steps over the committed rows (estimates), with a throw-away root for what a run writes."""
    return ge.build_steps(_ctx(ROOT))


# ---------------------------------------------------------------------------------------------------------------
# The plan


@needs_rows
def test_estimates_come_from_the_committed_rows_of_that_gpu(built):
    by = {s.name: s for s in built}
    assert [s.name for s in built] == list(CORE)  # priority order
    for name in ("latency", "overhead", "train", "decode"):
        assert 0 < by[name].estimate_s < 3600, name
    lat = by["latency"]
    assert "earlier rows" in lat.source and "kernel" in lat.source
    # the preset's budget caps one run: start + its 480 s + the measurement running at the end + publishing
    longest = max(ge.row_gaps(ge.earlier_rows(ROOT, GPU)).values())
    assert lat.estimate_s <= ge.START_S + 480 + longest + ge.PUBLISH_S + 1e-6
    assert by["repeat"].estimate_s > lat.estimate_s and by["repeat"].needs == ("latency",)


@needs_rows
@pytest.mark.parametrize("budget", [600.0, 900.0, 1800.0, 7200.0])
def test_dry_run_plan_fits_the_budget_in_priority_order(tmp_path, built, budget):
    ctx = _ctx(tmp_path, budget)
    decisions = ge.plan(ctx, built, ge.Ledger(tmp_path, ctx.work))
    assert [d.step.name for d in decisions] == list(CORE)
    spent = sum(d.estimate_s for d in decisions if d.kind in ("run", "partial"))
    assert spent <= budget - ge.reserve_s(ctx) + 1e-6
    assert decisions[0].kind == "run"  # the latency preset first, whole, at the default budget already
    for d in decisions:
        assert d.kind in ("run", "partial", "skip")
        if d.kind == "skip":
            assert d.reason.startswith(("budget:", "needs")), d.reason
    if budget >= 7200:
        assert all(d.kind == "run" for d in decisions)


@needs_rows
def test_train_and_decode_resume_into_the_latency_run(tmp_path, built):
    """After a whole latency run, train/decode cost only what its part budgets left (plus a process start)."""
    ctx = _ctx(tmp_path, 7200)
    d = {x.step.name: x for x in ge.plan(ctx, built, ge.Ledger(tmp_path, ctx.work))}
    alone = {x.step.name: x for x in ge.plan(_ctx(tmp_path, 7200, steps=("train", "decode")),
                                             [s for s in built if s.name in ("train", "decode")],
                                             ge.Ledger(tmp_path, ctx.work))}
    for name in ("train", "decode"):
        assert d[name].estimate_s < alone[name].estimate_s
        assert "resumes latency" in d[name].reason


@needs_rows
def test_a_latency_run_that_partly_fits_gets_a_cut_budget_and_skips_follow(tmp_path, built):
    ctx = _ctx(tmp_path, 300, reports=False)  # less than one preset run
    decisions = ge.plan(ctx, built, ge.Ledger(tmp_path, ctx.work))
    lat = decisions[0]
    assert lat.kind == "partial" and 0 < lat.slot_s < 300
    argv = lat.step.commands[0].with_slot(lat.slot_s)
    assert argv[-2:] == ["--set", f"budget_s={int(lat.slot_s)}"]
    rest = {d.step.name: d for d in decisions[1:]}
    assert rest["repeat"].kind == "skip" and rest["repeat"].reason.startswith("needs latency")
    assert all(d.kind == "skip" for d in rest.values())


@needs_rows
def test_dry_run_command_prints_every_step_and_the_plan_line(capsys):
    assert ge.main(["--dry-run", "--steps", ",".join(CORE)]) == 0
    out = capsys.readouterr().out
    for name in CORE:
        assert f". {name} [" in out
    assert "$ python -m ablate.cli run --suite latency --preset gpu --device cuda" in out
    assert "calibrate" in out and "--plant 5" in out and "writes: " in out
    assert out.strip().splitlines()[-1].startswith("plan: ")


@pytest.mark.parametrize("argv, words", [(["--dry-run", "--steps", "nope"], "valid: latency, overhead"),
                                         (["--dry-run", "--budget", "ten"], "--budget"),
                                         (["--dry-run", "--rounds", "0"], "--rounds")])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, words):
    assert ge.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_budget_parsing():
    assert [ge.parse_budget(t) for t in ("600", "90s", "10m", "1.5h")] == [600, 90, 600, 5400]


# ---------------------------------------------------------------------------------------------------------------
# Running the steps with a fake runner and a fake clock


class Fake:
    """Stands in for the commands: writes each step's outputs when its last command runs, advances a fake clock
    by the step's cost, can interrupt (KeyboardInterrupt), fail (exit 3) or overrun the time left (stopped)."""

    def __init__(self, root: Path, steps, cost=None, interrupt=None, fail=None):
        self.root, self.steps, self.now = root, steps, 0.0
        self.cost, self.interrupt, self.fail = cost or {}, interrupt, fail
        self.calls: list[tuple[str, list[str]]] = []

    def clock(self) -> float:
        return self.now

    def _owner(self, log: Path):
        """The step and command index, from the log the executor names ``<step>-<i>.log``."""
        name, i = log.stem.rsplit("-", 1)
        step = next((s for s in self.steps if s.name == name), None)
        return step, int(i) - 1

    def __call__(self, argv, timeout, env, cwd, log):
        step, i = self._owner(log)
        name = step.name if step else "finish"
        self.calls.append((name, argv))
        if name == self.interrupt:
            raise KeyboardInterrupt
        if name == self.fail and i == 0:
            return 3
        cost = self.cost.get(name, 1.0)
        if timeout is not None and cost > timeout:
            self.now += timeout
            return None
        self.now += cost
        if step is not None and i == len(step.commands) - 1:
            for o in step.outputs:
                (self.root / o).parent.mkdir(parents=True, exist_ok=True)
                (self.root / o).write_text("{}\n")
        return 0

    def steps_run(self):
        names = []
        for n, _ in self.calls:
            if n != "finish" and (not names or names[-1] != n):
                names.append(n)
        return names


def _run(ctx, steps, fake):
    return ge.execute(ctx, steps, runner=fake, clock=fake.clock, env={}, say=lambda s: None)


@needs_rows
def test_a_run_goes_in_priority_order_then_reports_and_summary(tmp_path, built):
    ctx = _ctx(tmp_path, 7200)
    fake = Fake(tmp_path, built)
    assert _run(ctx, built, fake) == 0
    assert fake.steps_run() == list(CORE)
    finish = [argv for n, argv in fake.calls if n == "finish"]
    assert finish[0][:2] == ["bash", "scripts/regenerate_reports.sh"]
    assert f"results/latency/gpu-{ctx.slug}.jsonl" in finish[0]
    assert finish[-1][2] == "summary" and fake.calls[-1][0] == "finish"
    ledger = ge.Ledger(tmp_path, ctx.work)
    assert all(ledger.step(n)["complete"] for n in CORE)
    # run again: everything is complete, nothing is measured, only the summary is rewritten
    again = Fake(tmp_path, built)
    assert _run(ctx, built, again) == 0
    assert again.steps_run() == [] and [n for n, _ in again.calls] == ["finish"]


@needs_rows
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, built):
    ctx = _ctx(tmp_path, 7200)
    first = Fake(tmp_path, built, interrupt="train")
    with pytest.raises(KeyboardInterrupt):
        _run(ctx, built, first)
    assert first.steps_run() == ["latency", "overhead", "train"]
    ledger = ge.Ledger(tmp_path, ctx.work)
    assert ledger.step("latency")["complete"] and ledger.step("overhead")["complete"]
    assert not ledger.step("train")["complete"]
    second = Fake(tmp_path, built)
    assert _run(ctx, built, second) == 0
    assert second.steps_run() == ["train", "decode", "repeat"]
    decisions = ge.Ledger(tmp_path, ctx.work).data["invocations"][-1]["steps"]
    assert decisions["latency"]["decision"] == decisions["overhead"]["decision"] == "done"


@needs_rows
def test_a_step_past_the_budget_is_stopped_and_later_steps_skipped(tmp_path, built):
    ctx = _ctx(tmp_path, 7200)
    fake = Fake(tmp_path, built, cost={"overhead": 1e6})  # overruns everything left
    assert _run(ctx, built, fake) == 0
    assert fake.steps_run() == ["latency", "overhead"]
    inv = ge.Ledger(tmp_path, ctx.work).data["invocations"][-1]["steps"]
    assert all(inv[n]["decision"] == "skip" and inv[n]["reason"].startswith("budget") for n in CORE[2:])
    assert fake.now <= 7200  # stopped at the budget (less the reserve), not after
    resumed = Fake(tmp_path, built)
    _run(ctx, built, resumed)
    assert resumed.steps_run() == ["overhead", "train", "decode", "repeat"]


@needs_rows
def test_a_failed_command_fails_the_run_but_not_the_later_steps(tmp_path, built):
    ctx = _ctx(tmp_path, 7200)
    fake = Fake(tmp_path, built, fail="overhead")
    assert _run(ctx, built, fake) == 1
    assert fake.steps_run() == list(CORE)
    assert not ge.Ledger(tmp_path, ctx.work).step("overhead")["complete"]


@needs_rows
def test_repeat_alone_runs_once_the_latency_step_completed_earlier(tmp_path, built):
    ctx = _ctx(tmp_path, 7200, steps=("repeat",))
    steps = [s for s in built if s.name == "repeat"]
    ledger = ge.Ledger(tmp_path, ctx.work)
    assert ge.plan(ctx, steps, ledger)[0].reason.startswith("needs latency")
    ledger.data["steps"]["latency"] = {"complete": True}
    assert ge.plan(ctx, steps, ledger)[0].kind == "run"


@needs_rows
def test_a_step_whose_outputs_are_gone_is_run_again(tmp_path, built):
    ctx = _ctx(tmp_path, 7200, steps=("latency", "overhead"))
    steps = [s for s in built if s.name in ctx.steps]
    _run(ctx, steps, Fake(tmp_path, steps))
    (tmp_path / steps[1].outputs[0]).unlink()
    again = Fake(tmp_path, steps)
    _run(ctx, steps, again)
    assert again.steps_run() == ["overhead"]


# ---------------------------------------------------------------------------------------------------------------
# Publishing and the summary page


def _keyed(r: dict, **extra) -> dict:
    """``r`` with ``extra`` key fields added and its row_key recomputed (a row the reader accepts)."""
    from ablate.store.results import row_key

    r = {**r, **extra, "key_fields": sorted(set(r["key_fields"]) | set(extra))}
    return {**r, "row_key": row_key({f: r[f] for f in r["key_fields"]})}


def _a_rows(n_kernel: int = 3) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "results/latency/gpu.jsonl").read_text().splitlines()]
    kernel = [r for r in rows if r["part"] == "kernel" and r["status"] == "ok"][:n_kernel]
    train = [r for r in rows if r["part"] == "train" and r.get("choice") == "base"]
    compiled = [dict(_keyed(train[0], train_mode="compiled"), time_ms=40.0, mfu=0.41, mfu_palm=0.45, compile_s=31.5,
                     peak_tflops=989.4, peak_source="H100 SXM")]
    decode = [dict(_keyed(r, decode_mode="graph"), achieved_gbps=2345.0, bw_util=0.7)
              for r in rows if r["part"] == "decode" and r["context"] == 32768]
    return kernel + train + compiled + decode


@needs_rows
def test_publish_appends_once_and_writes_the_baseline(tmp_path):
    ctx = _ctx(tmp_path)
    a = tmp_path / ctx.work / "a/latency/cuda-gpu.jsonl"
    a.parent.mkdir(parents=True)
    rows = _a_rows()
    a.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / f"results/latency/gpu-{ctx.slug}.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copy(ROOT / "results/latency/gpu.jsonl", target)  # as if published before: the same rows are not added
    before = len(target.read_text().splitlines())
    ge.publish(tmp_path, GPU, say=lambda s: None)
    ge.publish(tmp_path, GPU, say=lambda s: None)
    lines = target.read_text().splitlines()
    # the kernel rows and the eager base step are the committed rows themselves: not added again
    assert len(lines) == before + 1 + 3 and all(json.loads(x)["row_key"] for x in lines[before:])
    base = tmp_path / "results/baselines" / ctx.slug / "latency-gpu.jsonl"
    assert len(base.read_text().splitlines()) == len(rows)
    (tmp_path / ctx.work / "overhead.jsonl").write_text('{"key": "sdpa_cudnn"}\n{"key": "flex"}\n')
    ge.publish(tmp_path, GPU, say=lambda s: None)
    pairs = json.loads((tmp_path / "results/gpu-evidence" / ctx.slug / "overhead.json").read_text())
    assert [p["key"] for p in pairs] == ["sdpa_cudnn", "flex"]  # JSON: no results/**.jsonl reader meets them


def test_each_machine_publishes_its_latency_rows_to_a_file_of_its_own(tmp_path):
    h200 = ge.Context(tmp_path, "NVIDIA H200", ge.machine_slug("NVIDIA H200"))
    assert h200.latency_target == "results/latency/gpu-nvidia-h200.jsonl"
    assert ge.Context(tmp_path, "NVIDIA H100 80GB HBM3", ge.machine_slug("NVIDIA H100 80GB HBM3")).latency_target \
        == "results/latency/gpu-nvidia-h100-80gb-hbm3.jsonl"


@needs_rows
def test_summary_states_every_figure(tmp_path):
    ctx = _ctx(tmp_path)
    w = tmp_path / ctx.work
    (w / "a/latency").mkdir(parents=True)
    (w / "a/latency/cuda-gpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _a_rows()))
    shape = {"head_dim": 128, "n_heads": 16, "dtype": "bfloat16", "rounds": 3}
    ov = [{"key": "flash_attn", "seq_len": 2048, "batch": 8, "pass": "fwd", "status": "ok", "harness_ms": 0.4242,
           "bare_ms": 0.4201, "ratio": 0.4242 / 0.4201, "within": True, "backend": "flash_attn:fa4", **shape},
          {"key": "sdpa_cudnn", "seq_len": 16384, "batch": 1, "pass": "bwd", "status": "ok", "harness_ms": 9.5,
           "bare_ms": 9.0, "ratio": 9.5 / 9.0, "within": False, "backend": "sdpa:cudnn", **shape}]
    (w / "overhead.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ov))
    cal = tmp_path / "results/baselines" / ctx.slug / "latency-gpu.noise.json"
    cal.parent.mkdir(parents=True)
    cal.write_text(json.dumps({"false_alarms": 0, "matched_rows": 640, "fail_if": ["time_ms:3%"], "noisy": [{}] * 7,
                               "spread_quantiles": {"time_ms": {"p50": 0.4, "p90": 1.9, "max": 6.1}},
                               "planted": {"percent": 5.0, "config": "sdpa fwd n=512", "caught": True}}))
    page = ge.summary(tmp_path, GPU).read_text()
    assert "hd 128, 16 heads, 16384 tokens per batch, bfloat16; non-causal; medians of 3 alternating" in page
    assert "| flash_attn | 2048 | fwd | 0.4242 | 0.4201 | 1.0098 | yes |" in page
    assert "| sdpa_cudnn | 16384 | bwd | 9.5000 | 9.0000 | 1.0556 | **no** |" in page
    assert "| compiled | ok | 40.0 |" in page and "41.0%" in page and "31.5" in page
    assert "| eager | ok | 79.0 |" in page and "14.8%" in page
    assert "| mha | 16 | graph | 32768 | ok |" in page and "70.0%" in page
    assert "false alarms: 0 of 640" in page and "noisy rows (repeat spread past the threshold): 7" in page
    assert "planted 5.0% slowdown of sdpa fwd n=512: caught" in page
    assert (tmp_path / "reports/gpu-evidence" / ctx.slug / "evidence.json").is_file()


def test_row_gaps_and_part_estimates_from_timestamps():
    from ablate.suites.latency.config import resolve

    cfg = resolve("gpu")

    def row(t, part, run="r1", **kw):
        return {"timestamp": f"2026-01-01T00:{t // 60:02d}:{t % 60:02d}Z", "part": part, "run_id": run,
                "status": "ok", **kw}

    timing = {"config.kernels.warmup_ms": 5.0, "config.kernels.rep_ms": 30.0}
    rows = [row(0, "kernel", **timing), row(10, "kernel", **timing), row(25, "kernel", **timing),
            row(40, "train"), row(1000, "decode"), row(1004, "decode")]  # 960 s pause: a resume, not counted
    est = ge.part_estimates(rows, cfg)
    assert est["kernel"][0] == pytest.approx(25 + 3 * 0.09)  # two gaps; do_bench 125 ms vs 35 ms for each ok row
    # train: every choice like the one eager step seen (15 s), its compiled step + the compile allowance; under the
    # part's 75 s budget the second measurement (base compiled) starts at 15 s and runs to its end
    n = len(cfg.train.choices)
    assert est["train"][0] == pytest.approx(n * (15 + 15 + ge.COMPILE_TRAIN_S))
    assert est["train"][2] == pytest.approx(15 + 15 + ge.COMPILE_TRAIN_S)
    assert est["decode"][0] == pytest.approx(4 * 2) == est["decode"][2]  # eager seen, graph planned: scaled


# ---------------------------------------------------------------------------------------------------------------
# The overhead step's glue (CPU: tiny shapes, numbers only printed) and on a GPU


def test_overhead_rows_on_cpu_resume(tmp_path):
    out = tmp_path / "overhead.jsonl"
    kw = dict(device="cpu", keys=["sdpa_math"], seq_lens=[64], passes=["fwd"], head_dim=16, hidden=64, tokens=128,
              dtype="float32", rounds=1, say=lambda s: None)
    ge.overhead(out, **kw)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    r = rows[0]
    assert r["harness_ms"] > 0 and r["bare_ms"] > 0 and r["ratio"] == pytest.approx(r["harness_ms"] / r["bare_ms"])
    assert r["backend"] == "sdpa:math" and r["bare_call"] == "package"
    ge.overhead(out, **kw)  # resumed: nothing measured again
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.gpu
def test_overhead_on_the_gpu_within_tolerance(tmp_path):
    out = tmp_path / "overhead.jsonl"
    bad = ge.overhead(out, keys=["sdpa_cudnn"], seq_lens=[2048], passes=["fwd"], rounds=3, say=lambda s: None)
    r = json.loads(out.read_text().splitlines()[0])
    assert r["status"] == "ok" and r["backend"].startswith("sdpa:cudnn")
    assert bad == 0, f"harness {r['harness_ms']:.4f} ms vs bare {r['bare_ms']:.4f} ms"


# ---------------------------------------------------------------------------------------------------------------
# The real runner, the rungs' estimate, the rehearsal's guard


def test_run_command_returns_the_exit_status_and_stops_at_the_timeout(tmp_path):
    import time

    log = tmp_path / "logs" / "x-1.log"
    code = "import sys; print('measured', flush=True); sys.exit(1)"
    assert ge.run_command([sys.executable, "-c", code], 30, {}, tmp_path, log) == 1
    assert "measured" in log.read_text()
    slow = "import time; print('started', flush=True); time.sleep(60)"
    t = time.monotonic()
    assert ge.run_command([sys.executable, "-c", slow], 2, {}, tmp_path, log) is None  # SIGINT at the timeout
    assert time.monotonic() - t < 30 and "started" in log.read_text()


@needs_rows
def test_the_rung_estimate_is_printed_from_measured_rates():
    lines = ge.estimate(ROOT, "extrapolation", GPU)
    assert lines[0].startswith("extrapolation gpu: estimate: ") and "TFLOP/s" in lines[-1]
    est, src = ge.rung_estimate(_ctx(ROOT), "extrapolation")
    assert est > ge.START_S and "TFLOP/s" in src


def test_a_rehearsal_refuses_to_write_into_the_checkout(capsys):
    assert ge.main(["--rehearse", str(ROOT / "results" / "x")]) == 2
    assert "scratch folder" in capsys.readouterr().err
