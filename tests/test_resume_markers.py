"""Resumable work is marked done only once its data is on stable storage: the same rule for stores and translate.

A marker that reaches the disk before the chunk it stands for would, after a power loss, let a resumed run skip
a block or shard that holds nothing. Both writers go through gac.data.store.mark_done, which flushes the chunk
files, then the marker, then the marker's directory; this records the order of those flushes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gac.data.store import PredictionStore, open_store


@pytest.fixture
def flushed(monkeypatch):
    """The paths os.fsync is called on, in order."""
    paths: list[Path] = []
    real = os.fsync

    def recording(fd):
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor is")
    monkeypatch.setattr(os, "fsync", recording)
    return paths


def _chunk_files(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*") if p.is_file() and "/c/" in str(p)}


def test_translate_block_marker_follows_its_flushed_chunks(tmp_path, flushed):
    from gac.translate.run import BlockStore

    store = BlockStore(tmp_path / "scene.partial", {"run": 1}, height=40, width=40, block=32, uncertainty=True)
    store.open()
    image = np.full((12, 32, 8), 7, dtype=np.uint16)
    store.write(1, (0, 32, 32, 8), image, np.ones((12, 32, 8), dtype=np.float32))
    marker = (tmp_path / "scene.partial" / "done" / "000001").resolve()
    chunks = _chunk_files(tmp_path / "scene.partial")
    assert len(chunks) == 2  # the block's chunk in image.zarr and in spread.zarr
    assert set(flushed[:2]) == chunks and flushed[2:] == [marker, marker.parent]
    assert np.array_equal(store.read("image", (0, 32, 32, 8)), image)


def test_prediction_store_shard_marker_follows_its_flushed_shard(tiles_store, tmp_path, flushed):
    like = open_store(tiles_store, need=("s1",)).isel(tile=slice(0, 6))
    store = PredictionStore(tmp_path / "out.zarr", like, {"params_hash": "x"}, shard_tiles=4)
    store.open()
    flushed.clear()
    store.write_shard(1, np.ones((2, 12, like.sizes["y"], like.sizes["x"]), dtype=np.float32))
    marker = store._marker(1).resolve()
    assert flushed[:-2] == sorted(_chunk_files(store.partial / "s2")) and len(flushed) == 3  # one shard file
    assert flushed[-2:] == [marker, marker.parent]
