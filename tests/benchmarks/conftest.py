"""pytest-benchmark timings of the key kernels and one training step (marked ``benchmark``: off by default).

    pytest tests/benchmarks -m benchmark --benchmark-enable --benchmark-json out.json
    pytest tests/benchmarks -m benchmark --benchmark-enable --benchmark-autosave            # store a run
    pytest tests/benchmarks -m benchmark --benchmark-enable --benchmark-compare --benchmark-compare-fail=median:10%

Every test here gets the ``benchmark`` marker (so the default ``pytest -q`` deselects it); GPU shapes are also
marked ``gpu`` and skipped without CUDA. See docs/regressions.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.benchmark)
