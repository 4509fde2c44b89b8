#!/usr/bin/env bash
# Regenerate the committed reports from the committed results, from JSONL alone (nothing is re-run):
#
#   results/<suite>/<name>.jsonl  ->  reports/<suite>/<name>/     (latency, extrapolation, recall)
#   results/training/*.jsonl      ->  reports/training/           (the training report makes <device>-<preset>/)
#
#   bash scripts/regenerate_reports.sh                               # every results/<suite>/<name>.jsonl
#   bash scripts/regenerate_reports.sh results/latency/cpu.jsonl     # just the folders these files map to
#
# Each output folder is deleted first, so no stale table survives, then made by `ablate report INPUTS --out DIR`
# (which also writes DIR/index.html, the folder as one self-contained page); reports/index.html, the page linking
# every report page, is rewritten at the end (`python -m ablate.reporting.report index reports`).
# The same results give byte-identical tables, so `git diff reports/` afterwards shows only real changes;
# tests/reporting/test_committed_reports.py checks the committed Markdown/LaTeX tables against a fresh report. The mapping
# lives in ablate.reporting.report.report_units; results/baselines/ (nightly CI baselines) is not a report and is skipped.
# ABLATE=... picks the command (default: `ablate`, else `python -m ablate.cli`); PYTHON=... the interpreter.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python}"
if [ -n "${ABLATE:-}" ]; then
    read -r -a CMD <<< "$ABLATE"
elif command -v ablate >/dev/null 2>&1; then
    CMD=(ablate)
else
    CMD=("$PYTHON" -m ablate.cli)
fi

units="$("$PYTHON" -m ablate.reporting.report units "$@")"
n=0
while IFS=$'\t' read -r -a unit; do
    [ "${#unit[@]}" -ge 2 ] || continue
    out="${unit[0]}"
    inputs=("${unit[@]:1}")
    rm -rf "$out"
    echo "== ${CMD[*]} report ${inputs[*]} --out $out"
    "${CMD[@]}" report "${inputs[@]}" --out "$out" >/dev/null
    n=$((n + 1))
done <<< "$units"
"$PYTHON" -m ablate.reporting.report index reports >/dev/null
echo "regenerated $n report folder(s) and reports/index.html"
