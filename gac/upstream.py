"""The one door to terratorch: TerraMind's and Prithvi's builders and constants, without `import terratorch`.

terratorch's package `__init__` imports every dataset, datamodule, task and
backbone it has (9-10 s on a 2-core machine, paid by every stage process);
GAC needs TerraMind (stages 1 and 3) and Prithvi-EO-2.0 (stage 2) only. So
the modules that define them are imported with the `__init__` of every
terratorch package above them deferred: those packages are created from their
real specs, so their submodules import as usual, and the few names those
modules import from a deferred package are handed over from the submodule
that defines them (`TERRATORCH_*_REGISTRY` from `terratorch.registry.registry`,
the band enums from `terratorch.datasets.utils`). The same is done for three
diffusers packages whose `__init__` only re-exports every autoencoder,
transformer and UNet diffusers has (the tokenizer needs two UNet blocks, and
diffusers' pipeline base class one autoencoder).

Models are built by `terratorch.registry`'s own source registry, the one the
public `FULL_MODEL_REGISTRY` / `BACKBONE_REGISTRY` consult first for these
names, so a build calls the very function a plain terratorch build calls.

Nothing is faked: the first time anything else touches a deferred package
(`import terratorch; terratorch.tasks`, `from terratorch.registry import
BACKBONE_REGISTRY`), that library is imported plainly, its deferred
`__init__`s running in their own order into the same module objects, and it
is then whole, registries and all, as in a process that imported it first.
TerraMind's pre-training mean and std, all stage 2 needs of TerraMind, are
read from its registry module's source without importing it.

When upstream's layout no longer fits (a module moved or renamed, a name the
fast import cannot hand over), GAC logs one line and imports terratorch the
plain way instead: slower, same models. `GAC_PLAIN_TERRATORCH=1` forces that
(`bench/bench_startup.py` compares the two).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from types import ModuleType
from typing import Any, Callable

log = logging.getLogger(__name__)

PLAIN_SWITCH = "GAC_PLAIN_TERRATORCH"
_TM = "terratorch.models.backbones.terramind"
TERRAMIND_MODULES = {
    "register": f"{_TM}.model.terramind_register",
    "modality_info": f"{_TM}.model.modality_info",
    "generate": f"{_TM}.model.generate",
    "scheduling": f"{_TM}.tokenizer.scheduling",
}
PRITHVI_MODULES = {"vit": "terratorch.models.backbones.prithvi_vit"}
# Names those modules import from a package whose `__init__` is deferred, and the submodule that defines them.
HANDED_OVER = {
    "terratorch.registry": (
        "terratorch.registry.registry",
        ("TERRATORCH_BACKBONE_REGISTRY", "TERRATORCH_FULL_MODEL_REGISTRY"),
    ),
    "terratorch.datasets": ("terratorch.datasets.utils", ("HLSBands", "OpticalBands", "SARBands")),
}
# Packages outside terratorch whose `__init__` is deferred too: pure re-exports of every model of their kind.
DEFERRED_ELSEWHERE = ("diffusers.models.autoencoders", "diffusers.models.transformers", "diffusers.models.unets")


@dataclasses.dataclass(frozen=True)
class TerraMind:
    """TerraMind's side of terratorch. `how`: 'fast' (package inits deferred) or 'plain' (`import terratorch`)."""

    how: str
    register: ModuleType  # the registry entries' module: builders, v1_pretraining_mean / _std
    MODALITY_INFO: dict
    init_full_input_modality: Callable
    DDIMScheduler: type
    build: Callable  # what FULL_MODEL_REGISTRY.build does for TerraMind's names


@dataclasses.dataclass(frozen=True)
class Prithvi:
    """Prithvi-EO-2.0's side of terratorch."""

    how: str
    vit: ModuleType  # prithvi_vit: its builders, pretrained_weights, PRETRAINED_BANDS, PRITHVI_V2_MEAN / _STD
    HLSBands: type
    build: Callable  # what BACKBONE_REGISTRY.build does for Prithvi's names


@functools.cache
def terramind() -> TerraMind:
    """TerraMind's builders and tables, imported once per process."""

    def parts(how, modules, registries):
        return TerraMind(
            how,
            modules["register"],
            modules["modality_info"].MODALITY_INFO,
            modules["generate"].init_full_input_modality,
            modules["scheduling"].DDIMScheduler,
            registries["full"].build,
        )

    return _load(TERRAMIND_MODULES, ("terratorch.registry",), DEFERRED_ELSEWHERE, parts)


