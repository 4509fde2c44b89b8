"""`ablate compare`: matching by configuration, metric directions, pytest-benchmark thresholds, the noise rule,
statuses, environment refusal, output formats and github-action-benchmark data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.regress.compare import (DEFAULT_FAIL_IF, METRICS, EnvMismatchError, compare, compare_paths, identity,
                            load_rows, parse_fail_if, render_json, render_markdown, write_github_json)
from ablate.errors import ConfigError, ResultsFileError
from ablate.store.results import append_row, make_row
from tests.helpers import cli

H100 = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1",
        "env.git_commit": "a" * 40}


def kernel(attention="sdpa", seq_len=1024, ms=1.0, spread=0.01, status="ok", env=None, device_name=None,
           tflops=True, **extra):
    """A latency kernel row: time_ms median with p20/p80 at ±spread, and TFLOP/s from a fixed FLOP count."""
    env = dict(H100 if env is None else env)
    key = {"part": "kernel", "attention": attention, "pass": "fwd", "seq_len": seq_len, "dtype": "bfloat16",
           "device": "cuda", "device_name": device_name or env.get("env.gpu")}
    metrics = {"metric": "time_ms", "value": ms, "unit": "ms", "time_ms": ms, "p20_ms": ms * (1 - spread),
               "p80_ms": ms * (1 + spread)} if status == "ok" else {"metric": "time_ms", "value": None}
    if tflops and status == "ok":
        metrics["tflops"] = 1e9 / (ms / 1e3) / 1e12
    metrics.update(extra)
    return make_row("latency", status, key, metrics, env=env, reason="" if status == "ok" else "boom")


def extrap(position="rope", eval_len=512, ppl=10.0, env=None, metric="ppl", value=None):
    key = {"position": position, "eval_len": eval_len, "seed": 0, "device": "cuda", "metric": metric}
    metrics = {"value": ppl if value is None else value}
    if metric == "ppl":
        metrics["ppl"] = ppl
    return make_row("extrapolation", "ok", key, metrics, env=dict(H100 if env is None else env))


def write(path: Path, rows) -> Path:
    for r in rows:
        append_row(path, r)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Matching and directions


def test_identical_runs_pass():
    rows = [kernel("sdpa"), kernel("naive", ms=5.0), extrap()]
    res = compare(rows, [dict(r) for r in rows])
    assert not res.regressed and res.matched_rows == 3 and not res.entries
    assert res.unchanged >= 3


def test_slower_time_is_a_regression_faster_an_improvement():
    base = [kernel("sdpa", ms=1.0), kernel("naive", ms=5.0)]
    new = [kernel("sdpa", ms=1.2), kernel("naive", ms=4.0)]
    res = compare(base, new, ["time_ms:10%"])
    (reg,) = res.by("regression")
    assert reg.metric == "time_ms" and "attention=sdpa" in reg.config and reg.change_pct == pytest.approx(20.0)
    (imp,) = res.by("improvement")
    assert "attention=naive" in imp.config and imp.change_pct == pytest.approx(-20.0)
    assert res.regressed


def test_higher_is_better_metrics_regress_when_they_drop():
    base, new = [kernel(ms=1.0)], [kernel(ms=1.25)]  # tflops drops by 20 %
    res = compare(base, new, ["tflops:10%"])
    (reg,) = res.by("regression")
    assert reg.metric == "tflops" and reg.better == "higher" and reg.change_pct == pytest.approx(-20.0)
    res = compare(new, base, ["tflops:10%"])
    assert [e.metric for e in res.by("improvement")] == ["tflops"] and not res.regressed


def test_metric_directions_table():
    assert METRICS["time_ms"].better == "lower" and METRICS["peak_mem_bytes"].better == "lower"
    assert METRICS["ppl"].better == "lower" and METRICS["loss"].better == "lower"
    assert METRICS["tflops"].better == "higher" and METRICS["tokens_per_s"].better == "higher"
    assert "p20_ms" not in METRICS and "p80_ms" not in METRICS  # spreads, not metrics


def test_ppl_memory_and_value_metrics():
    base = [extrap(ppl=10.0), extrap(metric="passkey_acc", value=0.9, position="alibi"),
            kernel(ms=1.0, peak_mem_bytes=1000)]
    new = [extrap(ppl=11.0), extrap(metric="passkey_acc", value=0.5, position="alibi"),
           kernel(ms=1.0, peak_mem_bytes=1300)]
    res = compare(base, new)  # the defaults
    got = {e.metric for e in res.by("regression")}
    assert got == {"ppl", "passkey_acc", "peak_mem_bytes"}


def test_device_name_is_not_part_of_the_configuration():
    a = kernel(device_name="NVIDIA H100 80GB HBM3")
    b = kernel(device_name="NVIDIA H100 PCIe")
    assert identity(a) == identity(b) and a["row_key"] != b["row_key"]


# ---------------------------------------------------------------------------------------------------------------
# --fail-if


def test_fail_if_parsing():
    (m,) = parse_fail_if(["median:5%"])
    assert (m.metric, m.amount, m.percent) == ("time_ms", 5.0, True)
    (m,) = parse_fail_if(["median:0.001"])  # pytest-benchmark: seconds
    assert (m.metric, m.amount, m.percent) == ("time_ms", pytest.approx(1.0), False)
    (m,) = parse_fail_if(["time_ms:0.5"])  # our column: its own unit (ms)
    assert (m.metric, m.amount, m.percent) == ("time_ms", 0.5, False)
    with pytest.raises(ConfigError, match="unknown metric 'stepz'"):
        parse_fail_if(["stepz:5%"])
    with pytest.raises(ConfigError, match="is not METRIC:AMOUNT"):
        parse_fail_if(["median5%"])
    assert len(parse_fail_if(DEFAULT_FAIL_IF)) == len(DEFAULT_FAIL_IF)


def test_absolute_and_repeated_thresholds():
    base, new = [kernel(ms=10.0)], [kernel(ms=10.3)]  # +3 %, +0.3 ms
    assert not compare(base, new, ["median:5%"]).regressed
    assert compare(base, new, ["median:0.0002"]).regressed  # 0.2 ms absolute (seconds, as in pytest-benchmark)
    assert not compare(base, new, ["time_ms:0.5"]).regressed
    # repeatable per metric: any expression that trips fails
    assert compare(base, new, ["time_ms:50%", "time_ms:0.1"]).regressed
    assert not compare(base, new, ["time_ms:50%", "time_ms:1"]).regressed


# ---------------------------------------------------------------------------------------------------------------
# Noise


def test_change_inside_the_spread_is_noise_not_a_regression():
    base, new = [kernel(ms=1.0, spread=0.3)], [kernel(ms=1.2, spread=0.3)]
    res = compare(base, new, ["time_ms:5%", "tflops:5%"])
    assert not res.regressed
    assert {e.metric for e in res.by("noise")} == {"time_ms", "tflops"}
    # tight spreads on both sides: the same change is a regression
    assert compare([kernel(ms=1.0, spread=0.05)], [kernel(ms=1.2, spread=0.05)], ["time_ms:5%"]).regressed


def test_noise_needs_both_sides_cleared():
    # the new median is outside the baseline band, but the baseline median lies inside the (wide) new band
    base, new = [kernel(ms=1.0, spread=0.02)], [kernel(ms=1.2, spread=0.25)]
    res = compare(base, new, ["time_ms:5%"])
    assert not res.regressed and res.by("noise")


# ---------------------------------------------------------------------------------------------------------------
# Statuses, new and missing rows


def test_new_missing_and_status_changes():
    base = [kernel("sdpa"), kernel("naive"), kernel("flex"), kernel("linear")]
    new = [kernel("sdpa"), kernel("naive", status="error"), kernel("flex", status="unavailable"),
           kernel("xformers")]
    res = compare(base, new)
    assert [e.config.split()[0] for e in res.by("regression")] == ["attention=naive"]
    assert res.by("regression")[0].new == "error"
    missing = sorted(e.config.split()[0] for e in res.by("missing"))
    assert missing == ["attention=flex", "attention=linear"]
    assert [e.config.split()[0] for e in res.by("new")] == ["attention=xformers"]
    assert res.regressed


# ---------------------------------------------------------------------------------------------------------------
# Environments


def test_different_gpu_or_torch_major_is_refused():
    a100 = {**H100, "env.gpu": "NVIDIA A100-SXM4-80GB"}
    with pytest.raises(EnvMismatchError, match="environments differ.*A100.*--allow-env-mismatch"):
        compare([kernel()], [kernel(env=a100)])
    res = compare([kernel(ms=1.0)], [kernel(ms=1.0, env=a100)], allow_env_mismatch=True)
    assert res.matched_rows == 1 and "mismatch allowed" in res.env_note
    torch3 = {**H100, "env.torch": "3.0.0+cu130"}
    with pytest.raises(EnvMismatchError, match="torch 2.*torch 3"):
        compare([kernel()], [kernel(env=torch3)])
    minor = {**H100, "env.torch": "2.6.0+cu126"}
    assert compare([kernel()], [kernel(env=minor)]).matched_rows == 1  # same major: fine


def test_cpu_thread_count_is_part_of_the_environment():
    cpu = {"env.gpu": None, "env.torch": "2.13.0+cpu", "env.hostname": "vm"}
    with pytest.raises(EnvMismatchError, match="1 threads.*2 threads"):
        compare([kernel(env=cpu, device_name="AMD EPYC (1 threads)")],
                [kernel(env=cpu, device_name="AMD EPYC (2 threads)")])


def test_multi_machine_baseline_compares_the_matching_machine():
    a100 = {**H100, "env.gpu": "NVIDIA A100-SXM4-80GB", "env.hostname": "box2"}
    base = [kernel(ms=1.0), kernel(ms=3.0, env=a100)]
    res = compare(base, [kernel(ms=1.05)])
    assert res.matched_rows == 1 and res.other_hardware == 1 and not res.regressed and not res.by("missing")


# ---------------------------------------------------------------------------------------------------------------
# Files, CLI, formats


def test_cli_exit_codes_and_formats(capsys, tmp_path):
    base = write(tmp_path / "base" / "gpu.jsonl", [kernel("sdpa", ms=1.0), kernel("naive", ms=5.0)])
    same = write(tmp_path / "same.jsonl", [kernel("sdpa", ms=1.0), kernel("naive", ms=5.0)])
    slow = write(tmp_path / "slow.jsonl", [kernel("sdpa", ms=1.2), kernel("naive", ms=5.0)])
    code, out, err = cli(capsys, "compare", str(tmp_path / "base"), str(same))
    assert code == 0, err
    assert "compare: ok: 0 regression(s)" in out
    code, out, err = cli(capsys, "compare", str(base), str(slow), "--fail-if", "median:5%")
    assert code == 1, err
    assert "regression" in out and "attention=sdpa" in out and "+20.0%" in out
    code, out, _ = cli(capsys, "compare", str(base), str(slow), "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["regressed"] and data["summary"]["regression"] == 1
    assert data["entries"][0]["metric"] == "time_ms" and data["entries"][0]["baseline_band"] == [0.99, 1.01]
    code, out, _ = cli(capsys, "compare", str(base), str(slow), "--format", "markdown", "--output",
                       str(tmp_path / "c.md"))
    assert code == 1 and out.startswith("## ablate compare") and "### regression (1)" in out
    assert (tmp_path / "c.md").read_text() == out


def test_cli_one_line_errors(capsys, tmp_path):
    base = write(tmp_path / "b.jsonl", [kernel()])
    other = write(tmp_path / "o.jsonl", [kernel(env={**H100, "env.gpu": "NVIDIA A100"})])
    for args, needle in [((str(base), str(other)), "environments differ"),
                         ((str(base), str(tmp_path / "nope.jsonl")), "does not exist"),
                         ((str(base), str(base), "--fail-if", "bogus:1%"), "unknown metric 'bogus'"),
                         ((str(base), str(base), "--fail-if", "5%"), "is not METRIC:AMOUNT")]:
        code, out, err = cli(capsys, "compare", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("ablate: error: ") and needle in lines[0], err
    code, _, err = cli(capsys, "compare", str(base), str(other), "--allow-env-mismatch")
    assert code == 0, err
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ResultsFileError, match="no result rows in new"):
        compare_paths(base, tmp_path / "empty.jsonl")


def test_github_action_benchmark_json(capsys, tmp_path):
    base = write(tmp_path / "b.jsonl", [kernel("sdpa", ms=1.0), extrap(ppl=10.0)])
    new = write(tmp_path / "n.jsonl", [kernel("sdpa", ms=1.1), extrap(ppl=10.0)])
    code, _, err = cli(capsys, "compare", str(base), str(new), "--fail-if", "time_ms:20%", "--fail-if",
                       "tflops:20%", "--fail-if", "ppl:5%", "--github-json", str(tmp_path / "gh"))
    assert code == 0, err
    small = json.loads((tmp_path / "gh" / "customSmallerIsBetter.json").read_text())
    big = json.loads((tmp_path / "gh" / "customBiggerIsBetter.json").read_text())
    assert {tuple(sorted(x)) for x in small + big} == {("extra", "name", "unit", "value")}
    assert {x["unit"] for x in small} == {"ms", "ppl"} and {x["unit"] for x in big} == {"TFLOP/s"}
    t = next(x for x in small if x["unit"] == "ms")
    assert t["value"] == pytest.approx(1.1) and "attention=sdpa" in t["name"] and "baseline 1" in t["extra"]


def test_load_rows_keeps_the_newest_row_per_measurement(tmp_path):
    old = kernel(ms=1.0)
    newer = dict(kernel(ms=2.0))
    newer["timestamp"] = "2999-01-01T00:00:00.000000Z"
    path = write(tmp_path / "r.jsonl", [newer, old])
    (row,) = load_rows(path)
    assert row["time_ms"] == 2.0


def test_renderers_are_deterministic():
    base, new = [kernel(ms=1.0), extrap()], [kernel(ms=1.3), extrap(position="alibi")]
    a, b = compare(base, new), compare(base, new)
    assert render_markdown(a) == render_markdown(b) and render_json(a) == render_json(b)
    assert "### new (1)" in render_markdown(a) and "### missing (1)" in render_markdown(a)


def test_github_json_wants_a_folder(tmp_path):
    res = compare([kernel()], [kernel()])
    with pytest.raises(ConfigError, match="takes a folder"):
        write_github_json(res, tmp_path / "x.json")


# ---------------------------------------------------------------------------------------------------------------
# Gated or reported only: metrics that measure the process, not the variant; the noise rule in the output

# Three rows of results/extrapolation/cpu-tiny.jsonl as written (config.*, pos_loss and most env.* left out): rope
# trained at 64 tokens, evaluated at 64 and 1024 (ppl) and a passkey probe. peak_mem_bytes is ru_maxrss on CPU.
_EXTRAP_KEYS = ["activation", "attention", "config_id", "data", "device", "eval_len", "metric", "mode", "n_kv_heads",
                "norm", "position", "preset", "rope_scale", "seed", "stride", "tokens", "train_len",
                "trained_position"]
_CPU_ENV = {"env.cpu": "AMD EPYC", "env.cpu_count": 2, "env.hostname": "vm", "env.torch": "2.13.0+cpu",
            "env.gpu": None, "env.git_commit": "8a5b6682cb2d7372e9c28931f38e248990484535", "env.git_dirty": True}
_EXTRAP_COMMON = {"schema_version": 1, "suite": "extrapolation", "status": "ok", "reason": "",
                  "run_id": "20261123T112431Z-cadfe9", "preset": "tiny", "config_id": "fab0fac40a0d465b",
                  "train_len": 64, "attention": "sdpa", "norm": "rmsnorm", "activation": "swiglu", "n_kv_heads": None,
                  "data": "topics", "device": "cpu", "trained_position": "rope", "position": "rope",
                  "rope_scale": 1.0, "seed": 0, "mode": "nonoverlap", "stride": None, "tokens": 16384,
                  "train_status": "ok", "train_reason": "", "diverged_step": None, "train_steps": 500,
                  "train_loss": 1.2901391983032227, "train_s": 30.277625585998976,
                  "train_tokens_per_s": 33820.353484836, "peak_mem_bytes": 620687360, "n_params": 426368,
                  "from_checkpoint": False, **_CPU_ENV}
EXTRAP_CPU_ROWS = [
    {**_EXTRAP_COMMON, "row_key": "05c24e0210b416cd", "key_fields": _EXTRAP_KEYS,
     "timestamp": "2026-11-23T11:26:28.950615Z", "eval_len": 64, "metric": "ppl", "unit": "ppl", "scale_factor": 1.0,
     "value": 4.4331046643162475, "loss": 1.4891001657517933, "ppl": 4.4331046643162475, "bpb": 2.1483174245170455,
     "windows": 256, "pos_bin": 1, "eval_s": 0.23116860200025258},
    {**_EXTRAP_COMMON, "row_key": "300f552ee50967a2", "key_fields": _EXTRAP_KEYS,
     "timestamp": "2026-11-23T11:26:30.109801Z", "eval_len": 1024, "metric": "ppl", "unit": "ppl",
     "scale_factor": 16.0, "value": 12.80665774835499, "loss": 2.5499651722916568, "ppl": 12.80665774835499,
     "bpb": 3.6788221085047446, "windows": 16, "pos_bin": 16, "eval_s": 0.34401630600041244},
    {**_EXTRAP_COMMON, "row_key": "5712f93e10bb381d",
     "key_fields": ["activation", "attention", "config_id", "data", "depth", "device", "digits", "eval_len", "metric",
                    "n_kv_heads", "norm", "position", "preset", "rope_scale", "seed", "train_len", "trained_position",
                    "trials"],
     "run_id": "20261123T112852Z-0dc56a", "timestamp": "2026-11-23T11:31:07.469199Z", "config_id": "b5e3db59c125d1c2",
     "data": "passkey", "eval_len": 64, "metric": "passkey_acc", "depth": 0.5, "trials": 50, "digits": 2,
     "unit": "fraction", "scale_factor": 1.0, "train_loss": 0.17798759043216705, "train_s": 30.18102047299908,
     "train_tokens_per_s": 33928.60758025407, "peak_mem_bytes": 631083008, "value": 1.0},
]
for _r in EXTRAP_CPU_ROWS:
    for _k in ("mode", "stride", "tokens") if _r["metric"] == "passkey_acc" else ():
        _r.pop(_k)


def resumed(rows, mem=1.25, slower=1.6, **extra):
    """The same rows from a run killed and resumed: checkpoints loaded, the process's RSS high-water mark 25 % up,
    training and evaluation wall times of the resumed process, same perplexities."""
    out = []
    for r in rows:
        r = dict(r)
        r.update(peak_mem_bytes=int(r["peak_mem_bytes"] * mem), from_checkpoint=True, train_s=r["train_s"] * slower,
                 train_tokens_per_s=r["train_tokens_per_s"] / slower, run_id="20261124T090000Z-resume",
                 timestamp="2026-11-24T09:00:00.000000Z", **extra)
        if r.get("eval_s") is not None:
            r["eval_s"] *= slower
        out.append(r)
    return out


ALL_TIMINGS = ["--fail-if", "train_s:10%", "--fail-if", "eval_s:10%", "--fail-if", "train_tokens_per_s:10%"]


def test_resumed_extrapolation_run_with_identical_science_passes(capsys, tmp_path):
    base = write(tmp_path / "base" / "cpu-tiny.jsonl", EXTRAP_CPU_ROWS)
    new = write(tmp_path / "new" / "cpu-tiny.jsonl", resumed(EXTRAP_CPU_ROWS))
    code, out, err = cli(capsys, "compare", str(base), str(new))  # the defaults gate peak_mem_bytes:10%
    assert code == 0, out + err
    assert "compare: ok: 0 regression(s)" in out
    assert "not gated: process-wide peak RSS on CPU" in out
    # every metric of a checkpoint-loaded run's timing is reported only, as well
    code, out, err = cli(capsys, "compare", str(base), str(new), "--fail-if", "ppl:1%", "--fail-if",
                         "passkey_acc:0.01", "--fail-if", "peak_mem_bytes:10%", *ALL_TIMINGS)
    assert code == 0, out + err
    res = compare_paths(base, new, ["ppl:1%", "passkey_acc:0.01", "peak_mem_bytes:10%", "train_s:10%", "eval_s:10%",
                                    "train_tokens_per_s:10%"])
    assert not res.regressed and res.matched_rows == 3
    reported = res.by("reported")
    assert {e.metric for e in reported} == {"peak_mem_bytes", "train_s", "eval_s", "train_tokens_per_s"}
    assert all(e.gated is False and e.note.startswith("not gated: ") for e in reported)
    mem = [e for e in reported if e.metric == "peak_mem_bytes"]
    assert len(mem) == 3 and all(e.change_pct == pytest.approx(25.0, abs=1e-3) for e in mem)
    assert all("process-wide peak RSS on CPU" in e.note for e in mem)
    assert all("checkpoint-loaded" in e.note for e in reported if e.metric != "peak_mem_bytes")
    gates = res.metrics
    assert gates["peak_mem_bytes"].status == "not gated" and gates["peak_mem_bytes"].reported_rows == 3
    assert gates["ppl"].status == "gated" and gates["ppl"].gated_rows == 2
    assert gates["passkey_acc"].status == "gated" and gates["passkey_acc"].gated_rows == 1
    assert res.unchanged == 3 and res.reported_only == 3 + 3 + 2 + 3
    md = render_markdown(res)
    assert "### reported, not gated (11)" in md and "not gated: process-wide peak RSS on CPU" in md


def test_resumed_run_still_catches_a_perplexity_regression(capsys, tmp_path):
    new_rows = resumed(EXTRAP_CPU_ROWS)
    new_rows[1] = {**new_rows[1], "ppl": new_rows[1]["ppl"] * 1.1, "value": new_rows[1]["value"] * 1.1}
    base = write(tmp_path / "b.jsonl", EXTRAP_CPU_ROWS)
    new = write(tmp_path / "n.jsonl", new_rows)
    code, out, err = cli(capsys, "compare", str(base), str(new))
    assert code == 1, out + err
    res = compare_paths(base, new)
    (reg,) = res.by("regression")  # the perplexity alone, not the +25 % process RSS
    assert reg.metric == "ppl" and "eval_len=1024" in reg.config and reg.change_pct == pytest.approx(10.0)
    assert reg.gated is True and "ppl:5%" in reg.noise_rule and "tolerance alone" in reg.noise_rule
    assert {e.metric for e in res.by("reported")} == {"peak_mem_bytes"}
    # a lost passkey is caught the same way
    new_rows[2] = {**new_rows[2], "value": 0.5}
    res = compare(EXTRAP_CPU_ROWS, new_rows)
    assert {e.metric for e in res.by("regression")} == {"ppl", "passkey_acc"}


def test_peak_memory_on_cuda_stays_gated():
    gpu = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1+cu124", "env.hostname": "box1"}
    key = {"config_id": "2ceb2b3e4384d413", "data": "topics", "device": "cuda", "point": "original+rope",
           "preset": "gpu", "seed": 0}
    metrics = {"val_loss": 1.69, "val_ppl": 5.417, "tokens_per_s": 2.2e6, "train_s": 36.9,
               "peak_mem_bytes": 6_131_015_680, "peak_mem_kind": "cuda_max_allocated"}
    b_train = make_row("training", "ok", key, metrics, env=gpu)
    n_train = make_row("training", "ok", key, {**metrics, "peak_mem_bytes": int(6_131_015_680 * 1.25)}, env=gpu)
    # the extrapolation suite records no kind: a CUDA row's peak is per run (allocator peak after a reset), even
    # when the checkpoint was loaded; the latency suite's CUDA rows (per-call peak) neither
    b_ex = {**extrap(), "peak_mem_bytes": 1000, "train_tokens_per_s": 1e6, "from_checkpoint": False}
    n_ex = {**extrap(), "peak_mem_bytes": 1250, "train_tokens_per_s": 5e5, "from_checkpoint": True}
    b_k, n_k = kernel(ms=1.0, peak_mem_bytes=1000), kernel(ms=1.0, peak_mem_bytes=1250)
    res = compare([b_train, b_ex, b_k], [n_train, n_ex, n_k],
                  ["peak_mem_bytes:10%", "val_loss:5%", "train_tokens_per_s:10%"])
    regs = res.by("regression")
    assert [e.metric for e in regs] == ["peak_mem_bytes"] * 3 and {e.suite for e in regs} == {
        "training", "extrapolation", "latency"}
    assert all(e.gated is True and "peak_mem_bytes:10%" in e.noise_rule for e in regs)
    assert res.metrics["peak_mem_bytes"].status == "gated" and res.metrics["peak_mem_bytes"].gated_rows == 3
    # ... while the training rate of the checkpoint-loaded extrapolation run is reported only
    (rep,) = res.by("reported")
    assert rep.metric == "train_tokens_per_s" and "checkpoint-loaded" in rep.note
    # the same training rows on CPU (ru_maxrss) are not gated
    cpu_key = {**key, "device": "cpu"}
    b_cpu = make_row("training", "ok", cpu_key, {**metrics, "peak_mem_kind": "cpu_maxrss"}, env=_CPU_ENV)
    n_cpu = make_row("training", "ok", cpu_key, {**metrics, "peak_mem_kind": "cpu_maxrss",
                                                 "peak_mem_bytes": int(6_131_015_680 * 1.25)}, env=_CPU_ENV)
    res = compare([b_cpu], [n_cpu], ["peak_mem_bytes:10%"])
    assert not res.regressed and "peak_mem_kind=cpu_maxrss" in res.by("reported")[0].note


def test_json_marks_gated_and_reported_metrics_with_their_noise_rules(capsys, tmp_path):
    base = write(tmp_path / "b.jsonl", EXTRAP_CPU_ROWS + [kernel("sdpa", ms=1.0, env=_CPU_ENV, device_name="cpu")])
    new = write(tmp_path / "n.jsonl", resumed(EXTRAP_CPU_ROWS) + [kernel("sdpa", ms=1.3, env=_CPU_ENV,
                                                                         device_name="cpu")])
    code, out, err = cli(capsys, "compare", str(base), str(new), "--format", "json", "--fail-if", "time_ms:10%",
                         "--fail-if", "ppl:5%", "--fail-if", "peak_mem_bytes:10%", "--fail-if", "train_s:10%")
    assert code == 1, err
    data = json.loads(out)
    gates = {m["metric"]: m for m in data["metrics"]}
    t = gates["time_ms"]
    assert t["gated"] is True and t["status"] == "gated" and t["fail_if"] == ["time_ms:10%"]
    assert "10% of the baseline" in t["noise_rule"] and "p20–p80" in t["noise_rule"]
    assert "both sides" in t["noise_rule"]
    p = gates["ppl"]
    assert p["gated"] is True and "ppl:5%" in p["noise_rule"] and "tolerance alone" in p["noise_rule"]
    m = gates["peak_mem_bytes"]
    assert m["gated"] is False and m["status"] == "not gated" and m["reported_rows"] == 3
    assert any(w.startswith("process-wide peak RSS on CPU") for w in m["why_not_gated"])
    assert gates["train_s"]["gated"] is False
    assert any("checkpoint-loaded" in w for w in gates["train_s"]["why_not_gated"])
    assert gates["tflops"]["gated"] is False and gates["tflops"]["fail_if"] == [] and gates["tflops"]["why_not_gated"]
    (reg,) = [e for e in data["entries"] if e["category"] == "regression"]
    assert reg["metric"] == "time_ms" and reg["gated"] is True and "both sides' p20–p80" in reg["noise_rule"]
    rep = [e for e in data["entries"] if e["category"] == "reported"]
    assert rep and all(e["gated"] is False and e["note"].startswith("not gated: ") for e in rep)
    assert data["summary"]["reported_only"] == 3 + 3
    # the table says the same, per metric
    code, out, _ = cli(capsys, "compare", str(base), str(new), "--fail-if", "time_ms:10%", "--fail-if",
                       "peak_mem_bytes:10%")
    assert code == 1
    assert "metrics:" in out and "p20–p80" in out and "not gated: process-wide peak RSS on CPU" in out
    # github-action-benchmark data carries only gated metrics
    res = compare_paths(base, new, ["time_ms:10%", "peak_mem_bytes:10%"])
    assert {x["unit"] for x in res.github["customSmallerIsBetter"]} == {"ms"}


def test_first_call_and_compile_times_are_reported_only():
    base, new = [kernel(ms=1.0, first_call_s=0.5, compile_s=0.4)], [kernel(ms=1.0, first_call_s=5.0, compile_s=4.9)]
    res = compare(base, new, ["first_call_s:10%", "compile_s:10%"])
    assert not res.regressed and {e.metric for e in res.by("reported")} == {"first_call_s", "compile_s"}
    assert all("first call" in e.note for e in res.by("reported"))


# ---------------------------------------------------------------------------------------------------------------
# A gate cannot pass on nothing; rows match by the corpus hash, never a machine path


def test_no_row_matched_fails_in_one_line(capsys, tmp_path):
    base = write(tmp_path / "b.jsonl", [kernel("sdpa"), kernel("naive")])
    other = write(tmp_path / "o.jsonl", [kernel("flex"), kernel("linear")])
    res = compare_paths(base, other)
    assert not res.regressed and res.failed and res.matched_rows == 0
    assert res.fail_reason.startswith("no row matched") and "--allow-missing" in res.fail_reason
    code, out, err = cli(capsys, "compare", str(base), str(other))
    assert code == 1 and "compare: FAIL:" in out
    assert err.strip().splitlines() == [f"compare: FAIL: {res.fail_reason}"]
    code, out, err = cli(capsys, "compare", str(base), str(other), "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["failed"] and not data["regressed"] and data["fail_reason"] == res.fail_reason
    code, out, err = cli(capsys, "compare", str(base), str(other), "--format", "markdown")
    assert code == 1 and "**FAIL**" in out and "**Why it fails**: no row matched" in out
    code, out, err = cli(capsys, "compare", str(base), str(other), "--allow-missing")
    assert code == 0 and "compare: ok" in out and not err


def test_a_missing_baseline_row_fails_unless_allowed(capsys, tmp_path):
    base = write(tmp_path / "b.jsonl", [kernel("sdpa"), kernel("naive"), kernel("flex")])
    new = write(tmp_path / "n.jsonl", [kernel("sdpa"), kernel("naive"), kernel("xformers")])
    code, out, err = cli(capsys, "compare", str(base), str(new))
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith("compare: FAIL: 1 baseline row(s) missing from new results (first: latency "
                           "attention=flex ") and line.endswith("pass --allow-missing to accept that")
    code, out, err = cli(capsys, "compare", str(base), str(new), "--allow-missing")
    assert code == 0, err
    assert compare([kernel("sdpa")], [kernel("sdpa"), kernel("flex")]).failed is False  # new rows are fine
    unavailable = compare([kernel("sdpa"), kernel("flex")], [kernel("sdpa"), kernel("flex", status="unavailable")])
    assert unavailable.failed and "missing" in unavailable.fail_reason


CPU = {"env.gpu": None, "env.torch": "2.5.1+cpu", "env.hostname": "vm"}


def corpus_row(data="stdlib (/root/.pyenv/versions/3.11.7/lib/python3.11)", corpus_hash="b60ac18034a48cd6",
               config_id="43170b06414674f9", val_loss=2.0, lr=1e-3, **settings):
    """A training row as the suite writes it: ``data`` and ``config_id`` fold in the corpus's name (a path)."""
    key = {"config_id": config_id, "data": data, "device": "cpu", "point": "original", "preset": "small", "seed": 0}
    config = {"data.corpus": "stdlib", "model.d_model": 64, "train.lr": lr, "train.seed": 0, "data.tokenizer": None,
              **{k.removeprefix("config."): v for k, v in settings.items() if k.startswith("config.")}}
    metrics = {"val_loss": val_loss, "data.hash": corpus_hash,
               **{k: v for k, v in settings.items() if not k.startswith("config.")}}
    return make_row("training", "ok", key, metrics, config, env=CPU)


