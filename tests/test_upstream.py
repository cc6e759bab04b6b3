"""gac.upstream: terratorch's TerraMind and Prithvi without `import terratorch`, the same models, and a plain fallback.

The terratorch checks run in fresh processes: this test process may have
imported terratorch whole already, and the fast import only shows in a
process that has not.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gac import upstream

REPO = Path(__file__).resolve().parents[1]
# What a plain `import terratorch` loads and GAC never needs (datasets, tasks, other backbones and their libraries).
NOT_NEEDED = [
    "terratorch.datasets.biomassters",
    "terratorch.tasks",
    "terratorch.datamodules",
    "terratorch.models.backbones.clay_v1",
    "albumentations",
    "segmentation_models_pytorch",
    "lightning",
]


def run_python(code: str, env: dict | None = None, timeout: float = 600) -> tuple[dict, str]:
    """Run `code` in a fresh interpreter at the repository root; it prints one JSON line last. (result, stderr)"""
    import os

    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_fast_models_equal_the_registries_models_and_terratorch_is_whole_afterwards():
    """Built through gac.upstream (fast) and through terratorch's FULL_MODEL_REGISTRY / BACKBONE_REGISTRY after a
    plain `import terratorch` in the same process: same classes, state-dict keys, values and outputs."""
    result, _ = run_python(f"""
        import json, os, sys
        import torch
        from gac import upstream
        from gac.refine.backbone import build_backbone
        from gac.terramind import Decoding, build_generator, generate

        BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12", "VV"]  # VV: a channel Prithvi never saw
        tm, pv = upstream.terramind(), upstream.prithvi()
        loaded = [m for m in {NOT_NEEDED!r} if m in sys.modules]
        fast_tm = build_generator("terramind_v1_tiny_generate", ["S1RTC"], "random", tile_size=32, seed=3)
        fast_pv, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", BANDS)
        loaded += [m for m in {NOT_NEEDED!r} if m in sys.modules]

        from terratorch.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY  # a user's import, after the fast one
        import terratorch
        whole = [hasattr(terratorch, "tasks"), "timm" in BACKBONE_REGISTRY._sources,
                 "dinov3_vits16" in BACKBONE_REGISTRY]
        os.environ[upstream.PLAIN_SWITCH] = "1"
        upstream.terramind.cache_clear(); upstream.prithvi.cache_clear()
        assert upstream.terramind().build == FULL_MODEL_REGISTRY.build
        assert upstream.prithvi().build == BACKBONE_REGISTRY.build
        plain_tm = build_generator("terramind_v1_tiny_generate", ["S1RTC"], "random", tile_size=32, seed=3)
        plain_pv, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", BANDS)

        def same(a, b):
            sa, sb = a.state_dict(), b.state_dict()
            return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)

        s1 = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0)) * 3 - 12
        outs = [generate(m, {{"S1RTC": s1}}, [5, 6], Decoding(timesteps=1)) for m in (fast_tm, plain_tm)]
        x = torch.randn(1, 7, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            feats = [m(x) for m in (fast_pv, plain_pv)]
        print(json.dumps(dict(
            how=[tm.how, pv.how, upstream.terramind().how], loaded=loaded, whole=whole,
            classes=[type(fast_tm) is type(plain_tm), type(fast_pv) is type(plain_pv)],
            same_state=[same(fast_tm, plain_tm), same(fast_pv, plain_pv)],
            n_keys=[len(fast_tm.state_dict()), len(fast_pv.state_dict())],
            same_output=[torch.equal(*outs), all(torch.equal(a, b) for a, b in zip(*feats))],
            output_mean=float(outs[0].mean()), finite=bool(torch.isfinite(outs[0]).all()),
        )))
    """)
    assert result["how"] == ["fast", "fast", "plain"]
    assert result["loaded"] == []  # neither the import nor the builds pulled in terratorch's datasets, tasks, ...
    assert result["whole"] == [True, True, True]  # terratorch completed by the plain user import
    assert result["classes"] == [True, True]  # one copy of every upstream module, not a second import
    assert result["same_state"] == [True, True] and min(result["n_keys"]) > 50
    assert result["same_output"] == [True, True] and result["finite"]


def test_terratorch_after_the_fast_import_registers_what_a_plain_import_registers():
    """A later `import terratorch` in the same process is whole: every registry holds the same names as in a process
    that imported terratorch plainly (here through GAC's switch), its sources in the same order (which decides an
    un-prefixed name), and star imports of the deferred packages see their real `__all__`."""
    dump = """
        import json, logging, os, sys
        logging.basicConfig(level=logging.INFO)
        from gac import upstream
        how = [upstream.terramind().how, upstream.prithvi().how]
        from terratorch.registry import BACKBONE_REGISTRY, DECODER_REGISTRY, FULL_MODEL_REGISTRY, NECK_REGISTRY
        from terratorch.models.backbones import *  # noqa
        from terratorch.datasets import HLSBands, Sen1Floods11NonGeo
        names = {r: sorted(f"{p}:{n}" for p, src in reg._sources.items() for n in src)
                 for r, reg in (("backbone", BACKBONE_REGISTRY), ("full", FULL_MODEL_REGISTRY), ("neck", NECK_REGISTRY),
                                ("decoder", DECODER_REGISTRY))}
        sources = {r: list(reg._sources) for r, reg in (("backbone", BACKBONE_REGISTRY), ("full", FULL_MODEL_REGISTRY))}
        print(json.dumps(dict(how=how, names=names, sources=sources, unet=UNet.__module__, hls=HLSBands.__module__)))
    """
    after_fast, _ = run_python(dump)
    plain, log = run_python(dump, env={upstream.PLAIN_SWITCH: "1"})
    assert after_fast.pop("how") == ["fast", "fast"] and plain.pop("how") == ["plain", "plain"]
    assert after_fast == plain
    assert "terratorch:terramind_v1_tiny_generate" in plain["names"]["full"]
    assert "terratorch:prithvi_eo_v2_tiny_tl" in plain["names"]["backbone"]
    assert "fast import" not in log  # the switch is no fallback: nothing to warn about


def test_a_changed_upstream_layout_falls_back_to_the_plain_import_with_one_line():
    """Simulated layout change: the module the registries live in is gone under its old name. GAC imports terratorch
    the plain way, says so once, and builds the same backbone as the fast import (or any import) does."""
    from gac.refine.backbone import build_backbone

    code = """
        import json, logging, hashlib, sys
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        from gac import upstream
        source, names = upstream.HANDED_OVER["terratorch.registry"]
        upstream.HANDED_OVER["terratorch.registry"] = ("terratorch.registry.moved_away", names)
        from gac.refine.backbone import build_backbone
        model, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", BANDS)
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()
        print(json.dumps(dict(how=[upstream.prithvi().how, upstream.terramind().how], digest=digest,
                              datasets="terratorch.datasets.biomassters" in sys.modules)))
    """
    bands = ["B02", "B03", "B04", "B8A", "B11", "B12"]
    moved, log = run_python(code.replace("BANDS", repr(bands)))
    assert moved["how"] == ["plain", "plain"] and moved["datasets"]  # the whole package, as `import terratorch` does
    model, _ = build_backbone("prithvi_eo_v2_tiny_tl", "random", bands)
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    assert moved["digest"] == digest
    lines = [line for line in log.splitlines() if "fast import does not fit" in line]
    assert len(lines) == 1 and "terratorch.registry.moved_away" in lines[0]
    assert lines[0].startswith(
        "WARNING gac.upstream: terratorch: the fast import does not fit this version (ModuleNotFoundError"
    )


def test_terramind_statistics_are_its_registry_tables_without_importing_terramind():
    """Stage 2 reads TerraMind's pre-training mean/std without importing TerraMind (or torch): the registry module's own
    tables, read from its source, equal to the imported module's."""
    result, _ = run_python("""
        import json, sys
        from gac.terramind import pretraining_stats
        watched = ("torch", "diffusers", "terratorch.models.backbones.terramind.model.terramind_register")
        print(json.dumps(dict(s2=pretraining_stats("S2L2A"), s1=pretraining_stats("S1RTC"),
                              imported=[m for m in watched if m in sys.modules])))
    """)
    assert result["imported"] == []
    assert result["s1"] == [[-10.93, -17.329], [4.391, 4.459]]  # terramind_register.py, untok_sen1rtc@224
    assert result["s2"][0][:3] == [1390.458, 1503.317, 1718.197] and len(result["s2"][1]) == 12
    register = upstream.terramind().register
    tables = upstream._literal_tables(upstream.TERRAMIND_MODULES["register"], upstream.STATISTICS)
    assert tables == (register.v1_pretraining_mean, register.v1_pretraining_std)


# ----------------------------------------------------------------------------- the deferral mechanism on a toy package


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A package `toypkg` whose __init__ counts its runs and re-exports `value` from `toypkg.core`."""
    root = tmp_path / "toypkg"
    (root / "inner").mkdir(parents=True)
    (root / "__init__.py").write_text(
        "import builtins\nbuiltins.TOY_INITS = getattr(builtins, 'TOY_INITS', 0) + 1\n"
        "from toypkg.core import value\n__all__ = ['value', 'extra']\n"
        "extra = 'from init'\n"
    )
    (root / "core.py").write_text("value = 42\n")
    (root / "inner" / "__init__.py").write_text("import builtins\nbuiltins.TOY_INNER = True\n")
    (root / "inner" / "leaf.py").write_text("from toypkg import value\nleaf = value + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import builtins

    monkeypatch.setattr(builtins, "TOY_INITS", 0, raising=False)
    monkeypatch.setattr(builtins, "TOY_INNER", False, raising=False)
    saved = dict(upstream._DEFERRED)
    yield builtins
    for name in [m for m in sys.modules if m == "toypkg" or m.startswith("toypkg.")]:
        del sys.modules[name]
    upstream._DEFERRED.clear()
    upstream._DEFERRED.update(saved)


def test_a_deferred_package_runs_its_init_once_on_first_touch(toy):
    import importlib

    upstream._defer("toypkg")
    core = importlib.import_module("toypkg.core")  # a submodule imports without the package's __init__
    assert core.value == 42 and toy.TOY_INITS == 0
    pkg = sys.modules["toypkg"]
    assert pkg.extra == "from init" and toy.TOY_INITS == 1  # touched: the real __init__ ran, in the same module object
    assert pkg.value == 42 and toy.TOY_INITS == 1 and upstream._DEFERRED["toypkg"] == "done"
    namespace: dict = {}
    exec("from toypkg import *", namespace)
    assert namespace["value"] == 42 and namespace["extra"] == "from init"


def test_strict_mode_refuses_a_name_not_handed_over_and_a_star_import_completes(toy):
    import importlib

    upstream._defer("toypkg.inner")  # parents deferred too
    upstream._Strict.on = True
    try:
        with pytest.raises(ImportError, match="cannot import name 'value'"):
            importlib.import_module("toypkg.inner.leaf")  # needs a name from the deferred toypkg/__init__
        sys.modules["toypkg"].__dict__["value"] = 42  # handed over
        assert importlib.import_module("toypkg.inner.leaf").leaf == 43
    finally:
        upstream._Strict.on = False
    assert toy.TOY_INITS == 0 and toy.TOY_INNER is False
    del sys.modules["toypkg"].__dict__["value"]
    namespace: dict = {}
    exec("from toypkg.inner import *", namespace)  # asks inner for __all__: completes toypkg, then toypkg.inner
    assert toy.TOY_INITS == 1 and toy.TOY_INNER is True
    assert [upstream._DEFERRED[p] for p in ("toypkg", "toypkg.inner")] == ["done", "done"]


def test_literal_tables_are_refused_when_the_module_may_change_them(toy, tmp_path):
    (tmp_path / "toypkg" / "tables.py").write_text("a = {'x': [1.0]}\nb = {**a, 'y': [2.0]}\n")
    assert upstream._literal_tables("toypkg.tables", ("a",)) == ({"x": [1.0]},)  # read by b: fine
    for change in ("a['x'] = [3.0]", "a.update(y=1)", "a = {}", "print(a)", "del a"):
        (tmp_path / "toypkg" / "tables.py").write_text(f"a = {{'x': [1.0]}}\n{change}\n")
        assert upstream._literal_tables("toypkg.tables", ("a",)) is None, change
    (tmp_path / "toypkg" / "tables.py").write_text("a = dict(x=[1.0])\n")  # not a literal
    assert upstream._literal_tables("toypkg.tables", ("a",)) is None
    assert toy.TOY_INITS == 0  # found and read without importing anything