@functools.cache
def prithvi() -> Prithvi:
    """Prithvi-EO-2.0's builders and tables, imported once per process."""

    def parts(how, modules, registries):
        return Prithvi(how, modules["vit"], registries["HLSBands"], registries["backbone"].build)

    return _load(PRITHVI_MODULES, ("terratorch.registry", "terratorch.datasets"), (), parts)


STATISTICS = ("v1_pretraining_mean", "v1_pretraining_std")


@functools.cache
def terramind_statistics() -> tuple[dict, dict]:
    """TerraMind v1's pre-training (mean, std) per modality key, from its registry module.

    Unless TerraMind is imported anyway, the two literal tables are read from
    that module's source: stage 2 needs these numbers, not TerraMind and the
    diffusers stack behind it. A source that no longer holds them as plain
    literals is imported instead.
    """
    name = TERRAMIND_MODULES["register"]
    if name not in sys.modules and not _plain_wanted():
        tables = _literal_tables(name, STATISTICS)
        if tables is not None:
            return tables
    register = terramind().register
    return tuple(getattr(register, table) for table in STATISTICS)


def _literal_tables(module: str, names: tuple[str, ...]) -> tuple | None:
    """`names`' values in `module`'s source, each assigned once at top level from a literal and only read elsewhere at
    top level (no other assignment, item assignment, method or call that could change it); None otherwise."""
    import ast

    top = importlib.util.find_spec(module.partition(".")[0])  # a top-level spec: nothing is imported
    if top is None or not top.submodule_search_locations:
        return None
    path = os.path.join(top.submodule_search_locations[0], *module.split(".")[1:]) + ".py"
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, Any] = {}
    for statement in tree.body:
        target = statement.targets[0] if isinstance(statement, ast.Assign) and len(statement.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in names and target.id not in found:
            try:
                found[target.id] = ast.literal_eval(statement.value)
            except ValueError:
                return None
        elif not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if _may_change(statement, names):
                return None  # changed at import time, maybe: only importing the module gives its values
    return tuple(found[n] for n in names) if set(found) == set(names) else None


def _may_change(statement, names: tuple[str, ...]) -> bool:
    import ast

    named = lambda node: isinstance(node, ast.Name) and node.id in names  # noqa: E731
    for node in ast.walk(statement):
        if named(node) and not isinstance(node.ctx, ast.Load):
            return True  # assigned again or deleted
        if isinstance(node, ast.Attribute) and named(node.value):
            return True  # a method (.update, .pop) or attribute
        if isinstance(node, ast.Subscript) and named(node.value) and not isinstance(node.ctx, ast.Load):
            return True  # an item assigned or deleted
        if isinstance(node, ast.Call) and any(named(arg) for arg in [*node.args, *(k.value for k in node.keywords)]):
            return True  # handed to a function
    return False


_fell_back: list[str] = []  # why the fast import was given up, once per process


def _plain_wanted() -> bool:
    return os.environ.get(PLAIN_SWITCH, "") not in ("", "0") or bool(_fell_back)


def _load(modules: dict[str, str], handed_over: tuple[str, ...], elsewhere: tuple[str, ...], parts):
    if not _plain_wanted():
        try:
            return parts("fast", *_fast(modules, handed_over, elsewhere))
        except (ImportError, AttributeError) as exc:
            _fell_back.append(f"{type(exc).__name__}: {exc}")
            log.warning(
                "terratorch: the fast import does not fit this version (%s); importing terratorch whole "
                "(slower start-up, same models)",
                _fell_back[0],
            )
    return parts("plain", *_plain(modules))


def _fast(modules: dict[str, str], handed_over: tuple[str, ...], elsewhere: tuple[str, ...]):
    """The modules, with terratorch's package `__init__`s (and `elsewhere`'s) deferred."""
    _Strict.on = True
    handed: list[str] = []
    try:
        for package in elsewhere:
            _defer(package, parents=False)
        for package in handed_over:
            source, names = HANDED_OVER[package]
            _defer(package)
            defined_in = importlib.import_module(source)
            if _DEFERRED.get(package) == "deferred":
                handed.append(package)
                sys.modules[package].__dict__.update({name: getattr(defined_in, name) for name in names})
        for name in modules.values():
            _defer(name.rpartition(".")[0])
        loaded = {key: importlib.import_module(name) for key, name in modules.items()}
        registry = importlib.import_module(HANDED_OVER["terratorch.registry"][0])
        found = {"full": registry.TERRATORCH_FULL_MODEL_REGISTRY, "backbone": registry.TERRATORCH_BACKBONE_REGISTRY}
        if "terratorch.datasets" in handed_over:
            found["HLSBands"] = importlib.import_module(HANDED_OVER["terratorch.datasets"][0]).HLSBands
        return loaded, found
    finally:
        _Strict.on = False
        for package in handed:  # from now on these names come from the package's own __init__
            if _DEFERRED.get(package) == "deferred":
                for name in HANDED_OVER[package][1]:
                    sys.modules[package].__dict__.pop(name, None)


def _plain(modules: dict[str, str]):
    """The modules after a plain `import terratorch` (every dataset, task and backbone, all registered)."""
    complete_deferred()
    import terratorch  # noqa: F401
    from terratorch.datasets import HLSBands
    from terratorch.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

    loaded = {key: importlib.import_module(name) for key, name in modules.items()}
    return loaded, {"full": FULL_MODEL_REGISTRY, "backbone": BACKBONE_REGISTRY, "HLSBands": HLSBands}


# ----------------------------------------------------------------------------- deferred package inits

# Package name -> 'deferred' (in sys.modules, __init__ not run) | 'resuming' (out of sys.modules until a plain
# import reaches it) | 'done'; parents before children.
_DEFERRED: dict[str, str] = {}


class _Strict:
    """While a fast import runs, a deferred package asked for a name it was not handed fails that import (so GAC
    falls back) instead of running the library's whole `__init__` in the middle of it."""

    on = False


def _defer(name: str, parents: bool = True) -> None:
    """Put package `name` in sys.modules as its real package object with its `__init__` not yet run; its parents
    likewise (`parents`), or imported as usual."""
    parent, _, child = name.rpartition(".")
    if parent and parent not in sys.modules:
        if parents:
            _defer(parent)
        else:
            importlib.import_module(parent)
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package", name=name)
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = functools.partial(_touched, module)  # PEP 562: called for a name the module lacks
    sys.modules[name] = module
    _DEFERRED[name] = "deferred"
    if parent:
        setattr(sys.modules[parent], child, module)


def _touched(module: ModuleType, attr: str) -> Any:
    package = module.__name__
    if attr.startswith("__") and attr != "__all__":  # introspection (copy, pickle, pytest) probes dunders
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")
    if _Strict.on:
        raise AttributeError(f"module {package!r} has no attribute {attr!r} (its __init__ is deferred)")
    complete_deferred(package.partition(".")[0])
    if _DEFERRED.get(package) == "resuming":  # touched while its library completes: a plain import would run it now
        importlib.import_module(package)
    return getattr(module, attr)


def complete_deferred(library: str | None = None) -> None:
    """Run the deferred `__init__`s (of `library`, e.g. 'terratorch'; default: all) by importing the library plainly.

    The deferred packages leave sys.modules, so the plain import reaches each
    one in its own order (a package `__init__` that imports another package
    runs that one's `__init__` there and then, as it always does) and
    `_Resume` runs its `__init__` in the same module object, which everything
    imported so far holds.
    """
    waiting = [p for p, state in _DEFERRED.items() if state == "deferred" and library in (None, p.partition(".")[0])]
    if not waiting:
        return
    for package in waiting:
        module = sys.modules.pop(package)
        _RESUMING[package] = (module, module.__spec__)
        _DEFERRED[package] = "resuming"
    sys.meta_path.insert(0, _Resume)
    try:
        for package in waiting:  # parents first; most are reached by their library's own __init__ on the way
            importlib.import_module(package)
    finally:
        sys.meta_path.remove(_Resume)
        for package in [p for p in waiting if p in _RESUMING]:  # its __init__ (or a parent's) failed: deferred again
            module, _ = _RESUMING.pop(package)
            sys.modules.setdefault(package, module)
            module.__getattr__ = functools.partial(_touched, module)
            _DEFERRED[package] = "deferred"


_RESUMING: dict[str, tuple[ModuleType, importlib.machinery.ModuleSpec]] = {}  # package -> (module, its real spec)


class _Resume:
    """Import hook while deferred packages complete: finds them and runs their real `__init__` in the same object."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        if name not in _RESUMING:
            return None
        real = _RESUMING[name][1]
        spec = importlib.machinery.ModuleSpec(name, _Resume, origin=real.origin, is_package=True)
        spec.submodule_search_locations = real.submodule_search_locations
        return spec

    @staticmethod
    def create_module(spec):
        return _RESUMING[spec.name][0]

    @staticmethod
    def exec_module(module) -> None:
        name = module.__name__
        _, real = entry = _RESUMING.pop(name)
        module.__spec__, module.__loader__ = real, real.loader  # the import machinery set ours
        module.__dict__.pop("__getattr__", None)
        try:
            real.loader.exec_module(module)
        except BaseException:
            _RESUMING[name] = entry  # complete_deferred defers it again
            raise
        _DEFERRED[name] = "done"
