"""Cutting scenes into tiles, assigning train/val/test spatially (gac.data.splits), and writing tiles.zarr."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from gac.data.landcover import UNKNOWN
from gac.data.params import TileParams
from gac.data.readers import Inputs
from gac.data.scenes import Scene, ScenePair, find_pairs, read_pair
from gac.data.splits import SPLITS, Footprint, footprint_grids, split_tiles
from gac.data.store import S1_BANDS, S2_BANDS, tile_coords, write_store
from gac.errors import GacError

log = logging.getLogger(__name__)


# the per-pixel variables of a tiles store: their dimensions, type and attributes (every writer uses these)
PIXEL_DIMS = {"s1": ("tile", "s1_band", "y", "x"), "s2": ("tile", "band", "y", "x"), "landcover": ("tile", "y", "x")}
PIXEL_DTYPES = {"s1": np.float32, "s2": np.float32, "landcover": np.int16}
PIXEL_ATTRS = {
    "s1": {"units": "dB", "long_name": "Sentinel-1 backscatter (VV, VH)"},
    "s2": {"units": "reflectance x 10^4", "long_name": "Sentinel-2 L2A surface reflectance"},
    "landcover": {
        "long_name": "land-cover class code (names in the store's landcover_classes attribute)",
        "nodata": UNKNOWN,
    },
}


@dataclass(frozen=True)
class Window:
    scene: str
    row: int
    col: int


def tile_offsets(length: int, size: int, stride: int) -> list[int]:
    """Offsets along one axis: every `stride` px, plus one flush with the far edge so the scene is covered."""
    offsets = list(range(0, length - size + 1, stride))
    if offsets and offsets[-1] != length - size:
        offsets.append(length - size)
    return offsets


def tile_transform(scene_transform: tuple[float, ...], row: int, col: int) -> tuple[float, ...]:
    """The affine (GDAL order) of a tile whose top-left pixel is (row, col) of the scene."""
    a, b, c, d, e, f = scene_transform
    return (a, b, c + a * col + b * row, d, e, f + d * col + e * row)


def _block_size(tile: TileParams) -> int:
    return max(tile.split_block, tile.size)


@dataclass(frozen=True)
class SceneWindows:
    """What planning needs of one scene, without its pixels: where it lies, its month, and the windows (row, col)
    that pass the nodata rule. Archive ingest (gac.data.archive_tiles) gathers these from worker processes."""

    name: str
    crs: str
    transform: tuple[float, ...]
    height: int
    width: int
    month: int
    windows: tuple[tuple[int, int], ...]
    dropped_nodata: int
    has_landcover: bool = False


def scene_windows(scene: Scene, tile: TileParams, has_landcover: bool = False) -> SceneWindows:
    """The scene's tile windows with at most `tile.max_nodata` nodata (NaN in S1 or S2)."""
    height, width = scene.s2.shape[1:]
    if tile.size > min(height, width):
        raise GacError(
            f"tile.size {tile.size} is larger than scene '{scene.name}' ({height}x{width} px); "
            f"use tile.size <= {min(height, width) // 16 * 16}"
        )
    windows, dropped = [], 0
    for row in tile_offsets(height, tile.size, tile.stride):
        for col in tile_offsets(width, tile.size, tile.stride):
            window = (slice(None), slice(row, row + tile.size), slice(col, col + tile.size))
            invalid = np.isnan(scene.s1[window]).any(0) | np.isnan(scene.s2[window]).any(0)
            if invalid.mean() > tile.max_nodata:
                dropped += 1
            else:
                windows.append((row, col))
    return SceneWindows(
        scene.name,
        scene.crs,
        tuple(scene.transform),
        height,
        width,
        scene.month,
        tuple(windows),
        dropped,
        has_landcover,
    )


def plan_tiles(
    scenes: list[Scene], tile: TileParams, seed: int, scene_splits: dict[str, str] | None = None
) -> tuple[list[dict], dict[str, int]]:
    """Per-tile records (geometry, split, block, metadata) for the tiles that survive the nodata and split rules.

    `scene_splits` ({scene: split}) is an archive's own split (`data.split: official`); else blocks of the map
    are drawn (gac.data.splits).
    """
    return plan_windows([scene_windows(scene, tile) for scene in scenes], tile, seed, scene_splits)


