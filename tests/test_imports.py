"""Imports sit at module level (issue #13), except where importing later is the point:

* an optional package (FlashAttention, xformers, triton, the trackers, ``datasets``...) or a private /
  version-dependent torch API, imported where it is used so that a missing one is a status row, not an ImportError;
* a heavy package (torch, pandas, matplotlib, seaborn, rich) inside a module that must import without it -- the
  command line, the report side -- and the test below checks that it really does;
* ``ablate`` modules imported by the command line per command, or to break an import cycle (not checked here).

The standard library is always imported at module level.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("ablate/**/*.py"), *ROOT.glob("suites/**/*.py"), *ROOT.glob("variants/**/*.py"),
                  ROOT / "cli.py"])

OPTIONAL = {"flash_attn", "xformers", "triton", "submitit", "datasets", "huggingface_hub", "tokenizers", "wandb",
            "mlflow", "tensorboard", "pyarrow", "pynvml", "transformers"}
# torch APIs that are private, version-dependent or pull in optional machinery (dynamo, tensorboard, NCCL)
TORCH_OPTIONAL = {"torch.nn.attention.flex_attention", "torch.nn.attention.bias", "torch.utils._python_dispatch",
                  "torch._dynamo.config", "torch._functorch.config", "torch.utils.benchmark",
                  "torch.utils.tensorboard", "torch.distributed", "torch.nn.parallel"}
HEAVY = {"torch", "pandas", "matplotlib", "seaborn", "rich"}


def _function_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield node.lineno, alias.name
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    yield node.lineno, node.module or ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("suites", "variants"):
        parts = ["ablate", *parts]
    elif parts == ["cli"]:
        parts = ["ablate", "cli"]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _lazy_heavy() -> dict[str, set[str]]:
    """module -> the heavy modules it imports inside functions (outside the optional torch APIs)."""
    out: dict[str, set[str]] = {}
    for path in SOURCES:
        for _line, mod in _function_imports(path):
            if mod.split(".")[0] in HEAVY and mod not in TORCH_OPTIONAL:
                out.setdefault(_module_name(path), set()).add(mod)
    return out


def test_standard_library_is_imported_at_module_level():
    found = [f"{p.relative_to(ROOT)}:{line}: import {mod}" for p in SOURCES for line, mod in _function_imports(p)
             if mod.split(".")[0] in sys.stdlib_module_names]
    assert not found, "move to the top of the module:\n" + "\n".join(found)


def test_third_party_imports_in_functions_are_optional_or_keep_a_module_light():
    allowed = OPTIONAL | HEAVY
    found = [f"{p.relative_to(ROOT)}:{line}: import {mod}" for p in SOURCES for line, mod in _function_imports(p)
             if mod.split(".")[0] not in sys.stdlib_module_names and mod.split(".")[0] != "ablate"
             and mod.split(".")[0] not in allowed and mod not in TORCH_OPTIONAL]
    assert not found, "import at module level, or add the package to OPTIONAL with a reason:\n" + "\n".join(found)


LAZY = sorted(_lazy_heavy().items())


@pytest.mark.parametrize("module,packages", LAZY, ids=[m for m, _ in LAZY])
def test_a_heavy_import_in_a_function_keeps_its_module_light(module, packages):
    """Importing the module leaves what it imports lazily (e.g. ``torch``, ``matplotlib.pyplot``) unloaded --
    otherwise the laziness buys nothing and the import belongs at the top."""
    code = (f"import sys, {module}; "
            f"print(' '.join(p for p in {sorted(packages)!r} if p in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()} anyway"
