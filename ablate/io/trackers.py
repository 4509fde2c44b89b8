"""The experiment trackers ablate logs to -- W&B, MLflow, TensorBoard -- as one small adapter each, shared by
``ablate export --to`` (:mod:`ablate.io.export`: finished rows) and ``ablate run --log-to`` (:mod:`ablate.store.livelog`:
live training curves and each row as it is written).

Every tracker is an optional extra of ablate-bench (``pip install 'ablate-bench[wandb]'``); :func:`check_tracker`
turns a missing package into one line naming the extra. Names (metric tags, params) go through :func:`safe_name`,
the same for every tracker. Each adapter honours its tracker's own settings: W&B ``WANDB_MODE`` / ``WANDB_*``,
MLflow ``MLFLOW_TRACKING_URI`` (a folder given instead is a file store), TensorBoard a log folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from ablate.errors import ConfigError, UnavailableError

__all__ = ["TRACKERS", "EXTRAS", "install_hint", "check_tracker", "safe_name", "mlflow_uri", "mlflow_experiment",
           "wandb_init", "tensorboard_writer", "markdown_table"]

TRACKERS = ("wandb", "mlflow", "tensorboard")
# The optional extra of ablate-bench that installs each tracker's package: (package, extra).
EXTRAS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}


def install_hint(target: str, flag: str = "--to", extras: Mapping[str, tuple[str, str]] = EXTRAS) -> str:
    """``--to mlflow needs the mlflow package: pip install 'ablate-bench[mlflow]'``."""
    package, extra = extras[target]
    return f"{flag} {target} needs the {package} package: pip install 'ablate-bench[{extra}]'"


def check_tracker(target: str, flag: str = "--to") -> None:
    """Raise a one-line :class:`UnavailableError` naming the extra to install when ``target``'s package is missing
    (``flag``: the option that asked for it, named in the message)."""
    if target not in TRACKERS:
        raise ConfigError(f"unknown tracker {target!r} for {flag}; valid: {', '.join(TRACKERS)}")
    try:
        if target == "wandb":
            import wandb  # noqa: F401
        elif target == "mlflow":
            import mlflow  # noqa: F401
        elif target == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UnavailableError(install_hint(target, flag)) from None


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def safe_name(text: str) -> str:
    """``text`` as a metric / param name every tracker accepts: ``=`` → ``-``, ``,`` → space, any other character
    outside letters, digits, ``_ - . /`` and space → ``_``; no leading ``/``, no ``..``, no empty path parts."""
    out = _UNSAFE.sub("_", str(text).replace("=", "-").replace(",", " "))
    parts = [p.strip() for p in out.split("/")]
    parts = [p.replace("..", "__") or "_" for p in parts]
    return "/".join(parts).strip() or "_"


def markdown_table(params: Mapping[str, Any], header: str = "param") -> str:
    """``params`` as a two-column Markdown table (what TensorBoard's text tab shows)."""
    lines = [f"| {header} | value |", "|---|---|"] + [
        f"| {k} | {str(v).replace('|', '/')} |" for k, v in params.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# MLflow


def mlflow_uri(out: str) -> str:
    """A tracking URI as given (``file:...``, ``http(s)://...``, ``sqlite:///...``, ``databricks``), or a folder as
    the ``file:`` URI of its absolute path (a file store)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", out) and not re.match(r"^[A-Za-z]:[\\/]", out):
        return out
    return Path(out).expanduser().resolve().as_uri()


def mlflow_experiment(out: str | None, experiment: str) -> tuple[Any, str]:
    """(client, experiment id) of ``experiment`` (created when missing) in the store ``out`` (a URI or a folder;
    ``None``: MLflow's own default, ``$MLFLOW_TRACKING_URI`` or ``./mlruns``). Nothing process-wide is set (the
    client is bound to the store). A store that cannot be reached or refuses is one :class:`ConfigError` line."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = None
    if out is not None:
        uri = mlflow_uri(str(out))
        if uri.startswith("file:"):  # a folder asked for by name: MLflow >= 3.7 wants this opt-in for a file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                return client, client.create_experiment(experiment)
            except MlflowException:  # created by a parallel worker between the lookup and the create
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
        if getattr(exp, "lifecycle_stage", "active") == "deleted":
            raise ConfigError(f"mlflow: experiment {experiment!r} is deleted; restore it (mlflow experiments "
                              "restore) or use another name")
    except MlflowException as exc:  # no store there, server down, store refused: one line
        raise ConfigError(f"mlflow: {' '.join(str(exc).split())[:400]}") from None
    return client, exp.experiment_id


# ---------------------------------------------------------------------------------------------------------------
# W&B


def wandb_init(*, project: str, name: str, group: str, job_type: str, tags: list[str], config: Mapping[str, Any],
               out: Path | None) -> Any:
    """A started W&B run (``WANDB_MODE``, ``WANDB_DIR`` and the other ``WANDB_*`` settings apply); its files go
    under ``out/wandb`` when ``out`` is given."""
    import wandb

    kwargs: dict[str, Any] = dict(project=project, name=name, group=group, job_type=job_type,
                                  tags=[t[:64] for t in tags], config=dict(config))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(out)
    try:
        kwargs["settings"] = wandb.Settings(silent=True)
    except Exception:  # pragma: no cover - older wandb
        pass
    return wandb.init(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# TensorBoard


def tensorboard_writer(logdir: Path) -> Any:
    """A ``SummaryWriter`` writing event files into ``logdir`` (created)."""
    from torch.utils.tensorboard import SummaryWriter

    logdir.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(logdir))
