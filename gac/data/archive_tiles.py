"""tiles.zarr from a catalogued archive (gac.data.archive) at archive scale: two passes in worker processes.

Pass 1 reads every pair in `tile.workers` processes and keeps only what planning needs (gac.data.tiling.
SceneWindows: where the pair lies and which windows pass the nodata rule, no pixels); the parent plans splits,
blocks and the `data.max_tiles` subset from those exactly as for scenes held in memory (plan_windows, subset_tiles:
the same tiles, splits and order), then creates the store at its partial path with its coordinates, attributes and
labels, and empty pixel arrays. Pass 2 hands out whole shards (`tile.shard_tiles` tiles, one file per array, so no
two processes ever write one file): a worker reads again the pairs of its shard only, writes the shard and marks
it done (gac.data.store.ShardedStore). The parent holds per-tile records, a worker one shard's pairs: memory is
bounded by the shard size, not by the archive. Every pair is read twice, the price of never holding its pixels.

An interrupted ingest resumes: the partial store records a digest of what it was planned from (the catalogue and
the params); the next run that finds the same digest takes the plan from the partial store's coordinates (no
pass 1) and writes only the shards not marked done. Another digest: it starts over, saying so in one log line.
The store is renamed into place only when whole. How many processes read does not change a byte of it.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from gac.data.archive import OFFICIAL_SPLITS, Entry, catalogue_entries, open_reader
from gac.data.landcover import UNKNOWN
from gac.data.params import TileParams
from gac.data.store import ShardedStore, partial_path
from gac.data.tiling import (
    PIXEL_ATTRS,
    PIXEL_DIMS,
    PIXEL_DTYPES,
    SPLITS,
    SceneWindows,
    plan_windows,
    scene_windows,
    subset_tiles,
    tiles_coords,
)
from gac.digest import json_digest

log = logging.getLogger(__name__)
SCAN_BATCH = 16  # pairs per pass-1 task: fewer round trips between processes, still a fine-grained spread


def plan_digest(catalogue: dict, tile: TileParams, seed: int, max_tiles: int | None, s2_offset, attrs: dict) -> str:
    """What a store's plan and pixels follow from: a partial store with another digest cannot be resumed."""
    return json_digest(
        {
            "catalogue": json_digest(catalogue),
            "tile": tile.model_dump(mode="json", exclude={"workers"}),
            "seed": seed,
            "max_tiles": max_tiles,
            "s2_offset": s2_offset,
            "attrs": attrs,
        }
    )


def _scan(job: tuple) -> list[SceneWindows]:
    """Pass 1 (in a worker): the windows of a few pairs, their pixels dropped as soon as they are judged."""
    kind, root, tile, s2_offset, entries = job
    reader = open_reader(kind, root)
    out = []
    for entry in entries:
        scene, codes = reader.read(entry, s2_offset)
        out.append(scene_windows(scene, tile, codes is not None))
    return out


def _write(job: tuple) -> int:
    """Pass 2 (in a worker): read the pairs of one shard, cut its tiles, write the shard and mark it done."""
    store, kind, root, s2_offset, size, names, shard, tiles = job
    reader = open_reader(kind, root)
    arrays = {
        name: np.empty((len(tiles), *shape, size, size), dtype=PIXEL_DTYPES[name])
        for name, shape in (("s1", (2,)), ("s2", (12,)), ("landcover", ()))
        if name in names
    }
    current = scene = codes = None
    for i, (entry, row, col) in enumerate(tiles):
        if entry.name != current:  # a shard's tiles come scene by scene: each pair is read once per shard
            (scene, codes), current = reader.read(entry, s2_offset), entry.name
        window = (slice(row, row + size), slice(col, col + size))
        arrays["s1"][i] = scene.s1[(slice(None), *window)]
        arrays["s2"][i] = scene.s2[(slice(None), *window)]
        if "landcover" in arrays:
            arrays["landcover"][i] = UNKNOWN if codes is None else codes[window]
    store.write_shard(shard, arrays)
    return shard


