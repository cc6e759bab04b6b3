"""Shared fixtures: small demo scenes and tile stores built once per session, the real samples, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = REPO.parent / "shared" / "data" / "terramesh-samples"
GAC = Path(sys.executable).with_name("gac")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Models are built plainly unless a test turns the initial-state cache on (tests/test_init_cache.py): the suite builds
# many one-off identities (seeds, tile sizes), each of which would write a 1.2 GB file first (measured: the sigkill
# test of test_generate.py took 251 s with the cache against 213 s without), and none belong in the user's cache.
os.environ.setdefault("GAC_INIT_CACHE", "0")
# `dvc` and the `gac` it runs for each stage live beside this interpreter (the project's venv), activated or not.
os.environ["PATH"] = f"{GAC.parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    if not (SHARED_SAMPLES / "S1RTC").is_dir():
        pytest.skip(
            f"real TerraMesh samples not found at {SHARED_SAMPLES} (../shared is absent outside the team's machines)"
        )
    return SHARED_SAMPLES


@pytest.fixture(scope="session")
def demo_scenes(tmp_path_factory) -> Path:
    """Three 128 px demo scene pairs (seed 0); scene demo_00 has a nodata strip at its right edge."""
    from gac.data.synth import write_demo

    root = tmp_path_factory.mktemp("scenes")
    write_demo(root, seed=0, n_scenes=3, size=128)
    return root


def small_tile_params(**overrides):
    from gac.data.params import TileParams

    values = dict(size=64, stride=64, split_block=64, val_fraction=0.2, test_fraction=0.2, shard_tiles=4)
    values.update(overrides)
    return TileParams(**values)


@pytest.fixture(scope="session")
def tiles_store(demo_scenes, tmp_path_factory) -> Path:
    """A small demo tiles.zarr: 64x64 px tiles, every split present."""
    from gac.data.tiling import make_tiles

    out = tmp_path_factory.mktemp("tiles") / "tiles.zarr"
    make_tiles(demo_scenes, out, small_tile_params(), seed=0, attrs={"stage": "tile", "params_hash": "test"})
    return out


def run_gac(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed `gac` console script as a user would."""
    return subprocess.run(
        [str(GAC), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def pytest_terminal_summary(terminalreporter):
    """Print the float spreads measured between kernel paths (tests/test_kernel_paths.py): the figures behind the
    bounds."""
    lines = [
        f"{name}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        for name, value in report.user_properties
        if name.startswith("kernel_spread")
    ]
    if lines:
        terminalreporter.write_sep("-", "float spread between kernel paths on this machine")
        for line in lines:
            terminalreporter.write_line(line)
