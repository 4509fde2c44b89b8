"""`ablate calibrate`: false alarms on repeats, noisy rows from the repeat spread, a planted slowdown caught, and
`ablate compare --noise` reporting noisy rows as noise."""

from __future__ import annotations

import json
import random

import pytest

from ablate.regress.calibrate import calibrate, plant_slowdown
from ablate.regress.compare import compare
from ablate.store.results import append_row, make_row
from tests.helpers import cli

H100 = {"env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.11.0+cu130", "env.hostname": "box1",
        "env.git_commit": "a" * 40}
KEYS = ["sdpa", "sdpa_cudnn", "flash_attn", "flex", "naive"]


def kernel(attention: str, seq_len: int, ms: float, spread: float = 0.005) -> dict:
    key = {"part": "kernel", "attention": attention, "pass": "fwd", "seq_len": seq_len, "dtype": "bfloat16",
           "device": "cuda", "device_name": H100["env.gpu"]}
    metrics = {"metric": "time_ms", "value": ms, "unit": "ms", "time_ms": ms, "p20_ms": ms * (1 - spread),
               "p80_ms": ms * (1 + spread)}
    return make_row("latency", "ok", key, metrics, env=H100)


def repeats(jitter: float, seed: int, noisy: dict[str, float] | None = None) -> tuple[list[dict], list[dict]]:
    """Two runs of the same 15 kernels: each time jittered by up to ``jitter`` (relative), the keys in ``noisy``
    by that much instead."""
    rng = random.Random(seed)
    a, b = [], []
    for key in KEYS:
        for n in (1024, 4096, 16384):
            base = 0.1 * n / 1024 * (1 + KEYS.index(key))
            j = (noisy or {}).get(key, jitter)
            a.append(kernel(key, n, base * (1 + rng.uniform(-j, j))))
            b.append(kernel(key, n, base * (1 + rng.uniform(-j, j))))
    return a, b


def test_quiet_repeats_no_false_alarm_and_a_planted_slowdown_is_caught():
    a, b = repeats(jitter=0.004, seed=random.randrange(1 << 30))
    cal = calibrate(a, b, ["time_ms:3%"], plant_percent=5.0)
    assert cal.false_alarms == 0 and cal.matched_rows == 15 and not cal.noisy
    assert cal.planted["caught"] and cal.planted["other_regressions"] == 0
    assert cal.ok and cal.spread_quantiles["time_ms"]["max"] < 3.0
    assert "0 false alarm(s) in 15 repeated row(s)" in cal.summary()


def test_a_noisy_row_is_named_and_compare_reports_it_as_noise_not_a_regression():
    seed = random.randrange(1 << 30)
    a, b = repeats(jitter=0.004, seed=seed, noisy={"flex": 0.0})
    b = [dict(r, time_ms=r["time_ms"] * 1.2, value=r["value"] * 1.2, p20_ms=r["p20_ms"] * 1.2,
              p80_ms=r["p80_ms"] * 1.2) if r["attention"] == "flex" and r["seq_len"] == 1024 else r for r in b]
    cal = calibrate(a, b, ["time_ms:3%"])
    assert cal.false_alarms == 1 and not cal.ok  # without calibration the gate cries wolf on flex at 1k
    assert len(cal.noisy) == 1 and "attention=flex" in cal.noisy[0]["config"] and "seq_len=1024" in \
        cal.noisy[0]["config"] and cal.noisy[0]["metric"] == "time_ms"
    assert cal.noisy[0]["spread_pct"] == pytest.approx(20.0, rel=1e-6)
    noisy = {(n["suite"], n["identity"], n["metric"]) for n in cal.noisy}
    result = compare(a, b, ["time_ms:3%"], noisy=noisy)
    assert not result.regressed and result.calibrated_noisy == 1
    assert [e.category for e in result.entries] == ["noise"] and "noisy" in result.entries[0].note
    assert "1 change(s) on rows the calibration found noisy" in result.summary()


def test_plant_slowdown_scales_the_time_and_its_band():
    rows = [kernel("sdpa", 1024, 2.0, spread=0.01), kernel("naive", 1024, 4.0)]
    out, planted = plant_slowdown(rows, 5.0, target="naive")
    assert planted["attention"] == "naive" and planted["time_ms"] == pytest.approx(4.2)
    assert planted["p20_ms"] == pytest.approx(4.0 * 0.995 * 1.05) and planted["value"] == pytest.approx(4.2)
    assert out[0] == rows[0] and rows[1]["time_ms"] == 4.0  # the input rows are not touched


def _write(path, rows):
    for r in rows:
        append_row(path, r)
    return path


def test_cli_calibrate_writes_the_file_compare_reads(tmp_path, capsys):
    a, b = repeats(jitter=0.004, seed=1, noisy={"naive": 0.2})
    pa, pb = _write(tmp_path / "a.jsonl", a), _write(tmp_path / "b.jsonl", b)
    code, out, _ = cli(capsys, "calibrate", pa, pb, "--fail-if", "time_ms:3%", "--out", tmp_path / "noise.json")
    data = json.loads((tmp_path / "noise.json").read_text())
    assert data["version"] == 1 and data["fail_if"] == ["time_ms:3%"]
    assert data["noisy"] and all("attention=naive" in n["config"] for n in data["noisy"])
    assert "calibrate:" in out and ("noisy:" in out) == bool(data["noisy"])
    assert code == (0 if data["false_alarms"] == 0 and data["planted"]["caught"] else 1)
    code, out, _ = cli(capsys, "compare", pa, pb, "--fail-if", "time_ms:3%", "--noise", tmp_path / "noise.json")
    assert code == 0, out  # every naive change is noise now; the others are within 3%
    code, _, err = cli(capsys, "compare", pa, pb, "--noise", tmp_path / "missing.json")
    assert code == 2 and "cannot read a calibration file" in err and len(err.strip().splitlines()) == 1
