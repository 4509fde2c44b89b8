"""ablate: a benchmarking and ablation harness for Transformer components."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the folders variants/, suites/ and cli.py sit beside this package and are installed as
# ablate.variants, ablate.suites and ablate.cli. Run from the checkout without an install of it in this interpreter
# (e.g. `python -m pytest` where `pip` belongs to another Python), let those names resolve to the folders anyway.
_root = _Path(__file__).resolve().parent.parent
if (_root / "variants" / "__init__.py").is_file() and (_root / "pyproject.toml").is_file():
    __path__.append(str(_root))  # type: ignore[name-defined]  # noqa: F821
del _Path, _root
