"""Third-party variants: plugins that register attention kernels, position encodings, norms or activations from
outside the package, exactly as the built-ins do (``@POSITION.register(...)`` etc. run when the plugin is imported).

A plugin is a Python module, found in one of three ways:

* **entry point** -- an installed distribution declares, in its ``pyproject.toml``::

      [project.entry-points."ablate.variants"]
      myvariants = "mypkg.variants"

  Every such module is imported by :func:`ablate.registry.keys.build` (after the built-in tables of ``ablate.variants``), in
  every process, without being asked. Origin of its keys: ``"entry point <dist>:<name>"``.
* **--plugin MODULE_OR_FILE** (``ablate run``, ``ablate list``, ``ablate report``; repeatable) -- a dotted module name
  (importable from ``sys.path``) or a ``.py`` file, imported under the stable name ``ablate_plugin_<stem>_<hash of
  its absolute path>``. Origin: ``"plugin <module>"`` or ``"plugin <absolute file path>"``.
* **$ABLATE_PLUGINS** -- the same, ``os.pathsep``-separated (``:`` on POSIX). ``--plugin`` adds to it (absolute
  paths), so every process started from this one -- ``--launcher gpus`` workers, submitit jobs, torchrun ranks --
  loads the same plugins; the launchers also pass them explicitly (the worker spec's ``opts.plugins``, ``--plugin``
  on the ranks' command line), so a Slurm job on a node that does not inherit the environment gets them too.

A plugin that cannot be imported is **fatal**: :class:`PluginError`, one line naming the plugin and the error (the
CLI prints it and exits 2), raised again by every later :func:`load_plugins` in the process. A sweep must not run
with some of its variants silently missing. ``ABLATE_DISABLE_ENTRY_POINTS=1`` skips the entry points (a broken
installed plugin you cannot uninstall right now); ``--plugin`` / ``$ABLATE_PLUGINS`` still apply.

Keys are global: a plugin reusing a registered key (a built-in's or another plugin's) fails with the registry's
duplicate-key error, which names both origins.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

from ablate.errors import AblateError
from ablate.registry.keys import (PLUGINS_ENV, REGISTRIES, DuplicateKeyError, add_loader, build,  # noqa: F401
                                  registering_from)

ENTRY_POINT_GROUP = "ablate.variants"
DISABLE_ENTRY_POINTS_ENV = "ABLATE_DISABLE_ENTRY_POINTS"

_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "DISABLE_ENTRY_POINTS_ENV", "PluginError", "Plugin", "normalize",
           "requested", "use", "load_plugins", "loaded", "module_name_for_file"]


class PluginError(AblateError):
    """A plugin that cannot be found or imported (or that reuses a registered key): one line naming it."""


@dataclass(frozen=True)
class Plugin:
    """One imported plugin: ``origin`` is what its registry entries record, ``module`` its name in sys.modules."""

    origin: str
    module: str
    source: str  # the file, the module name, or the entry point's value ("mypkg.variants")


_LOADED: dict[str, Plugin] = {}  # origin -> plugin, in load order
_FAILED: dict[str, PluginError] = {}  # origin -> its error, raised again on every later load
_ENTRY_POINTS_SCANNED: list[bool] = [False]
_ENTRY_POINTS: list = []  # this process's ablate.variants entry points, scanned once


# ---------------------------------------------------------------------------------------------------------------
# Naming plugins


def _looks_like_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec or bool(os.altsep and os.altsep in spec)


def normalize(spec: str, where: str = "--plugin") -> str:
    """``spec`` as loaded and passed on: a file as its absolute path (it must exist), a module name as is.
    :class:`PluginError` for anything else."""
    text = str(spec).strip()
    if not text:
        raise PluginError(f"{where}: empty plugin name; give a module name (mypkg.variants) or a .py file")
    if _looks_like_file(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise PluginError(f"{where} {text}: no such file" + ("" if text.endswith(".py") else
                                                                  " (a plugin file ends in .py)"))
        if path.suffix != ".py":
            raise PluginError(f"{where} {text}: a plugin file must be a .py file")
        return str(path.resolve())
    if not _MODULE_NAME.match(text):
        raise PluginError(f"{where} {text!r}: not a .py file or a dotted module name (e.g. mypkg.variants)")
    return text


def _origin(spec: str) -> str:
    return f"plugin {spec}"


def module_name_for_file(path: str | os.PathLike) -> str:
    """The stable ``sys.modules`` name of a plugin file: the same in every process that loads the same path (so
    its classes pickle by reference between a launcher and its workers)."""
    full = str(Path(path).expanduser().resolve())
    stem = re.sub(r"\W", "_", Path(full).stem) or "plugin"
    return f"ablate_plugin_{stem}_{hashlib.sha1(full.encode('utf-8')).hexdigest()[:10]}"


def requested() -> tuple[str, ...]:
    """The plugins ``$ABLATE_PLUGINS`` names (normalized, duplicates dropped), in order."""
    out: list[str] = []
    for item in os.environ.get(PLUGINS_ENV, "").split(os.pathsep):
        if item.strip():
            spec = normalize(item, where=PLUGINS_ENV)
            if spec not in out:
                out.append(spec)
    return tuple(out)


def use(specs: Iterable[str] | None = (), *, load: bool = True) -> tuple[str, ...]:
    """Make ``specs`` (module names or ``.py`` files) plugins of this process and of every process it starts: they
    are added to ``$ABLATE_PLUGINS`` (files as absolute paths). With ``load``, import them now, with the built-ins
    and the entry points first (:func:`ablate.registry.keys.build`), so a broken one fails before anything runs.
    Returns every requested plugin (``$ABLATE_PLUGINS`` after the update) -- what a launcher passes to workers."""
    current = list(requested())
    for spec in specs or ():
        n = normalize(spec)
        if n not in current:
            current.append(n)
    if current:
        os.environ[PLUGINS_ENV] = os.pathsep.join(current)
    if load:
        build()
    return tuple(current)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def loaded() -> list[Plugin]:
    """Plugins imported so far in this process, in load order."""
    return list(_LOADED.values())


def _where(exc: BaseException) -> str:
    """`` (at FILE:LINE)``: the innermost frame of the failure, when it is not already in the message."""
    if isinstance(exc, SyntaxError):
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")
              and Path(f.filename).resolve() != Path(__file__).resolve()]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno})"


def _fail(origin: str, source: str, exc: BaseException, hint: str) -> PluginError:
    for reg in REGISTRIES.values():  # no half-registered plugin
        reg._forget(origin)
    if isinstance(exc, DuplicateKeyError):
        err = PluginError(str(exc))
    elif isinstance(exc, PluginError):
        err = exc
    else:
        if isinstance(exc, SyntaxError) and exc.filename:
            detail = f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
        else:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        what = origin if source in origin else f"{origin} ({source})"
        err = PluginError(f"could not load {what}: {detail}{_where(exc)}; {hint}")
    _FAILED[origin] = err
    return err


def _import_file(path: str) -> str:
    name = module_name_for_file(path)
    if name in sys.modules:
        return name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses, pickling and self-imports look it up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return name


def _load_spec(spec: str) -> Plugin:
    """Import one ``--plugin`` / ``$ABLATE_PLUGINS`` plugin (normalized) under its origin."""
    origin = _origin(spec)
    if origin in _LOADED:
        return _LOADED[origin]
    if origin in _FAILED:
        raise _FAILED[origin]
    is_file = _looks_like_file(spec)
    hint = (f"a plugin is never skipped (a sweep must not lose variants silently): fix it or drop it from --plugin "
            f"/ ${PLUGINS_ENV}")
    try:
        with registering_from(origin):
            if is_file:
                module = _import_file(spec)
            else:
                importlib.import_module(spec)
                module = spec
    except ModuleNotFoundError as exc:
        if not is_file and exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise _fail(origin, spec, PluginError(
                f"plugin module {spec!r} not found (not installed, not on PYTHONPATH); give a .py file path "
                "or install the package"), hint) from None
        raise _fail(origin, spec, exc, hint) from None
    except Exception as exc:
        raise _fail(origin, spec, exc, hint) from None
    plugin = Plugin(origin, module, spec)
    _LOADED[origin] = plugin
    return plugin


def _entry_points() -> list:

    eps = entry_points(group=ENTRY_POINT_GROUP)
    return sorted(eps, key=lambda ep: (_dist_name(ep), ep.name, ep.value))


def _dist_name(ep) -> str:  # noqa: ANN001
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) if dist is not None else None
    return str(name) if name else "unknown-distribution"


def _load_entry_point(ep) -> Plugin:  # noqa: ANN001
    dist = _dist_name(ep)
    origin = f"entry point {dist}:{ep.name}"
    if origin in _LOADED:
        return _LOADED[origin]
    if origin in _FAILED:
        raise _FAILED[origin]
    hint = (f"a plugin is never skipped (a sweep must not lose variants silently): fix it, uninstall it "
            f"(pip uninstall {dist}), or set {DISABLE_ENTRY_POINTS_ENV}=1 to skip installed plugins")
    try:
        with registering_from(origin):
            ep.load()
    except Exception as exc:
        raise _fail(origin, f"{ep.value}, group {ENTRY_POINT_GROUP}", exc, hint) from None
    plugin = Plugin(origin, ep.value.split(":", 1)[0].strip(), ep.value)
    _LOADED[origin] = plugin
    return plugin


def _entry_points_disabled() -> bool:
    return os.environ.get(DISABLE_ENTRY_POINTS_ENV, "").strip().lower() not in ("", "0", "false", "no")


_BUILTINS_IN: list[bool] = [False]


def load_builtins() -> None:
    """Copy the built-in tables of :data:`ablate.variants.BUILTIN_TABLES` into the registries, once (the first loader
    :func:`ablate.registry.keys.build` runs)."""
    if _BUILTINS_IN[0]:
        return
    from ablate.variants import BUILTIN_TABLES  # lazy: the variants import torch, and they register on the registries

    for table in BUILTIN_TABLES:
        for entry in table._entries.values():
            REGISTRIES[table.axis].add(entry)
    _BUILTINS_IN[0] = True


def load_plugins() -> list[Plugin]:
    """Import the plugins not imported yet: the ``ablate.variants`` entry points (scanned once per process), then
    ``$ABLATE_PLUGINS`` in order. The built-in variants are imported first, so they always register as ``ablate``.
    Idempotent; a plugin that failed raises its :class:`PluginError` again. Returns the plugins loaded so far."""
    import ablate.variants  # noqa: F401  (built-ins before any plugin: a plugin importing them must not own them)

    if not _entry_points_disabled():
        if not _ENTRY_POINTS_SCANNED[0]:
            _ENTRY_POINTS_SCANNED[0] = True
            try:
                eps = _entry_points()
            except Exception as exc:  # broken metadata somewhere on sys.path
                _ENTRY_POINTS_SCANNED[0] = False
                raise PluginError(f"could not list the {ENTRY_POINT_GROUP!r} entry points: "
                                  f"{type(exc).__name__}: {exc}") from None
            _ENTRY_POINTS.extend(eps)
        for ep in _ENTRY_POINTS:
            _load_entry_point(ep)
    for spec in requested():
        _load_spec(spec)
    return loaded()


# What ablate.registry.keys.build() runs: the built-ins, then the plugins.
add_loader(load_builtins)
add_loader(load_plugins)
