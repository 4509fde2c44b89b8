"""String-keyed registries, one per variant axis (attention, position, norm, activation).

In the spirit of transformers' ``AttentionInterface`` / ``ROPE_INIT_FUNCTIONS`` and lm-eval's ``Registry``:
short keys, one call signature per axis, duplicate keys rejected, unknown keys answered with the valid ones.

    ATTENTION = Registry("attention")

    @ATTENTION.register("naive", description="...", paper="...", causal=True, bias=True)
    def naive(q, k, v, *, causal, bias=None, window=None, scale=None): ...

    ATTENTION["naive"].fn(q, k, v, causal=True)
    ATTENTION.get("nope")  # UnknownKeyError: unknown attention 'nope'; valid: naive, sdpa, ...

The four registries are built explicitly, in one place: :func:`build` copies the built-in tables that
``ablate.variants`` declares (:data:`ablate.variants.BUILTIN_TABLES`: each variants module collects its keys in a
table of its own, so importing it changes no global state), then loads every plugin -- installed distributions'
``ablate.variants`` entry points and the modules / ``.py`` files named by ``--plugin`` or ``$ABLATE_PLUGINS``.
The first read of a registry (``get``, ``keys``, ``in``, iteration...) runs :func:`build`, so no caller has to
remember to; :func:`build` again (what ``--plugin`` does) loads plugins requested since.
Variants defined outside the package register the same way (:mod:`ablate.registry.plugins`, docs/adding-a-variant.md), with
``@POSITION.register(...)`` etc. on these registries.
Every :class:`Entry` records its ``origin``: ``"ablate"`` for the built-ins, ``"entry point <dist>:<name>"`` or
``"plugin <module or file>"`` for what a plugin registered (the loader sets it around each import with
:func:`registering_from`), ``"module <name>"`` for a registration made by other code outside any loader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from ablate.errors import AblateError, UnknownKeyError

BUILTIN_ORIGIN = "ablate"
PLUGINS_ENV = "ABLATE_PLUGINS"  # the plugins of this process and its children (ablate.registry.plugins)
_ORIGINS: list[str] = []  # stack of the loaders' origins; empty outside a plugin import


@contextlib.contextmanager
def registering_from(origin: str) -> Iterator[str]:
    """Registrations made inside this block record ``origin`` (what :mod:`ablate.registry.plugins` sets around each import)."""
    _ORIGINS.append(origin)
    try:
        yield origin
    finally:
        _ORIGINS.pop()


def current_origin(fn: Any = None) -> str:
    """The origin a registration made now records: the innermost :func:`registering_from`; outside any, ``"ablate"``
    for code of the ``ablate`` package and ``"module <name>"`` for ``fn`` defined elsewhere (a script, a notebook)."""
    if _ORIGINS:
        return _ORIGINS[-1]
    module = getattr(fn, "__module__", None) or BUILTIN_ORIGIN
    if module == "ablate" or module.startswith("ablate."):
        return BUILTIN_ORIGIN
    return f"module {module}"


class DuplicateKeyError(AblateError, ValueError):
    """A key registered twice (e.g. a plugin reusing a built-in key); the message names both origins."""

Availability = tuple[bool, str]


def always_available(device: str | None = None) -> Availability:
    return True, ""


@dataclass(frozen=True)
class Entry:
    """One registered variant: the callable plus what a user needs to know about it."""

    key: str
    fn: Callable[..., Any]
    description: str
    paper: str
    availability: Callable[..., Availability] = always_available
    supports: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""  # "ablate", "entry point <dist>:<name>", "plugin <module or file>"; "" = set by Registry.add

    def available(self, device: str | None = None) -> Availability:
        """(ok, reason) for running this variant here; ``device`` None means this machine's best device."""
        try:
            return self.availability(device)
        except Exception as exc:  # an availability probe must never take the caller down
            return False, f"availability check failed: {type(exc).__name__}: {exc}"

    def supports_(self, feature: str) -> bool:
        return bool(self.supports.get(feature, False))

    def as_dict(self, device: str | None = None) -> dict[str, Any]:
        ok, reason = self.available(device)
        return {"key": self.key, "available": ok, "reason": reason, "description": self.description,
                "paper": self.paper, "supports": {k: _jsonable(v) for k, v in self.supports.items()}}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple, set, frozenset)):
        return [str(x) for x in v]
    return v