@contextmanager
def _pool(workers: int):
    """Worker processes (spawned: they start small, not as copies of the parent's records), or None for 1."""
    if workers <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def _ordered(pool, fn, jobs, ahead: int):
    """fn over jobs, results in order, at most `ahead` jobs queued at a time (not the whole archive's)."""
    if pool is None:
        yield from map(fn, jobs)
        return
    pending = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _plan(catalogue: dict, entries: list[Entry], tile: TileParams, seed: int, max_tiles, s2_offset, pool, ahead):
    """Pass 1 and planning: (records, dropped, scene windows)."""
    kind, root = catalogue["kind"], Path(catalogue["root"])
    batches = (entries[i : i + SCAN_BATCH] for i in range(0, len(entries), SCAN_BATCH))
    scenes = [
        w for batch in _ordered(pool, _scan, ((kind, root, tile, s2_offset, b) for b in batches), ahead) for w in batch
    ]
    scene_splits = {e.name: OFFICIAL_SPLITS[e.split] for e in entries} if catalogue["official_split"] else None
    records, dropped = plan_windows(scenes, tile, seed, scene_splits)
    if max_tiles is not None:
        records = subset_tiles(records, max_tiles, seed)
    return records, dropped, scenes


def _create(
    partial: Path,
    records: list[dict],
    attrs: dict,
    hot: np.ndarray,
    label_names: list[str],
    size: int,
    pixel_vars: tuple[str, ...],
    shard_tiles: int,
) -> None:
    """The store's skeleton: coordinates, attributes and labels as gac.data.store.write_store writes them, and the
    pixel arrays empty, sharded along `tile` as write_store shards them."""
    import xarray as xr
    import zarr
    from xarray.backends.zarr import FillValueCoder

    ds = xr.Dataset(coords=tiles_coords(records), attrs=attrs)
    ds["labels"] = (("tile", "label"), hot)
    ds = ds.assign_coords(label=np.array(label_names, dtype=object))
    ds["labels"].attrs.update(
        long_name=f"the archive's multi-label land cover of the tile's patch ({len(label_names)} classes)"
    )
    ds.to_zarr(partial, mode="w", zarr_format=3, consolidated=False)
    group = zarr.open_group(partial, mode="a")
    coordinates = group["labels"].attrs["coordinates"]  # xarray's: the per-tile coordinates every tile variable has
    bands = {"s1_band": ds.sizes["s1_band"], "band": ds.sizes["band"], "y": size, "x": size}
    for name in pixel_vars:
        dims = PIXEL_DIMS[name]
        shape = (len(records), *(bands[d] for d in dims[1:]))
        dtype = np.dtype(PIXEL_DTYPES[name])
        extra = {"_FillValue": FillValueCoder.encode(np.nan, dtype)} if dtype.kind == "f" else {}
        group.create_array(
            name,
            shape=shape,
            chunks=(1, *shape[1:]),
            shards=(shard_tiles, *shape[1:]),
            dtype=dtype,
            fill_value=np.nan if dtype.kind == "f" else 0,
            dimension_names=list(dims),
            attributes={**PIXEL_ATTRS[name], "coordinates": coordinates, **extra},
        )


