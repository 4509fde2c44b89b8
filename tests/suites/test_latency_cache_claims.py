"""MLA's latent cache next to MHA / GQA / MQA in the latency suite's decode (suites/latency/decode_cache.py): two
micro decode runs into one results file (the standard layer over three layouts, mla over MHA), the bytes per token
from the measured caches, DeepSeek-V2's 2.25-group claim computed from them, and the report's side-by-side table."""

from __future__ import annotations

import pandas as pd

from ablate.analysis.claims import NOT_REPRODUCED, REPRODUCED
from ablate.plan.runner import RunOptions, report_rows, run_suite
from ablate.store.results import read_rows, to_frame
from ablate.suites.latency.decode_cache import cache_claims, cache_table

DECODE = ("parts=decode",)


def _run(tmp_path, *overrides):
    return run_suite(RunOptions(suite="latency", preset="micro", overrides=DECODE + overrides, out=tmp_path,
                                device="cpu", progress=False))


def test_mla_cache_beside_mha_gqa_mqa_and_its_claim(tmp_path):
    _run(tmp_path, "decode.layouts=mha,gqa,mqa")
    path = _run(tmp_path, "model.attention=mla", "decode.layouts=mha")
    rows = [r for r in read_rows(path) if r["part"] == "decode"]
    assert {(r["attention"], r["layout"]) for r in rows} >= {("mla", "mha"), ("sdpa", "mha"), ("sdpa", "mqa")}
    assert all(r["status"] == "ok" and r["kv_match"] for r in rows), [r.get("reason") for r in rows]
    t = cache_table(to_frame(path)).set_index(["attention", "layout"])
    hd = rows[0]["head_dim"]
    assert t.loc[("mla", "mha"), "elements / token / layer (× head_dim)"] == 4.5
    assert t.loc[("mla", "mha"), "as GQA groups"] == 2.25
    assert t.loc[("sdpa", "mqa"), "elements / token / layer (× head_dim)"] == 2.0
    heads = rows[0]["n_heads"]
    assert t.loc[("sdpa", "mha"), "elements / token / layer (× head_dim)"] == 2 * heads
    assert t.loc[("mla", "mha"), "× MHA"] == round(4.5 / (2 * heads), 4)
    mla = next(r for r in rows if r["attention"] == "mla")
    assert t.loc[("mla", "mha"), "bytes / token"] == 4.5 * hd * mla["n_layers"] * 4  # float32
    (claim,) = cache_claims(to_frame(path))
    assert claim.verdict == REPRODUCED and "2.25 groups" in claim.ours
    written = {p.name for p in report_rows(to_frame(path), tmp_path / "rep")["latency"]}
    assert {"latency_decode_cache.md", "latency_decode_cache_claims.md"} <= written
    idx = (tmp_path / "rep" / "index.md").read_text()
    assert "Decode-state bytes per token" in idx and "| attention" in (tmp_path / "rep" / "latency_decode.md").read_text()


def test_a_latent_cache_of_other_size_is_not_reproduced_and_kv_only_rows_claim_nothing():
    base = {"part": "decode", "status": "ok", "context": 10, "n_layers": 2, "batch": 1, "kv_el_bytes": 4,
            "head_dim": 8, "d_model": 32, "n_heads": 4, "layout": "mha"}
    other = pd.DataFrame([{**base, "attention": "mla", "cache_tensors": "latent,k_rope", "n_kv_heads": 4,
                           "kv_bytes": 10 * 2 * 4 * 8 * 5}, {**base, "attention": "sdpa", "cache_tensors": "k,v",
                                                            "n_kv_heads": 4, "kv_bytes": 10 * 2 * 4 * 8 * 8}])
    (claim,) = cache_claims(other)
    assert claim.verdict == NOT_REPRODUCED and "GQA with 2.5 groups" in claim.ours
    assert cache_claims(other[other["attention"] == "sdpa"]) == []
    assert cache_claims(pd.DataFrame()) == []