class Registry:
    """An ordered map from short string keys to :class:`Entry`; duplicates are rejected.

    ``Registry(axis)`` is a plain table (what a variants module fills with its built-in keys); the four registries
    below are made with ``built=True``: reading one first runs :func:`build`."""

    def __init__(self, axis: str, *, built: bool = False):
        self.axis = axis
        self._entries: dict[str, Entry] = {}
        self._built = built

    def _ready(self) -> dict[str, Entry]:
        if self._built and (not _STATE["tried"] or os.environ.get(PLUGINS_ENV, "") != _STATE["env"]):
            build()
        return self._entries

    def register(self, key: str, *, description: str, paper: str = "",
                 available: Callable[..., Availability] = always_available, **supports: Any):
        """Decorator registering ``fn`` under ``key``; ``supports`` records capabilities (causal=True, ...)."""
        if not key or not key.isascii() or not key.replace("_", "").isalnum() or key != key.lower():
            raise ValueError(f"{self.axis} key must be short lower_snake_case, got {key!r}")

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(Entry(key, fn, description, paper, available, dict(supports), current_origin(fn)))
            return fn

        return deco

    def add(self, entry: Entry) -> Entry:
        """Register ``entry`` (its ``origin`` filled in when empty); a key already present is a
        :class:`DuplicateKeyError` naming both origins."""
        if not entry.origin:
            entry = dataclasses.replace(entry, origin=current_origin(entry.fn))
        old = self._entries.get(entry.key)
        if old is not None:
            raise DuplicateKeyError(f"duplicate {self.axis} key {entry.key!r}: registered by {old.origin} and again "
                                    f"by {entry.origin}; a variant needs a key of its own")
        self._entries[entry.key] = entry
        return entry

    def _forget(self, origin: str) -> list[str]:
        """Drop the keys ``origin`` registered (a plugin that failed half-way); returns them."""
        gone = [k for k, e in self._entries.items() if e.origin == origin]
        for k in gone:
            del self._entries[k]
        return gone

    def get(self, key: str) -> Entry:
        try:
            return self._ready()[key]
        except KeyError:
            raise UnknownKeyError(self.axis, key, self.keys()) from None

    __getitem__ = get

    def keys(self) -> list[str]:
        return list(self._ready())

    def entries(self) -> list[Entry]:
        return list(self._ready().values())

    def available_keys(self, device: str | None = None) -> list[str]:
        return [e.key for e in self._ready().values() if e.available(device)[0]]

    def __contains__(self, key: object) -> bool:
        return key in self._ready()

    def __iter__(self) -> Iterator[str]:
        return iter(self._ready())

    def __len__(self) -> int:
        return len(self._ready())

    def __repr__(self) -> str:
        return f"Registry({self.axis!r}, keys={self.keys()})"


ATTENTION = Registry("attention", built=True)
POSITION = Registry("position", built=True)
NORM = Registry("norm", built=True)
ACTIVATION = Registry("activation", built=True)

REGISTRIES: dict[str, Registry] = {r.axis: r for r in (ATTENTION, POSITION, NORM, ACTIVATION)}

# tried: build() has run (a read builds only until then); building: inside it
# env: $ABLATE_PLUGINS as the last build() saw it (a read after it changes loads the plugins it adds)
_STATE: dict[str, Any] = {"tried": False, "building": False, "env": ""}
# What build() runs, in order: installed by ablate.registry.plugins (the built-in tables of ablate.variants, then the
# plugins). The ablate.registry package imports that module, so they are in place before any registry is read; this
# module imports neither (the registries sit below the variants and the loader that fill them).
_LOADERS: list[Callable[[], Any]] = []


def add_loader(load: Callable[[], Any]) -> None:
    """Have :func:`build` run ``load`` (after the loaders added before it); adding one twice adds it once."""
    if load not in _LOADERS:
        _LOADERS.append(load)


def build() -> dict[str, Registry]:
    """Build the registries and return them by axis: the built-in tables of :data:`ablate.variants.BUILTIN_TABLES`
    first (once), then the plugins (:func:`ablate.registry.plugins.load_plugins`: ``ablate.variants`` entry points of
    installed distributions, then the modules / files of ``--plugin`` and ``$ABLATE_PLUGINS``, each once) -- the
    loaders :mod:`ablate.registry.plugins` adds (:func:`add_loader`). Reads made while it runs (a plugin subclassing
    a built-in) see what is in so far. A plugin that cannot be imported raises
    :class:`ablate.registry.plugins.PluginError` (one line) here and at every later call (what ``--plugin`` and
    ``ablate list`` make); the registries keep nothing it registered."""
    if _STATE["building"]:
        return REGISTRIES
    _STATE["building"] = _STATE["tried"] = True
    _STATE["env"] = os.environ.get(PLUGINS_ENV, "")
    try:
        for load in list(_LOADERS):
            load()
    finally:
        _STATE["building"] = False
    return REGISTRIES


load_all = build  # the name earlier releases (and plugins' docs) used