def _planned(partial: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A partial store's plan: each tile's scene, row and column offsets."""
    import zarr

    group = zarr.open_group(partial, mode="r")
    return [str(s) for s in group["scene"][:]], group["row_off"][:], group["col_off"][:]


def _new_store(catalogue, entries, out, tile, seed, attrs, max_tiles, s2_offset, key, pool, ahead):
    """Pass 1, planning, and the partial store created from the plan: (store, each tile's scene, rows, cols).
    The records are dropped on return: pass 2 needs only where each tile lies."""
    records, dropped, scenes = _plan(catalogue, entries, tile, seed, max_tiles, s2_offset, pool, ahead)
    attrs = {
        **attrs,
        **key,
        "s1_product": open_reader(catalogue["kind"], Path(catalogue["root"])).s1_product,
        "tile_size": tile.size,
        "tile_stride": tile.stride,
        "scenes": [s.name for s in scenes],
        "source": f"{catalogue['kind']} {catalogue['version']}",
        "split_rule": "official" if catalogue["official_split"] else "map blocks",
        **{f"dropped_{k}": v for k, v in dropped.items()},
    }
    pixel_vars = ("s1", "s2")
    if any(s.has_landcover for s in scenes):
        classes = sorted(catalogue["landcover_classes"].items(), key=lambda kv: int(kv[0]))
        attrs["landcover_classes"] = {str(k): v for k, v in classes}
        pixel_vars += ("landcover",)
    labels = {e.name: e.labels for e in entries}
    hot = np.zeros((len(records), len(catalogue["label_names"])), dtype=bool)
    for i, record in enumerate(records):
        hot[i, list(labels[record["scene"]])] = True
    store = ShardedStore(out, len(records), tile.shard_tiles, key)
    store.open(
        lambda partial: _create(
            partial, records, attrs, hot, catalogue["label_names"], tile.size, pixel_vars, store.shard_tiles
        )
    )
    rows, cols = (np.array([r[name] for r in records], dtype=np.int32) for name in ("row_off", "col_off"))
    return store, [r["scene"] for r in records], rows, cols


def make_archive_tiles(
    catalogue: dict,
    out: Path,
    tile: TileParams,
    seed: int,
    attrs: dict,
    max_tiles: int | None = None,
    s2_offset: int | str = "auto",
) -> dict:
    """tiles.zarr from a catalogued archive: the tiles, splits and subset of gac.data.tiling.make_tiles, plus the
    archive's labels per tile (`labels`, tile x label, with the `label` names) and its split when `data.split:
    official`. Returns a summary for the log."""
    import xarray as xr

    out = Path(out)
    kind, root = catalogue["kind"], Path(catalogue["root"])
    entries = catalogue_entries(catalogue)
    by_name = {e.name: e for e in entries}
    key = {"plan_digest": plan_digest(catalogue, tile, seed, max_tiles, s2_offset, attrs)}
    workers = tile.worker_count()
    ahead = 4 * workers
    with _pool(workers) as pool:
        if ShardedStore.resumable(out, key):
            scene_of, rows, cols = _planned(partial_path(out))
            store = ShardedStore(out, len(scene_of), tile.shard_tiles, key)
            store.open(None)
            done = store.n_shards - len(store.pending_shards())
            log.info("resuming %s: %d of %d shard(s) already written", store.partial, done, store.n_shards)
        else:
            if partial_path(out).exists():
                log.info("%s: left by a run planned from another catalogue or params; starting over", partial_path(out))
            store, scene_of, rows, cols = _new_store(
                catalogue, entries, out, tile, seed, attrs, max_tiles, s2_offset, key, pool, ahead
            )
        pixel_vars = tuple(n for n in PIXEL_DIMS if (store.partial / n).is_dir())

        def jobs():
            for shard in store.pending_shards():
                window = range(store.shard_slice(shard).start, store.shard_slice(shard).stop)
                tiles = [(by_name[scene_of[i]], int(rows[i]), int(cols[i])) for i in window]
                yield store, kind, root, s2_offset, tile.size, pixel_vars, shard, tiles

        for _ in _ordered(pool, _write, jobs(), ahead):
            pass
    store.finalize()
    with xr.open_zarr(out) as ds:
        split = ds["split"].values.astype(object)
        summary = {
            "tiles": int(ds.sizes["tile"]),
            **{s: int((split == s).sum()) for s in SPLITS},
            **{k: v for k, v in ds.attrs.items() if k.startswith("dropped_")},
        }
        source = ds.attrs["source"]
    log.info("wrote %s from %s: %s", out, source, summary)
    return summary
