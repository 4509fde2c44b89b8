"""ablate.reporting.pathfree: a corpus named by what it is, command lines without machine paths."""

from __future__ import annotations

from ablate.reporting.pathfree import data_text, has_abs_path, path_free


def test_the_corpus_is_named_without_its_path():
    row = {"data": "stdlib (/root/.pyenv/versions/3.11.7/lib/python3.11)", "data.hash": "b60ac18034a48cd6"}
    assert data_text(row) == "stdlib (Python 3.11 sources, corpus b60ac180)"
    assert data_text({"data": "stdlib (C:\\Python312\\Lib)", "data.hash": "0123456789"}) == "stdlib (Lib, corpus 01234567)"
    assert data_text({"data": "/data/x/corpus.bin", "data.hash": "1a2b3c4d5e"}) == "corpus.bin (corpus 1a2b3c4d)"
    assert data_text({"data": "topics", "data.hash": "ff"}) == "topics"  # no path: unchanged
    assert data_text({"data": "hf:wikitext:wikitext-2-raw-v1"}) == "hf:wikitext:wikitext-2-raw-v1"


def test_absolute_paths_are_cut_to_their_last_component():
    assert path_free("ablate run --out /tmp/rr2 --no-progress") == "ablate run --out …/rr2 --no-progress"
    assert path_free("--out=/home/u/runs/a (/root/x/y)") == "--out=…/a (…/y)"
    assert path_free("C:\\Users\\me\\r.jsonl") == "…/r.jsonl"
    kept = "runs/small ./x/y ~/a nats/token 1/2 p20/p80 https://example.org/a/b </td>"
    assert path_free(kept) == kept and has_abs_path(kept) == []
    assert has_abs_path("see /tmp/x") == ["/tmp/x"]
