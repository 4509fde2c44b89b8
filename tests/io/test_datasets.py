"""Hugging Face datasets as corpora (``--data hf:NAME[:CONFIG]`` / a ``save_to_disk`` folder): built here from local
files, never from the network; a tiny suite runs on one end to end through the CLI."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before datasets is imported: the tests never reach the network
os.environ.setdefault("HF_HUB_OFFLINE", "1")
datasets = pytest.importorskip("datasets")

from ablate.io.data import load_corpus  # noqa: E402
from ablate.errors import ConfigError, UnavailableError  # noqa: E402
from ablate.store.results import read_rows  # noqa: E402
from tests.helpers import cli  # noqa: E402


def _topic_lines() -> list[str]:
    from pydoc_data import topics

    return [line for k in sorted(topics.topics) for line in topics.topics[k].splitlines()]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DatasetDict (train / validation) from two local text files, saved with save_to_disk."""
    tmp = tmp_path_factory.mktemp("hf")
    lines = _topic_lines()
    cut = int(len(lines) * 0.8)
    files = {"train": tmp / "train.txt", "validation": tmp / "valid.txt"}
    files["train"].write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    files["validation"].write_text("\n".join(lines[cut:]) + "\n", encoding="utf-8")
    dd = datasets.load_dataset("text", data_files={k: str(v) for k, v in files.items()},
                               cache_dir=str(tmp / "cache"))
    folder = tmp / "saved"
    dd.save_to_disk(str(folder))
    return folder, files


def test_saved_folder_uses_the_datasets_own_splits(saved):
    folder, files = saved
    c = load_corpus(folder)
    assert c.split == "dataset splits train / validation" and c.byte_level and c.vocab_size == 256
    # each row is a line; rows are joined back into the files' text
    assert bytes(c.train) == files["train"].read_bytes()
    assert bytes(c.val) == files["validation"].read_bytes()
    assert c.documents == (files["train"].read_text().count("\n"), files["validation"].read_text().count("\n"))
    assert c.name == str(folder)
    again = load_corpus(f"hf:{folder}")  # hf:PATH of a save_to_disk folder: the same corpus
    assert again.hash == c.hash and again.split == c.split


def test_one_split_dataset_holds_out_rows_by_the_crc32_rule(tmp_path):
    from ablate.io.corpus import held_out

    rows = [f"document {i}: " + "word " * (20 + i % 7) for i in range(400)]
    datasets.Dataset.from_dict({"text": rows}).save_to_disk(str(tmp_path / "one"))
    c = load_corpus(tmp_path / "one", val_frac=0.1)
    assert c.split == "by row crc32 0.1"
    held = [r for i, r in enumerate(rows) if held_out(f"{i:012d}", 0.1)]
    assert c.documents == (len(rows) - len(held), len(held))
    assert bytes(c.val) == b"\n\n".join((r + "\n").encode() for r in held)


def test_text_column_is_found_and_missing_text_is_one_line(tmp_path):
    datasets.Dataset.from_dict({"id": list(range(50)), "body": ["some text here " * 8] * 50}).save_to_disk(
        str(tmp_path / "body"))
    assert len(load_corpus(tmp_path / "body").train) > 0
    datasets.Dataset.from_dict({"id": list(range(5))}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(ConfigError, match="no text column"):
        load_corpus(tmp_path / "ints")


def test_uncached_hub_dataset_is_a_one_line_error_without_network():
    with pytest.raises(ConfigError) as exc:
        load_corpus("hf:ablate-test/surely-not-cached-anywhere:cfg")
    msg = str(exc.value)
    assert "\n" not in msg and "hf:ablate-test/surely-not-cached-anywhere:cfg" in msg


def test_missing_datasets_package_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(UnavailableError, match="`hf` extra"):
        load_corpus("hf:wikitext:wikitext-2-raw-v1")
    code, _, err = cli(capsys, "run", "-s", "training", "-p", "micro", "--data", "hf:wikitext", "--no-progress",
                       "--device", "cpu", "-o", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "`hf` extra" in err, err


def test_cli_runs_a_suite_on_a_saved_dataset_end_to_end(saved, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    folder, files = saved
    out = tmp_path / "runs"
    argv = ("run", "-s", "training", "-p", "micro", "--data", str(folder), "--tokenizer", "bpe:400",
            "--set", "grid.only=original", "--set", "train.steps=3", "--no-progress", "--device", "cpu",
            "-o", str(out))
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    path = out / "training" / "cpu-micro.jsonl"
    rows = read_rows(path)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    r = rows[0]
    assert r["data"] == str(folder) and r["data.split"] == "dataset splits train / validation"
    assert r["data.tokenizer"].startswith("bpe400:") and r["data.token_unit"] == r["data.tokenizer"]
    assert not r["data.byte_level"] and r["config.model.vocab_size"] == r["data.vocab_size"] <= 400
    assert r["data.train_bytes"] == files["train"].stat().st_size
    assert r["data.val_bytes"] == files["validation"].stat().st_size
    assert r["data.text_hash"] == load_corpus(folder).hash != r["data.hash"]
    assert r["val_bpb"] == pytest.approx(r["val_loss"] * r["eval_tokens"] / (r["eval_bytes"] * math.log(2)))
    assert json.loads(json.dumps(r))  # a valid row (read_rows checked the schema)
    # the second run finds the row (and the token cache): nothing new
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert len(read_rows(path)) == 1
    # the extrapolation suite on the same dataset, byte-level
    code, _, err = cli(capsys, "run", "-s", "extrapolation", "-p", "micro", "--data", f"hf:{folder}",
                       "--set", "positions=alibi", "--set", "rope_scalings=", "--set", "train.steps=3",
                       "--no-progress", "--device", "cpu", "-o", str(out))
    assert code == 0, err
    ex = read_rows(out / "extrapolation" / "cpu-micro.jsonl")  # <out>/<suite>/<device>-<preset>.jsonl
    assert ex and all(x["status"] == "ok" and x["data.token_unit"] == "byte" for x in ex)
    assert all(x["bpb"] == pytest.approx(x["loss"] / math.log(2)) for x in ex)
