"""Zarr tile stores: the one on-disk format every stage reads and writes.

Layout (Zarr v3, opened with xarray):

- `s1`  (tile, s1_band, y, x) float32, backscatter in dB (tiles store only)
- `s2`  (tile, band, y, x) float32, reflectance x 10^4; NaN where there is no data.
  In tiles.zarr this is the ground truth; in opt_v*.zarr it is the prediction.
- per-tile coordinates, so they travel with any selection: `scene`, `row_off`,
  `col_off` (pixel offset in the scene), `crs` (a string rasterio parses),
  `transform` (tile, affine: GDAL order a b c d e f), `month` (1-12, 0 unknown),
  `lat`, `lon` (tile centre, degrees), `split` (train / val / test), `block` (the map block
  of the tile's centre, "<CRS> x=<left> y=<top>", gac.data.splits: the cluster the evaluation resamples).
- `attrs`: provenance (`gac_version`, `stage`, `params_hash`, `weights`,
  `random_weights`, ...).

One tile is one chunk; `shard_tiles` chunks share one file (Zarr v3 sharding),
so DVC hashes a few files, not thousands. A store is written under a temporary
name and renamed into place when whole: a store at its final path is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gac.errors import GacError

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
# Prithvi-EO-2.0's six HLS bands, as Sentinel-2 names.
PRITHVI_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")
TILE_COORDS = ("scene", "row_off", "col_off", "crs", "transform", "month", "lat", "lon", "split", "block")


def partial_path(path: Path) -> Path:
    """Where a store is built before it is whole (a name no stage reads as complete)."""
    return path.with_name(path.name + ".partial")


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place, replacing an older one; never leaves a mix."""
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def chunk_files(array_path: Path, region: tuple[slice, ...]) -> list[Path]:
    """The files of a Zarr v3 array (on local disk) that hold `region`: one per chunk, or per shard when sharded."""
    import itertools

    import zarr

    array = zarr.open_array(array_path, mode="r")
    outer = array.shards or array.chunks
    region = tuple(region) + tuple(slice(None) for _ in range(array.ndim - len(region)))
    bounds = [s.indices(n)[:2] for s, n in zip(region, array.shape)]
    ranges = [range(start // size, (stop - 1) // size + 1) for (start, stop), size in zip(bounds, outer)]
    return [Path(array_path) / array.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges)]


def mark_done(marker: Path, written: Iterable[Path] = ()) -> None:
    """Record that a unit of resumable work is on disk, durably: its files are flushed to stable storage, then the
    marker is created and flushed, then its directory entry. After a crash, power loss included, a marker never
    stands for data that is not there (without the flushes the OS may write the marker before the data)."""
    for path in written:
        if path.exists():  # a chunk left at its fill value is not written at all
            _fsync(path)
    marker = Path(marker)
    marker.write_text("")
    _fsync(marker)
    _fsync(marker.parent)


def write_whole(out_dir: Path, fill) -> Path:
    """A directory written whole or not at all: `fill(tmp)` writes it under a temporary name, then it is renamed
    into place (replacing an older one). Every saved model and record goes through here."""
    out_dir = Path(out_dir)
    tmp = partial_path(out_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    fill(tmp)
    replace_dir(tmp, out_dir)
    return out_dir


def _strings(values: Iterable[str]) -> np.ndarray:
    # Object dtype maps to Zarr v3's specified variable-length UTF-8 type.
    return np.array(list(values), dtype=object)


def tile_coords(records: list[dict[str, Any]]) -> dict[str, Any]:
    """xarray coordinates for a list of per-tile records (see the module docstring)."""
    return {
        "tile": _strings(r["tile"] for r in records),
        "scene": ("tile", _strings(r["scene"] for r in records)),
        "row_off": ("tile", np.array([r["row_off"] for r in records], dtype=np.int32)),
        "col_off": ("tile", np.array([r["col_off"] for r in records], dtype=np.int32)),
        "crs": ("tile", _strings(r["crs"] for r in records)),
        "transform": (("tile", "affine"), np.array([r["transform"] for r in records], dtype=np.float64).reshape(-1, 6)),
        "month": ("tile", np.array([r["month"] for r in records], dtype=np.int8)),
        "lat": ("tile", np.array([r["lat"] for r in records], dtype=np.float64)),
        "lon": ("tile", np.array([r["lon"] for r in records], dtype=np.float64)),
        "split": ("tile", _strings(r["split"] for r in records)),
        **({"block": ("tile", _strings(r["block"] for r in records))} if records and "block" in records[0] else {}),
    }


def _encoding(ds, shard_tiles: int) -> dict[str, dict[str, Any]]:
    encoding = {}
    for name, var in ds.data_vars.items():
        if var.dims and var.dims[0] == "tile" and var.ndim >= 3:
            chunk = (1, *var.shape[1:])
            shard = (max(1, min(shard_tiles, var.shape[0])), *var.shape[1:])
            encoding[name] = {"chunks": chunk, "shards": shard}
    return encoding


def consolidate(path: Path) -> None:
    """Consolidate metadata so `xr.open_zarr(path)` opens fast and without a fallback warning."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(path), zarr_format=3)


def write_store(ds, path: Path, shard_tiles: int) -> None:
    """Write a whole in-memory dataset atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = partial_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds, shard_tiles))
    consolidate(tmp)
    replace_dir(tmp, path)