def plan_windows(
    scenes: list[SceneWindows], tile: TileParams, seed: int, scene_splits: dict[str, str] | None = None
) -> tuple[list[dict], dict[str, int]]:
    """plan_tiles from the scenes' windows (no pixels needed): the splits, blocks and per-tile records."""
    candidates = [(scene, row, col) for scene in scenes for row, col in scene.windows]
    dropped = {"nodata": sum(scene.dropped_nodata for scene in scenes)}
    if not candidates:
        raise GacError(
            f"tile: no tile has at most {tile.max_nodata:.0%} nodata; check the scenes' nodata or raise tile.max_nodata"
        )

    block = _block_size(tile)
    grids = footprint_grids([Footprint.of(s.name, s.crs, s.transform, s.height, s.width) for s in scenes], block)
    placed = [(scene.name, tile_transform(scene.transform, row, col), tile.size) for scene, row, col in candidates]
    splits, split_dropped = split_tiles(
        placed, grids, block, tile.val_fraction, tile.test_fraction, tile.split_gap, seed, scene_splits
    )
    dropped.update(split_dropped)
    kept = [
        (c, transform, split, block_id)
        for c, (_, transform, _), (split, block_id) in zip(candidates, placed, splits)
        if split is not None
    ]
    records = []
    for scene, group in groupby(kept, key=lambda k: k[0][0]):  # one lon/lat call per scene, not per tile
        group = list(group)
        rows, cols = [row for (_, row, _), *_ in group], [col for (_, _, col), *_ in group]
        lon, lat = tile_centres_lonlat(scene.crs, scene.transform, rows, cols, tile.size)
        for i, ((_, row, col), transform, split, block_id) in enumerate(group):
            records.append(
                {
                    "tile": f"{scene.name}_r{row:05d}_c{col:05d}",
                    "scene": scene.name,
                    "row_off": row,
                    "col_off": col,
                    "crs": scene.crs,
                    "transform": transform,
                    "month": scene.month,
                    "split": split,
                    "block": block_id,
                    "lat": float(lat[i]),
                    "lon": float(lon[i]),
                }
            )
    return records, dropped


