"""ablate: a benchmarking and ablation harness for Transformer components."""

import importlib.util as _importlib_util
import sys as _sys
from importlib.abc import MetaPathFinder as _MetaPathFinder
from pathlib import Path as _Path

__version__ = "0.1.0"

# The top-level folders variants/ and suites/ and the file cli.py of a checkout are ablate.variants, ablate.suites and
# ablate.cli -- and nothing else of the checkout joins the namespace (tests/, scripts/, docs/ stay out). One table
# says so: an install copies them there (setup.py reads CHECKOUT_NAMES), and in a checkout (an editable install, or
# `python -m pytest` from the folder with no install) the finder below maps exactly these names to the files.
CHECKOUT_NAMES = {"ablate.variants": "variants", "ablate.suites": "suites", "ablate.cli": "cli.py"}


class _CheckoutFinder(_MetaPathFinder):
    """Resolves :data:`CHECKOUT_NAMES` (only those) to the top-level files of the checkout at ``root``."""

    def __init__(self, root: _Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        rel = CHECKOUT_NAMES.get(fullname)
        if rel is None:
            return None
        where = self.root / rel
        if where.is_dir():
            return _importlib_util.spec_from_file_location(fullname, where / "__init__.py",
                                                           submodule_search_locations=[str(where)])
        return _importlib_util.spec_from_file_location(fullname, where)


_root = _Path(__file__).resolve().parent.parent
if (_root / "variants" / "__init__.py").is_file() and (_root / "pyproject.toml").is_file():  # else: installed copy
    if not any(type(f).__name__ == "_CheckoutFinder" for f in _sys.meta_path):
        _sys.meta_path.insert(0, _CheckoutFinder(_root))
del _root