def open_store(path: Path, need: Iterable[str] = ("s2",), what: str = "tile store"):
    """Open a store for reading, with one-line errors for the usual mistakes."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        hint = " (an unfinished run left it under .partial; re-run the stage)" if partial_path(path).exists() else ""
        raise GacError(f"{path}: {what} not found{hint}; run the stage that makes it (dvc repro) or fix the path")
    try:
        with warnings.catch_warnings():  # stores written before consolidation still open, just slower
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated metadata")
            ds = xr.open_zarr(path)
    except Exception as exc:  # zarr raises several types for a store it cannot parse
        raise GacError(
            f"{path}: not a readable Zarr store ({type(exc).__name__}); delete it and re-run the stage that makes it"
        ) from None
    # Zarr v3 strings come back as numpy's StringDType, which `.astype(str)` cannot cast: use plain objects.
    strings = {name: coord.astype(object) for name, coord in ds.coords.items() if coord.dtype.kind == "T"}
    ds = ds.assign_coords(strings)
    missing = [name for name in need if name not in ds.data_vars]
    if missing:
        raise GacError(
            f"{path}: {what} lacks variable(s) {', '.join(missing)}; it holds {', '.join(ds.data_vars) or 'nothing'}"
        )
    return ds


def check_aligned(reference, other, reference_path: Path, other_path: Path) -> None:
    """Fail unless `other` holds the same tiles on the same grids as `reference`, in the same order."""
    ref_ids = [str(t) for t in reference.tile.values]
    ids = [str(t) for t in other.tile.values]
    if ids != ref_ids:
        extra = sorted(set(ids) - set(ref_ids))[:3]
        lacking = sorted(set(ref_ids) - set(ids))[:3]
        detail = f"missing {lacking}" if lacking else f"unknown {extra}" if extra else "in a different order"
        raise GacError(
            f"{other_path}: tile ids disagree with {reference_path} ({detail}); re-run the stage that made {other_path.name}"
        )
    if reference.sizes.get("y") != other.sizes.get("y") or reference.sizes.get("x") != other.sizes.get("x"):
        raise GacError(
            f"{other_path}: tiles are {other.sizes.get('y')}x{other.sizes.get('x')} px but {reference_path} has "
            f"{reference.sizes.get('y')}x{reference.sizes.get('x')}; re-run the stage that made {other_path.name}"
        )
    if not np.array_equal(reference.transform.values, other.transform.values) or not np.array_equal(
        reference.crs.values.astype(str), other.crs.values.astype(str)
    ):
        raise GacError(
            f"{other_path}: tile georeference disagrees with {reference_path}; re-run the stage that made {other_path.name}"
        )


class ShardedStore:
    """A store written shard by shard, by one process or several, resumable, renamed into place when whole.

    Work is done in whole shards: a shard file is only ever written once per
    run, in one piece, and a marker (beside the store, not inside it) records it
    afterwards, so a run killed at any moment leaves every marked shard intact
    and the rest to redo. Processes (DDP ranks, ingest workers) take disjoint
    shards and never write the same file. A partial store is resumed only when
    its attributes hold `key` (what it was planned from); else it is started over.
    """

    def __init__(self, path: Path, n_tiles: int, shard_tiles: int, key: dict[str, Any]):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.progress = self.path.with_name(self.path.name + ".progress")
        self.key = dict(key)
        self.n_tiles = n_tiles
        self.shard_tiles = max(1, min(shard_tiles, n_tiles))
        self.n_shards = -(-n_tiles // self.shard_tiles)

    @classmethod
    def resumable(cls, path: Path, key: dict[str, Any]) -> bool:
        """Whether an interrupted run left a partial store at `path` made for `key`."""
        partial = partial_path(Path(path))
        meta = partial / "zarr.json"
        if not meta.is_file() or not Path(path).with_name(Path(path).name + ".progress").is_dir():
            return False
        attrs = json.loads(meta.read_text()).get("attributes", {})
        return all(attrs.get(name) == value for name, value in key.items())

    def open(self, create) -> int:
        """Keep a partial store from an interrupted run with the same key, or `create(partial)` a new one (its
        attributes must hold the key). Returns the shards already done."""
        if self.resumable(self.path, self.key):
            return self.n_shards - len(self.pending_shards())
        for stale in (self.partial, self.progress):
            if stale.exists():
                shutil.rmtree(stale)
        create(self.partial)
        self.progress.mkdir()
        return 0

    def _marker(self, shard: int) -> Path:
        return self.progress / f"{shard:06d}.done"

    def shard_slice(self, shard: int) -> slice:
        return slice(shard * self.shard_tiles, min((shard + 1) * self.shard_tiles, self.n_tiles))

    def pending_shards(self, rank: int = 0, world_size: int = 1) -> list[int]:
        pending = [k for k in range(self.n_shards) if not self._marker(k).exists()]
        return pending[rank::world_size]

    def write_shard(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        """Write one shard of each named array, then mark it done (after its files are on disk)."""
        import zarr

        window = self.shard_slice(shard)
        written = []
        for name, values in arrays.items():
            target = zarr.open_array(self.partial / name, mode="r+")
            expected = (window.stop - window.start, *target.shape[1:])
            if values.shape != expected:
                raise ValueError(f"shard {shard} of {name}: got shape {values.shape}, expected {expected}")
            target[window] = values.astype(target.dtype, copy=False)
            written += chunk_files(self.partial / name, (window,))
        mark_done(self._marker(shard), written)

    def finalize(self) -> Path:
        pending = self.pending_shards()
        if pending:
            raise RuntimeError(f"{self.partial}: {len(pending)} shard(s) not written yet")
        consolidate(self.partial)
        replace_dir(self.partial, self.path)
        shutil.rmtree(self.progress)
        return self.path


class PredictionStore(ShardedStore):
    """An output store (opt_v1/v2/v3): the `s2` of the tiles of `like`, written shard by shard (ShardedStore);
    an interrupted run is resumed when it had the same params_hash and tile count."""

    def __init__(self, path: Path, like, attrs: dict[str, Any], shard_tiles: int, bands: Iterable[str] = S2_BANDS):
        n_tiles = like.sizes["tile"]
        super().__init__(path, n_tiles, shard_tiles, {"params_hash": attrs.get("params_hash"), "n_tiles": n_tiles})
        self.like = like
        self.attrs = dict(attrs)
        self.bands = tuple(bands)

    def open(self) -> int:
        """Create the partial store, or keep one from an interrupted run with the same params. Returns shards
        already done."""
        return super().open(self._create)

    def _create(self, partial: Path) -> None:
        import xarray as xr
        import zarr

        coords = {name: self.like[name] for name in ("tile", *TILE_COORDS) if name in self.like.coords}
        skeleton = xr.Dataset(coords=coords, attrs={**self.attrs, "n_tiles": self.n_tiles})
        skeleton = skeleton.assign_coords(band=_strings(self.bands))
        skeleton.to_zarr(partial, mode="w", zarr_format=3, consolidated=False)
        group = zarr.open_group(partial, mode="a")
        size_y, size_x = self.like.sizes["y"], self.like.sizes["x"]
        group.create_array(
            "s2",
            shape=(self.n_tiles, len(self.bands), size_y, size_x),
            chunks=(1, len(self.bands), size_y, size_x),
            shards=(self.shard_tiles, len(self.bands), size_y, size_x),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["tile", "band", "y", "x"],
        )

    def write_shard(self, shard: int, values: np.ndarray) -> None:
        super().write_shard(shard, {"s2": values})