def test_rows_match_by_the_corpus_hash_not_its_path():
    here = corpus_row()
    there = corpus_row(data="stdlib (/usr/lib/python3.12)", config_id="0123456789abcdef")
    assert identity(here) == identity(there)
    res = compare([here], [there])
    assert res.matched_rows == 1 and not res.failed
    assert "/" not in res.summary()
    # the readable configuration names the corpus by its name and hash, never its folder
    res = compare([here], [corpus_row(data="stdlib (/usr/lib/python3.12)", val_loss=2.5)])
    (reg,) = res.by("regression")
    assert "data=stdlib#b60ac180" in reg.config and "/usr" not in reg.config
    # another corpus (other hash), or other settings, is another configuration
    assert identity(corpus_row(corpus_hash="5d1d4e8878ce0f8d")) != identity(here)
    assert identity(corpus_row(lr=3e-3)) != identity(here)
    # a setting only the newer version records does not split the rows; nor does the tokenizer path
    newer = corpus_row(data="stdlib", config_id="fedcba9876543210", **{"config.model.new_knob": 1,
                                                                      "config.data.tokenizer": "/home/u/tok.json"})
    res = compare([here], [newer])
    assert res.matched_rows == 1 and not res.failed


def test_committed_rows_match_under_another_python_prefix(tmp_path):
    """The committed stdlib rows, as another machine (another Python prefix) would write them, match."""
    src = Path(__file__).resolve().parents[2] / "results" / "training" / "cpu-small.jsonl"
    if not src.is_file():
        pytest.skip("no committed results/training/cpu-small.jsonl")
    rows = load_rows(src)
    moved = []
    for r in rows:
        r = dict(r)
        if r.get("data.hash"):
            r["data"] = "stdlib (/opt/python/3.12/lib/python3.12)"
            r["config_id"] = "0" * 16  # it hashes the corpus name, path and all
        moved.append(r)
    res = compare(rows, moved, allow_env_mismatch=True)
    assert res.matched_rows == len([r for r in rows if r.get("status") == "ok"]) and not res.failed
