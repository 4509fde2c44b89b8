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

OPTIONAL = {"flash_attn", "xformers", "triton", "submitit", "datasets", "huggingface_hub", "tokenizers", "wandb", "yaml",
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


# --- the import graph between ablate modules (issue #20, rooms) -------------------------------------------------
# Every import counts: at module level, under ``if TYPE_CHECKING:`` and inside functions. ``suites/``, ``variants/``
# and ``cli.py`` are ``ablate.suites``, ``ablate.variants`` and ``ablate.cli`` (see _module_name).

MODULES = {_module_name(p): p for p in SOURCES if not p.is_symlink()}
MAX_LINES = 500


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]  # a module's package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ablate_imports(module: str):
    """(line, target module, imported name or None) for every import of an ablate module anywhere in ``module``.
    ``from pkg import mod`` targets ``pkg.mod`` when that is a module; ``from mod import name`` targets ``mod``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ablate":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "ablate":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, (sub if sub in MODULES else target), (None if sub in MODULES else alias.name)


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for _line, target, _name in _ablate_imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


# Cycles left on purpose, each as its sorted set of modules, with the reason. Remove an entry once it is broken.
CYCLES_ALLOWED: dict[tuple[str, ...], str] = {
}


def test_no_import_cycle_between_ablate_modules():
    graph = _import_graph()
    found = []
    for component in _cycles(graph):
        if tuple(component) in CYCLES_ALLOWED:
            continue
        inside = set(component)
        arrows = [f"  {m} -> {', '.join(sorted(graph[m] & inside))}" for m in component]
        found.append("\n".join(arrows))
    assert not found, ("import cycles (module level, TYPE_CHECKING or in a function); move what both sides need to "
                       "the module below:\n" + "\n\n".join(found))


# Private (single-underscore) names imported across modules that are left on purpose: packages whose files belong to
# work in progress elsewhere (the lead removes an entry when that work lands). Both modules under the prefix.
PRIVATE_ALLOWED_WITHIN: dict[str, str] = {
}
# ... and single imports, (importing module, defining module, name): reason.
PRIVATE_ALLOWED: dict[tuple[str, str, str], str] = {
}


def _private_imports() -> list[tuple[str, str, str, int]]:
    out = []
    for module in MODULES:
        for line, target, name in _ablate_imports(module):
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                out.append((module, target, name, line))
    return out


def test_no_module_imports_another_modules_private_names():
    found = []
    for module, target, name, line in _private_imports():
        if (module, target, name) in PRIVATE_ALLOWED:
            continue
        if any(module.startswith(p + ".") or module == p for p in PRIVATE_ALLOWED_WITHIN
               if target.startswith(p + ".") or target == p):
            continue
        found.append(f"{MODULES[module].relative_to(ROOT)}:{line}: from {target} import {name}")
    assert not found, ("make the name public (rename it where it is defined and wherever it is used) or move the "
                       "helper to its user:\n" + "\n".join(found))


# Source files over MAX_LINES left on purpose (path relative to the checkout: reason).
LONG_FILES_ALLOWED: dict[str, str] = {}


def test_no_source_file_over_500_lines():
    found = []
    for module, path in sorted(MODULES.items()):
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and rel not in LONG_FILES_ALLOWED:
            found.append(f"{rel}: {lines} lines")
    assert not found, f"split along its seams into modules whose names say what they hold (<= {MAX_LINES}):\n" + \
        "\n".join(found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The checks above read TYPE_CHECKING and function-level imports too, and resolve relative ones."""
    seen = {(m, t) for m in MODULES for _l, t, _n in _ablate_imports(m)}
    assert ("ablate.suites.training.tables", "ablate.suites.training.aggregate") in seen  # relative import
    assert ("ablate.launchers.common", "ablate.plan.runner") in seen  # under TYPE_CHECKING
    assert ("ablate.registry.plugins", "ablate.variants") in seen  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_scripts_use_only_public_names():
    """The scripts under scripts/ are users of the package: they import its public names only."""
    found = []
    for path in sorted(ROOT.glob("scripts/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ablate"):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}"
                          for a in node.names if a.name.startswith("_")]
    assert not found, "make the name public where it is defined:\n" + "\n".join(found)