def tile_centres_lonlat(
    crs, scene_transform: tuple[float, ...], rows, cols, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (degrees, float64) of the centres of `size` px tiles at pixel offsets (rows, cols) of a
    scene.

    The refiner is conditioned on them: tiles.zarr for training and `gac translate` for new scenes both come here,
    so a tile at the same place gets the same location either way.
    """
    from rasterio.warp import transform as warp_points

    a, b, c, d, e, f = tuple(scene_transform)[:6]
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    # the tile's own origin (tile_transform), then half a tile along each axis
    x = (c + a * cols + b * rows) + a * size / 2 + b * size / 2
    y = (f + d * cols + e * rows) + d * size / 2 + e * size / 2
    lon, lat = warp_points(crs, "EPSG:4326", x.tolist(), y.tolist())
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def tiles_coords(records: list[dict]) -> dict:
    """A tiles store's coordinates: the per-tile ones (gac.data.store.tile_coords) and the band names."""
    coords = tile_coords(records)
    coords["band"] = np.array(S2_BANDS, dtype=object)
    coords["s1_band"] = np.array(S1_BANDS, dtype=object)
    return coords


def tiles_dataset(
    scenes: list[Scene], records: list[dict], tile: TileParams, attrs: dict, landcover: dict | None = None
):
    """The tiles as one xarray Dataset in the store layout of gac.data.store.

    `landcover` ({scene name: (H, W) int16 codes}, from gac.data.landcover) adds
    the variable `landcover` (tile, y, x), -1 where unknown or where a scene has none.
    """
    import xarray as xr

    by_name = {scene.name: scene for scene in scenes}
    size = tile.size

    def cut(record: dict, key: str) -> np.ndarray:
        data = getattr(by_name[record["scene"]], key)
        return data[:, record["row_off"] : record["row_off"] + size, record["col_off"] : record["col_off"] + size]

    s1 = np.stack([cut(r, "s1") for r in records]).astype(np.float32)
    s2 = np.stack([cut(r, "s2") for r in records]).astype(np.float32)
    ds = xr.Dataset(
        {"s1": (PIXEL_DIMS["s1"], s1), "s2": (PIXEL_DIMS["s2"], s2)}, coords=tiles_coords(records), attrs=attrs
    )
    if landcover:

        def cover(record: dict) -> np.ndarray:
            codes = landcover.get(record["scene"])
            if codes is None:
                return np.full((size, size), UNKNOWN, dtype=np.int16)
            return codes[record["row_off"] : record["row_off"] + size, record["col_off"] : record["col_off"] + size]

        ds["landcover"] = (("tile", "y", "x"), np.stack([cover(r) for r in records]).astype(np.int16))
    for name in ds.data_vars:
        ds[name].attrs.update(PIXEL_ATTRS[name])
    return ds


def read_scenes(pairs: list[ScenePair], reproject: bool, inputs: Inputs = Inputs()) -> list[Scene]:
    return [read_pair(pair, reproject, inputs) for pair in pairs]


def subset_tiles(records: list[dict], max_tiles: int, seed: int) -> list[dict]:
    """At most `max_tiles` records, a fixed subset: each split keeps its share (at least one tile where it had any).

    Within a split the tiles kept are those with the smallest seeded hash of
    their id, so the subset depends on the seed and the tile ids only, not on
    the order scenes are read in.
    """
    if len(records) <= max_tiles:
        return records
    by_split = {split: [r for r in records if r["split"] == split] for split in SPLITS}
    present = [split for split in SPLITS if by_split[split]]
    quota = {split: max(1, int(max_tiles * len(by_split[split]) / len(records))) for split in present}
    while sum(quota.values()) > max_tiles:  # the floors of 1 overshot: trim the largest share
        largest = max(present, key=lambda s: quota[s])
        quota[largest] -= 1
    keep = set()
    for split in present:
        ranked = sorted(by_split[split], key=lambda r: zlib.crc32(f"{seed}:{r['tile']}".encode()))
        keep.update(r["tile"] for r in ranked[: quota[split]])
    return [r for r in records if r["tile"] in keep]


def _scene_landcover(scene_dir: Path, scenes: list[Scene]) -> tuple[dict, dict[int, str]]:
    """Each scene's land-cover codes (where it has a LANDCOVER/ layer) and the union of their class names."""
    from gac.data.landcover import read_scene_landcover

    layers, classes = {}, {}
    for scene in scenes:
        found = read_scene_landcover(scene_dir, scene.name, scene.s2.shape[1:])
        if found is not None:
            layers[scene.name], names = found
            classes.update(names)
    return layers, classes


def make_tiles(
    scene_dir: Path,
    out: Path,
    tile: TileParams,
    seed: int,
    attrs: dict,
    max_tiles: int | None = None,
    inputs: Inputs = Inputs(),
) -> dict:
    """Scene pairs -> tiles.zarr (written atomically). Returns a summary for the log.

    `max_tiles` (`data.max_tiles`) keeps a fixed subset for quick runs (subset_tiles);
    `inputs` (the `data` params) says how the rasters are read: S1 units and nodata, the S2 offset
    (decided per scene and recorded in the store's `s2_offsets` attribute).
    """
    from gac.data.archive import read_catalogue
    from gac.data.archive_tiles import make_archive_tiles

    catalogue = read_catalogue(scene_dir)
    if catalogue is not None:  # an archive read where it lies (gac.data.archive)
        return make_archive_tiles(catalogue, out, tile, seed, attrs, max_tiles, inputs.s2_offset)
    pairs = find_pairs(scene_dir)
    products = {pair.s1_product for pair in pairs}
    scenes = read_scenes(pairs, tile.reproject, inputs)
    records, dropped = plan_tiles(scenes, tile, seed)
    if max_tiles is not None:
        records = subset_tiles(records, max_tiles, seed)
    counts = {split: sum(r["split"] == split for r in records) for split in SPLITS}
    attrs = {
        **attrs,
        "s1_product": products.pop(),
        "tile_size": tile.size,
        "tile_stride": tile.stride,
        "scenes": [s.name for s in scenes],
        "s2_offsets": {s.name: s.s2_offset for s in scenes},
        "dropped_nodata": dropped["nodata"],
        "dropped_split_border": dropped["split_border"],
    }
    landcover, classes = _scene_landcover(scene_dir, scenes)
    if classes:
        attrs["landcover_classes"] = {str(k): v for k, v in sorted(classes.items())}
    attrs["dropped_split_gap"] = dropped["split_gap"]
    ds = tiles_dataset(scenes, records, tile, attrs, landcover)
    write_store(ds, out, tile.shard_tiles)
    summary = {"tiles": len(records), **counts, **{f"dropped_{k}": v for k, v in dropped.items()}}
    log.info("wrote %s: %s; L2A offset removed per scene: %s", out, summary, attrs["s2_offsets"])
    return summary
