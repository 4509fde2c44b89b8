"""Build hook only: every piece of metadata lives in pyproject.toml.

A wheel built from a git checkout carries ``ablate/_build_stamp.json`` (``{"git_commit", "git_dirty"}``, dirty with
the rows' meaning: changes outside results/, reports/, runs/), so rows measured with the installed package still
record the commit they came from (``env.git_source`` = "stamp"; see ``ablate.store.env.provenance``). An sdist made from a
git checkout ships the stamp too, so a wheel built later from that sdist (no ``.git`` then) keeps it.

Nothing is stamped, and nothing fails, where no commit is known (a copy of the tree without ``.git``, an sdist from
such a copy), and nothing at all happens for an editable install (``pip install -e .``: the package runs from the
checkout, where git answers). The stamp is never written into the source tree of a checkout (it is git-ignored
anyway).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
STAMP = Path("ablate") / "_build_stamp.json"


def _stamp_text() -> str | None:
    """The stamp for this source tree: from git when it is a checkout, else the stamp an sdist shipped, else None."""
    try:
        spec = importlib.util.spec_from_file_location("_ablate_env_for_build", HERE / "ablate" / "store" / "env.py")
        env = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(env)
        root = env.checkout_root(HERE)
        if root is not None:
            info = env.git_info(root)
            if info["git_commit"]:
                return env.stamp_text(info)
            return None  # a checkout without a commit: a stale stamp must not speak for it
        shipped = env.read_stamp(HERE / STAMP)
        return env.stamp_text(shipped) if shipped else None
    except Exception as exc:  # a stamp is a nicety: never fail the build over it
        print(f"ablate setup.py: no build stamp ({type(exc).__name__}: {exc})")
        return None


def checkout_names() -> dict[str, str]:
    """``ablate.CHECKOUT_NAMES`` (read, not imported): the top-level folders and files that are ``ablate.*``."""
    tree = ast.parse((HERE / "ablate" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CHECKOUT_NAMES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("ablate/__init__.py defines no CHECKOUT_NAMES")


CHECKOUT_MODULES = {name: rel for name, rel in checkout_names().items() if rel.endswith(".py")}  # cli.py


class build_py_stamped(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode or self.dry_run:
            return  # a checkout: ablate/__init__.py maps CHECKOUT_NAMES to the files themselves
        for name, rel in CHECKOUT_MODULES.items():  # ablate.cli <- cli.py (the packages come from package_dir)
            target = Path(self.build_lib, *name.split(".")).with_suffix(".py")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, target)
        text = _stamp_text()
        target = Path(self.build_lib) / STAMP
        if text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        elif target.exists():
            target.unlink()  # left in build/ by an earlier build: it would describe another tree

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [os.path.join(self.build_lib, *name.split(".")) + ".py" for name in CHECKOUT_MODULES]
        stamp = os.path.join(self.build_lib, str(STAMP))
        if not self.editable_mode and os.path.exists(stamp) and stamp not in outputs:
            outputs.append(stamp)
        return outputs


class sdist_stamped(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / STAMP
        if target.exists():
            target.unlink()  # a hard link to the source tree's file, if any: replace it, never write through it
        text = _stamp_text()
        if text and target.parent.is_dir():
            target.write_text(text, encoding="utf-8")


def namespace_packages() -> dict[str, str]:
    """``ablate`` and its sub-packages, plus every package under the top-level folders variants/ and suites/, mapped
    into the ``ablate`` namespace: ``{"ablate.variants.attention": "variants/attention", ...}`` (paths relative to this file)."""
    pkgs = {"ablate": "ablate"}  # with the folders of ablate.CHECKOUT_NAMES (cli.py: build_py_stamped copies it)
    for init in sorted((HERE / "ablate").glob("*/__init__.py")):  # ablate's own rooms: ablate.core, ablate.store, ...
        rel = init.parent.relative_to(HERE)
        pkgs["ablate." + rel.name] = rel.as_posix()
    for folder in [rel for rel in checkout_names().values() if not rel.endswith(".py")]:  # variants, suites
        for init in sorted((HERE / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(HERE)
            if "__pycache__" not in rel.parts:
                pkgs["ablate." + ".".join(rel.parts)] = rel.as_posix()
    return pkgs


PACKAGES = namespace_packages()
setup(packages=list(PACKAGES), package_dir=PACKAGES,
      cmdclass={"build_py": build_py_stamped, "sdist": sdist_stamped})
