"""Data parallelism under ``torchrun``: process-group set-up, the rank's slice of a batch, rank-0-only decisions.

``ablate run --suite training --nproc-per-node N`` re-launches itself through ``torch.distributed.run`` (torchrun);
each rank then finds ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` in its environment and calls :func:`init` once.
The training loop (:func:`ablate.core.train.train`) wraps the model in ``DistributedDataParallel`` when a group is up.

How a run on N ranks stays the run on one device (same config, same results up to float rounding):

* every rank draws the same global batch of ``train.batch_size`` rows for step ``s`` (``Batches`` depends on
  ``(seed, step)`` only) and keeps its own contiguous block of ``batch_size / N`` rows (:func:`shard_batch`), so the
  ranks see disjoint, deterministic slices and together exactly the single-device batch;
* each rank's loss is the mean over its rows and DDP averages the gradients, which is the gradient of the global
  mean; the logged loss is the all-reduced mean (:func:`mean_across`);
* steps, learning-rate schedule and token budget come from the config, not from N;
* only global rank 0 evaluates, writes rows and prints; the other ranks follow rank 0's plan (:func:`broadcast`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ablate.errors import ConfigError

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``$WORLD_SIZE`` as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched() -> bool:
    """True inside a process started by torchrun with more than one rank."""
    return env_world_size() > 1


def current() -> DistInfo:
    """The initialised process group's view (rank 0 of 1 when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=str(dist.get_backend()))


def init(device: str) -> DistInfo:
    """Join the process group torchrun describes: gloo on CPU, NCCL on CUDA (each rank on GPU ``LOCAL_RANK``).
    A no-op returning rank 0 of 1 outside torchrun; idempotent."""
    import torch.distributed as dist

    if not launched():
        return DistInfo()
    if dist.is_initialized():
        return current()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run without --nproc-per-node")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank with LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA GPU(s) "
                              "are visible; lower --nproc-per-node")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return current()


def shutdown() -> None:
    """Leave the process group (all ranks together). Exiting with a live gloo group can abort the process
    ("terminate called without an active exception") as its threads are torn down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def check_batch(batch_size: int, world_size: int) -> None:
    if world_size > 1 and batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} does not split evenly over {world_size} ranks; use a "
                          f"--nproc-per-node that divides it (the global batch stays that of the config)")


def shard_batch(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous block of rows of the global batch ``t`` (all rows when not distributed)."""
    if not info.enabled:
        return t
    per = t.shape[0] // info.world_size
    return t[info.rank * per:(info.rank + 1) * per]


def mean_across(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of ``values`` over the ranks (a float64 copy; unchanged when not distributed)."""
    if not info.enabled:
        return values
    import torch.distributed as dist

    out = values.detach().to(torch.float64 if values.device.type == "cpu" else torch.float32).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return out / info.world_size


def broadcast(obj: Any, info: DistInfo | None = None) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; identity when not distributed)."""
    info = info or current()
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["DistInfo", "init", "shutdown", "current", "launched", "env_world_size", "shard_batch", "mean_across",
           "broadcast", "check_batch"]
