"""The variant registries (attention, position, norm, activation) and the plug-in loader.

The plug-in API is this package: ``from ablate.registry import POSITION`` (see docs/adding-a-variant.md)."""

from ablate.registry.keys import (ACTIVATION, ATTENTION, BUILTIN_ORIGIN, NORM, POSITION, REGISTRIES,  # noqa: F401
                                  DuplicateKeyError, Entry, Registry, always_available, build, current_origin,
                                  registering_from)
from ablate.registry import plugins  # noqa: F401,E402  (adds the loaders build() runs: the built-ins, then the plugins)
