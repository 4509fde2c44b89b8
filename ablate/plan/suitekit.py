"""What every suite package shares: lazy loading of its two sides, and names set on the package reaching its modules.

A suite is a package of small modules in two sides: the *measurement* side (torch; imported together) and the
*report* side (pandas/matplotlib, no torch), so ``ablate report`` / ``ablate compare`` never import torch. The
package re-exports every public name of both; :func:`lazy_package` makes a name load only its side on first use, and
makes setting a name on the package (``monkeypatch.setattr(latency, "bench", fake)``) set it in each loaded module
holding the same object, so the code there sees the change, as when the suite was one module.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Mapping, Sequence

__all__ = ["lazy_package"]

_UNSET = object()


class _SuitePackage(types.ModuleType):
    _sides: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        old = getattr(self, name, _UNSET)
        super().__setattr__(name, value)
        if old is _UNSET or isinstance(old, types.ModuleType):
            return
        for m in self._sides:
            module = sys.modules.get(f"{self.__name__}.{m}")
            if module is not None and module.__dict__.get(name, _UNSET) is old:
                setattr(module, name, value)


def lazy_package(name: str, measure: Sequence[str], report: Sequence[str],
                 exports: Mapping[str, Sequence[str]]) -> None:
    """Make package ``name`` resolve ``exports`` (module -> names it gives the package) on first use, loading the
    whole side (``measure`` or ``report`` modules) the name's module belongs to."""
    package = sys.modules[name]
    home = {n: module for module, names in exports.items() for n in names}
    measure, report = tuple(measure), tuple(report)

    def __getattr__(attr: str) -> Any:
        module = home.get(attr)
        if module is None:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        for m in measure if module in measure else report:
            importlib.import_module(f"{name}.{m}")
        value = getattr(sys.modules[f"{name}.{module}"], attr)
        package.__dict__[attr] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package.__dict__) | set(home))

    package.__dict__.update(__getattr__=__getattr__, __dir__=__dir__, _HOME=home)
    package.__class__ = type("SuitePackage", (_SuitePackage,), {"_sides": measure + report})


def set_threads(device: str, cpu_threads: int, *, tf32: bool | None = None) -> int:
    """Apply a suite's torch settings for the run and return the thread count to restore afterwards: on CPU
    ``cpu_threads`` torch threads (0: leave torch's default); on CUDA TF32 matmuls on or off when ``tf32`` says
    (the suites that train allow them, the latency suite keeps fp32 fp32)."""
    import torch  # lazy: the report side imports this module

    if str(device).startswith("cuda") and tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    before = torch.get_num_threads()
    if str(device) == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    return before


def training_setup(opts: Any, resolve: Any) -> tuple[str, str, Any, Any]:
    """The preamble every suite that trains shares: ``(device, preset, cfg, corpus)`` -- the device resolved, the
    preset defaulted (:func:`ablate.plan.runner.default_preset`), the config resolved with ``--set`` (``resolve(preset,
    overrides)``), bf16 autocast asked on CPU refused, and the corpus loaded (``cfg`` updated with its data)."""
    from ablate.io.data import corpus_for
    from ablate.plan.runner import default_preset, resolve_device
    from ablate.core.train import refuse_cpu_amp

    device = resolve_device(opts.device)
    preset = opts.preset or default_preset(opts.suite, device)
    cfg = resolve(preset, opts.overrides)
    refuse_cpu_amp(cfg.train, opts.overrides, device)
    cfg, corpus = corpus_for(cfg, opts.data)
    return device, preset, cfg, corpus
