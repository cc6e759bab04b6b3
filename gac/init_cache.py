"""Seeded random initialisation, paid once per machine: a model's initial state cached on disk, mapped in later.

Every process that builds TerraMind (or Prithvi) used to run the init
functions over every weight: for TerraMind tiny 1.2 GB of float32, most of
it the S2L2A tokenizer, several seconds of a stage's start-up, and a memory
high-water mark while the whole of it was written. The state a seeded build
makes depends only on what is built (the builder's arguments, its seed,
the code and library versions), so `cached_build` builds it plainly the
first time and saves every parameter and buffer to a cache file (written
under a temporary name and renamed when whole). A later build with the same
identity creates the modules with their parameters on the meta device (no
memory, no init), then hands each module the cached tensors, mapped from the
file: pages are read when first used, so weights a process never touches
(the tokenizer's encoder in generation) never take memory.

Nothing else changes: the tensors are the plain build's bytes (memory
layout included), shared parameters stay shared, and weights loaded from a
file afterwards (hf, local) are copied in as before. A cache file that does
not fit (unreadable, cut short, other names or shapes) is rebuilt with one
log line; a content that has been altered with its layout intact is not
detected (the file is not checksummed, which would read all of it).

Where: `$GAC_CACHE_DIR`, else `$XDG_CACHE_HOME/gac`, else `~/.cache/gac`,
in `init/`. `GAC_INIT_CACHE=0` turns the cache off (every build plain).
The files a machine has not used for longest are removed once they hold more
than `GAC_INIT_CACHE_GB` (default 8; TerraMind tiny's state is ~1.2 GB), so
seeds, tile sizes and upgrades do not fill the disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gac.digest import json_digest

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

log = logging.getLogger(__name__)

SWITCH = "GAC_INIT_CACHE"
LIMIT = "GAC_INIT_CACHE_GB"  # the cache's size cap in GiB (least recently used files go first)
FORMAT = 1  # bump when what a cache file holds changes


def cache_dir() -> Path:
    """Where initial states are cached."""
    if os.environ.get("GAC_CACHE_DIR"):
        return Path(os.environ["GAC_CACHE_DIR"]) / "init"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gac" / "init"


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def source_digest(*files: str | Path) -> str:
    """A digest of source files (the builder's code): a cached state belongs to the code that made it."""
    h = hashlib.sha256()
    for file in files:
        h.update(Path(file).read_bytes())
    return h.hexdigest()[:16]


def cache_path(identity: dict[str, Any]) -> Path:
    """The cache file for a build `identity` (model name, builder arguments, seed, code digest), with the versions of
    the libraries that make the modules and draw the random numbers."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "terratorch", "diffusers", "timm"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    digest = json_digest({"format": FORMAT, "identity": identity, "versions": versions})
    return cache_dir() / f"{identity.get('name', 'model')}-{digest}.pt"


def cached_build(
    build: Callable[[], "nn.Module"], identity: dict[str, Any], continues_rng: bool = False
) -> "nn.Module":
    """`build()`, or the same modules holding the state a plain `build()` made, read from the cache.

    `build` seeds its own randomness, or the caller seeded it and, with
    `continues_rng`, goes on drawing from the RNG after the build: then the
    CPU RNG is left where a plain build leaves it.
    """
    if not enabled():
        return build()
    import torch

    path = cache_path(identity)
    if path.is_file():
        before = torch.random.get_rng_state()
        try:
            with _empty_parameters():
                model = build()
            saved = _read(path)
            os.utime(path)  # used now: the last file the size cap removes
            materialise(model, saved["tensors"])
            if continues_rng:
                torch.random.set_rng_state(saved["rng"])
            return model
        except Exception as exc:  # a cache that does not fit this build is rebuilt, never trusted
            log.warning("%s: cached initial state unusable (%s: %s); rebuilding it", path, type(exc).__name__, exc)
            torch.random.set_rng_state(before)  # the plain build draws what it would have drawn
    model = build()
    _write(model, torch.random.get_rng_state() if continues_rng else None, path)
    return model


def initial_state(model: "nn.Module") -> dict:
    """Every parameter and buffer (non-persistent ones too) under the first name a module walk reaches it by."""
    state, seen = {}, set()
    for key, tensor in _slots(model):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            state[key] = tensor.detach()
    return state


def materialise(model: "nn.Module", state: dict) -> None:
    """Give every module its tensors from `state` (as `initial_state` names them); a tensor shared by several
    modules stays one tensor. Raises if `state` does not hold exactly the model's tensors, with their shapes and
    dtypes, or if a module kept a tensor on the meta device outside its parameters and buffers."""
    import torch

    placed: dict[int, torch.Tensor] = {}
    used = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        for slots in (module._parameters, module._buffers):
            for name, tensor in list(slots.items()):
                if tensor is None:
                    continue
                if id(tensor) not in placed:
                    key = f"{module_name}.{name}" if module_name else name
                    real = state[key]  # KeyError: the file lacks it
                    if real.shape != tensor.shape or real.dtype != tensor.dtype:
                        raise ValueError(f"{key}: cached {tuple(real.shape)} {real.dtype}, model {tuple(tensor.shape)}")
                    if isinstance(tensor, torch.nn.Parameter):
                        real = torch.nn.Parameter(real, requires_grad=tensor.requires_grad)
                    placed[id(tensor)] = real
                    used.add(key)
                slots[name] = placed[id(tensor)]
    if len(used) != len(state):
        raise ValueError(f"{len(state) - len(used)} cached tensors the model does not have")
    for module_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and value.is_meta:
                raise ValueError(f"{module_name}.{attr}: a tensor derived from the weights at build time")


def _slots(model):
    for module_name, module in model.named_modules(remove_duplicate=False):
        for slots in (module._parameters, module._buffers):
            for name, tensor in slots.items():
                if tensor is not None:
                    yield (f"{module_name}.{name}" if module_name else name), tensor


@contextmanager
def _empty_parameters():
    """Parameters registered while this runs are put on the meta device (no memory; init functions do nothing on
    them); buffers are made as usual. One parameter registered on several modules stays one (meta) parameter.

    Deterministic mode's filling of uninitialised memory (`torch.empty` writes NaNs) is off meanwhile: the
    parameters are created empty before they move to the meta device, and would otherwise all be written once; every
    parameter and buffer is then replaced by the cached one.
    """
    import torch
    import torch.utils.deterministic

    register = torch.nn.Module.register_parameter
    fills = torch.utils.deterministic.fill_uninitialized_memory
    on_meta: dict[int, tuple] = {}  # id(parameter) -> (the parameter, kept so its id is not reused; its meta twin)

    def register_on_meta(module, name, param):
        if param is not None and not param.is_meta:
            if id(param) not in on_meta:
                on_meta[id(param)] = (param, type(param)(param.to("meta"), requires_grad=param.requires_grad))
            param = on_meta[id(param)][1]
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register
        torch.utils.deterministic.fill_uninitialized_memory = fills


def _read(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def _write(model: "nn.Module", rng, path: Path) -> None:
    """Save the model's initial state (and the CPU RNG state the build left, for `continues_rng`)."""
    import torch

    state = initial_state(model)
    if any(t.is_meta or t.device.type != "cpu" for t in state.values()):
        return  # only what was built in memory on the CPU is worth caching
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"tensors": state, "rng": rng}, tmp)
        os.replace(tmp, path)
        size = path.stat().st_size / 2**30
        log.info("cached the initial state of %s (%.2f GiB) in %s; %s=0 turns this off", path.stem, size, path, SWITCH)
        prune(path.parent, keep=path)
    except OSError as exc:
        log.warning("could not cache an initial state in %s (%s); later builds initialise again", path.parent, exc)
        tmp.unlink(missing_ok=True)


def prune(directory: Path, keep: Path) -> list[Path]:
    """Remove the least recently used cache files until the rest fit in `GAC_INIT_CACHE_GB`; `keep` stays."""
    limit = float(os.environ.get(LIMIT) or 8) * 2**30
    files = sorted((f for f in directory.glob("*.pt") if f != keep), key=lambda f: f.stat().st_mtime, reverse=True)
    total = keep.stat().st_size if keep.is_file() else 0
    removed = []
    for file in files:  # newest first: the oldest are the ones past the cap
        total += file.stat().st_size
        if total > limit:
            file.unlink(missing_ok=True)
            removed.append(file)
    if removed:
        log.info(
            "removed %d least recently used initial state(s) from %s (over %s GiB, %s)",
            len(removed),
            directory,
            limit / 2**30,
            LIMIT,
        )
    return removed
