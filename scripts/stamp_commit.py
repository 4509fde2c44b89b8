#!/usr/bin/env python3
"""Print this checkout's provenance as shell assignments, for a machine that gets a copy of the tree without .git:

    $ python scripts/stamp_commit.py
    ABLATE_GIT_COMMIT=4efa755... ABLATE_GIT_DIRTY=false

    env $(python scripts/stamp_commit.py) ablate run ...          # locally, or in the remote command line
    ssh gpu-host "cd copy && env $(python scripts/stamp_commit.py) ablate run ..."

The rows then record ``env.git_commit``/``env.git_dirty`` from these variables, with ``env.git_source`` = "env"
(see ablate.store.env.provenance). Dirty has the rows' meaning: uncommitted changes outside results/, reports/, runs/.
Exits 1 (printing nothing on stdout) when the commit is unknown. Needs only the standard library and git: it loads
ablate/store/env.py by path, without importing the package.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env_module():
    spec = importlib.util.spec_from_file_location("_ablate_env_stamp", ROOT / "ablate" / "store" / "env.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    if argv:
        sys.stderr.write(__doc__ or "")
        return 2
    values = _env_module().provenance_env(ROOT)
    if not values:
        sys.stderr.write(f"stamp_commit: no commit known for {ROOT} (not a git checkout, and neither "
                         "$ABLATE_GIT_COMMIT nor a build stamp)\n")
        return 1
    sys.stdout.write(" ".join(f"{k}={shlex.quote(v)}" for k, v in values.items()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
