#!/usr/bin/env bash
# GPU evidence in one command (docs/gpu.md): runs scripts/gpu_evidence.py from the repository root with the
# checkout's venv when there is one, passing every argument on.
#
#   bash scripts/gpu_evidence.sh --dry-run          # the plan, on any machine
#   bash scripts/gpu_evidence.sh --budget 10m       # on the GPU
#
# PYTHON=... picks the interpreter.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" scripts/gpu_evidence.py "$@"
