"""Swappable Transformer components. Each module collects its built-in keys in a table of its own (``BUILTIN``);
importing it changes no global state. :func:`ablate.registry.keys.build` copies :data:`BUILTIN_TABLES` into the
registries (attention, position, norm, activation order), then loads the plugins."""

from ablate.variants import activations, attention, norms, positions
from ablate.variants import xpos  # noqa: F401  (registers into positions.BUILTIN)
from ablate.variants.attention.contract import BUILTIN as _ATTENTION

BUILTIN_TABLES = (_ATTENTION, positions.BUILTIN, norms.BUILTIN, activations.BUILTIN)

__all__ = ["BUILTIN_TABLES", "activations", "attention", "norms", "positions", "xpos"]
