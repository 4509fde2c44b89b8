"""The README's Python example runs and prints the numbers the committed report shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_pandas_example_prints_the_report_numbers():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "to_frame" in b)
    out = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+)(?:\.0)?\s+([\d.]+)$", out.stdout, flags=re.M)}
    table = (ROOT / "reports" / "extrapolation" / "cpu-tiny" / "extrapolation_ppl.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| variant"))
    lens = [int(c.split()[0]) for c in header.split("|")[3:-2]]
    row = next(line for line in table.splitlines() if line.startswith("| alibi "))
    cells = [c.strip().split(" ±")[0] for c in row.split("|")[3:-2]]
    assert printed == {n: cells[i] for i, n in enumerate(lens)}, (out.stdout, row)
