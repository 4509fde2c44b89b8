"""Swappable Transformer components; importing this package fills the registries in :mod:`ablate.registry`."""

from ablate.variants import activations, attention, norms, positions  # noqa: F401  (register on import)
