"""Checkpoints load safely and only for the model and task they were saved for (issue #24).

* a crafted pickle in a run folder is refused as unreadable (``weights_only=True``), never executed;
* what a checkpoint holds is plain (numpy numbers become Python numbers when it is saved);
* a whole, valid checkpoint of another model with the same tensor shapes (sinusoidal's copied over ALiBi's) is
  refused with one warning and the model is retrained: the rows equal a fresh run's.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.core.checkpoint import CheckpointMismatch, CorruptCheckpoint, load_checkpoint, plain, save_checkpoint


class _Exploit:
    """Unpickling it would create a file: proof that the pickle ran code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _with_header(body: bytes) -> bytes:
    import hashlib

    from ablate.core.checkpoint import MAGIC
    return MAGIC + f"sha256={hashlib.sha256(body).hexdigest()} bytes={len(body)}\n".encode() + body


@pytest.mark.parametrize("framed", [True, False], ids=["with-checksum", "plain-torch-save"])
def test_a_crafted_pickle_is_refused_not_run(tmp_path, framed):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"info": {}, "state_dict": None, "x": _Exploit(str(marker))}, buf)
    path = tmp_path / "rope-s0-abc.pt"
    path.write_bytes(_with_header(buf.getvalue()) if framed else buf.getvalue())
    with pytest.raises(CorruptCheckpoint, match="cannot be read") as exc:
        load_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(exc.value)
    raw = tmp_path / "raw.pt"  # a bare pickle (not even a torch file)
    raw.write_bytes(pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(raw)
    assert not marker.exists()


def test_metadata_is_saved_as_plain_types(tmp_path):
    payload = {"info": {"loss": np.float64(1.5), "steps": np.int64(3), "curve": np.arange(3), "t": (1, 2)},
               "state_dict": OrderedDict(w=torch.ones(2)), "history": [{"lr": np.float32(0.5)}]}
    got = load_checkpoint(save_checkpoint(tmp_path / "m.pt", payload))
    assert got["info"] == {"loss": 1.5, "steps": 3, "curve": [0, 1, 2], "t": (1, 2)}
    assert type(got["info"]["loss"]) is float and type(got["info"]["steps"]) is int
    assert torch.equal(got["state_dict"]["w"], torch.ones(2))
    with pytest.raises(TypeError, match=r"payload\['info'\]\['f'\] is a function"):
        plain({"info": {"f": lambda: 0}})


def test_a_checkpoint_of_another_model_or_task_is_a_mismatch(tmp_path):
    cfg = {"position": "sinusoidal", "d_model": 32}
    path = save_checkpoint(tmp_path / "m.pt", {"info": {}, "state_dict": None, "model_cfg": cfg,
                                               "task": {"seed": 0}})
    assert load_checkpoint(path, expect={"model_cfg": dict(cfg)}, expect_if_saved={"task": {"seed": 0}})
    with pytest.raises(CheckpointMismatch, match="position='sinusoidal' saved, 'alibi' here"):
        load_checkpoint(path, expect={"model_cfg": {**cfg, "position": "alibi"}})
    with pytest.raises(CheckpointMismatch, match="seed=0 saved, 1 here"):
        load_checkpoint(path, expect_if_saved={"task": {"seed": 1}})
    with pytest.raises(CheckpointMismatch, match="records no finetune"):
        load_checkpoint(path, expect={"finetune": {}})
    assert load_checkpoint(path, expect_if_saved={"finetune": {"x": 1}})  # older checkpoints: not recorded, not checked
    assert isinstance(CheckpointMismatch(path, "x"), CorruptCheckpoint)  # callers retrain on it


def test_a_swapped_checkpoint_is_retrained_not_loaded(tmp_path, capsys, request):
    """Sinusoidal's checkpoint copied over ALiBi's (no position parameters: the same tensor shapes) is refused with
    one warning and ALiBi is retrained; the rewritten checkpoint is ALiBi's."""
    from ablate.io.data import load_corpus
    from ablate.suites.extrapolation.config import resolve
    from ablate.suites.extrapolation.measure import _train_job
    from ablate.suites.extrapolation.plan import Job

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(before))  # later tests see this process's default again
    cfg = resolve("micro", ["positions=sinusoidal,alibi", "rope_scalings=", "train.steps=2"])
    corpus = load_corpus(None, default=cfg.data.corpus, val_frac=cfg.data.val_frac)
    sin_job, ali_job = Job("lm", "sinusoidal", 0, []), Job("lm", "alibi", 0, [])
    sin, ali = tmp_path / "sinusoidal-s0-x.pt", tmp_path / "alibi-s0-x.pt"
    _, info = _train_job(cfg, sin_job, corpus, "cpu", sin, False)
    assert info["from_checkpoint"] is False
    assert _train_job(cfg, sin_job, corpus, "cpu", sin, False)[1]["from_checkpoint"] is True  # its own: loaded
    shutil.copyfile(sin, ali)  # a whole, valid checkpoint of another model with ALiBi's tensor shapes
    capsys.readouterr()
    model, info = _train_job(cfg, ali_job, corpus, "cpu", ali, False)
    warn = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warn) == 1 and str(ali) in warn[0] and "retraining alibi-s0" in warn[0], warn
    assert "position='sinusoidal' saved, 'alibi' here" in warn[0]
    assert info["from_checkpoint"] is False and model is not None
    saved = load_checkpoint(ali)
    assert saved["model_cfg"]["position"] == "alibi" and saved["task"]["position"] == "alibi"
    shutil.copyfile(sin, tmp_path / "sinusoidal-s1-x.pt")  # another seed's file: the task identity differs
    s1 = tmp_path / "sinusoidal-s1-x.pt"
    with pytest.raises(CheckpointMismatch, match="seed=0 saved, 1 here"):
        load_checkpoint(s1, expect_if_saved={"task": {"kind": "lm", "position": "sinusoidal", "seed": 1,
                                                      "file": s1.name}})
