"""Nothing outside ``variants/`` branches on a variant key's name: facts about a key live in its registration.

A comparison (``==``, ``!=``, ``in``, ``not in``) or a ``match`` case against a string literal that is a registered
variant key fails this test when it sits in ``ablate/``, ``suites/`` or ``cli.py``. Sweeps and presets may *name*
keys (a tuple of keys to run is data, not a branch); published claims name the variants they are about through
data too (``ablate/analysis/claims.py`` and ``ablate/analysis/claims_scaling.py`` key their tables by position name, which is what
the claim is about).
"""

from __future__ import annotations

import ast
from pathlib import Path

from ablate.registry.keys import load_all

ROOT = Path(__file__).resolve().parent.parent
SCANNED = [*sorted((ROOT / "ablate").rglob("*.py")), *sorted((ROOT / "suites").rglob("*.py")), ROOT / "cli.py"]
# Facts about papers, not code paths: the claims module compares published variants by name.
ALLOWED = {ROOT / "ablate" / "analysis" / "claims.py", ROOT / "ablate" / "analysis" / "claims_scaling.py"}


# "none" is a position key and also the spelling of None on the command line and of "no bias" in latency shapes.
WORDS = {"none"}


def _keys() -> set[str]:
    regs = load_all()
    return {k for r in regs.values() for k in r.keys()} - WORDS


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _literals(e)]
    return []


def branches_on_keys(path: Path, keys: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        lits: list[str] = []
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            for operand in [node.left, *node.comparators]:
                lits += _literals(operand)
        elif isinstance(node, ast.MatchValue):
            lits += _literals(node.value)
        for lit in lits:
            if lit in keys:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: compares against the variant key {lit!r}")
    return found


def test_no_code_outside_variants_compares_against_a_key_literal():
    keys = _keys()
    problems = [p for f in SCANNED if f not in ALLOWED for p in branches_on_keys(f, keys)]
    assert not problems, "ask the variant's registration instead:\n" + "\n".join(problems)


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(cfg):\n    return cfg.attention == "linear" or cfg.position in ("alibi", "x")\n')
    hits = branches_on_keys_at(bad, _keys())
    assert len(hits) == 2


def branches_on_keys_at(path: Path, keys: set[str]) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return branches_on_keys(path, keys)
    finally:
        ROOT = saved
