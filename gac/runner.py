"""One way to run a model over a tile store: in shards, in batches, resumable, split between torchrun ranks.

Every prediction store is made here: opt_v1 (stage 1), opt_v2 (the refiner), opt_v3 and the ablation (stage 3),
and the baseline's. A stage brings a *predictor*, a function of one `Batch` that returns (B, 12, H, W) float32
reflectance x 10^4; `gac translate` calls the same predictors on the crops of a scene (gac.translate.chain), so a
fix to how a stage predicts lands once for the pipeline and for whole scenes.

Work is split in the output store's shards (`tile.shard_tiles` tiles per file): a shard is predicted, written in
one piece and then marked done (gac.data.store.PredictionStore), so a run killed at any moment, SIGKILL included,
resumes with the shards not yet marked. Under `torchrun --nproc-per-node N` each rank takes every N-th pending
shard and writes only its own files; rank 0 renames the store into place once all are done while the others end.
Batches never cross a shard and every tile has its own seeds, so a resumed run writes the same bytes as an
uninterrupted one, and N ranks agree with one process within float kernels' spread.

Where the radar has no data (any S1 band NaN) every stage's output is NaN: the one nodata rule of every store.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from gac.data.store import PredictionStore, check_aligned, open_store

log = logging.getLogger(__name__)

# How long a rank waits at a barrier for the others: torch's default (10 min with NCCL, 30 with gloo) is shorter than
# the work one rank may still have when another finishes (a share of a scene's blocks with uncertainty samples on
# CPU). A rank that dies does not leave the others waiting: torchrun ends the whole group when one process fails.
RANK_WAIT = timedelta(hours=24)
PROGRESS_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining} ETA, {rate_noinv_fmt}]"
)


@dataclass
class Ranks:
    """This process's place among the processes torchrun started (1 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    def connect(self, device) -> None:
        """Join torchrun's process group (NCCL between GPUs, gloo between CPU processes); after the device is set."""
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=RANK_WAIT)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def start_ranks(device_choice: str, key: str) -> tuple[Ranks, Any]:
    """This process's ranks and its device (`device_choice` from params `key`), joined to torchrun's group."""
    from gac.device import resolve_device

    ranks = Ranks.from_env()
    device = resolve_device(device_choice, ranks.local_rank, key=key)
    ranks.connect(device)
    return ranks, device


@dataclass(frozen=True)
class Batch:
    """What any stage may read of a batch of tiles; each predictor takes the fields it needs."""

    s1: np.ndarray  # (B, 2, H, W) float32 backscatter in dB, NaN = nodata (left to the model to fill: gac.nodata)
    month: np.ndarray  # (B,) int64, 1-12, 0 = unknown
    lat: np.ndarray  # (B,) float32 tile centre, degrees
    lon: np.ndarray  # (B,) float32
    token_seeds: Sequence[int]  # TerraMind's token sampling, per tile (and per uncertainty sample)
    noise_seeds: Sequence[int]  # the diffusion decoder's starting noise, per tile
    optical: np.ndarray | None = None  # (B, 12, H, W) reflectance x 10^4: the optical input (opt_v1 or opt_v2)

    @property
    def radar_gap(self) -> np.ndarray:
        """(B, H, W): pixels where any S1 band has no data."""
        return np.isnan(self.s1).any(axis=1)

    def with_optical(self, optical: np.ndarray) -> "Batch":
        return replace(self, optical=optical)


Predictor = Callable[[Batch], np.ndarray]


def no_radar_no_prediction(prediction: np.ndarray, batch: Batch) -> np.ndarray:
    """`prediction` (B, 12, H, W) with NaN wherever the radar has no data, the nodata rule of every output."""
    gap = batch.radar_gap
    if gap.any():
        prediction = np.where(gap[:, None], np.float32(np.nan), prediction)
    return prediction.astype(np.float32, copy=False)


def iter_batches(indices: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of at most `batch_size` of `indices`."""
    batch: list[int] = []
    for index in indices:
        batch.append(index)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class StoreInputs:
    """The stores a prediction reads: tiles.zarr (S1, metadata, georeference) and, for stages 2 and 3, an optical
    store."""

    tiles: Path
    optical: Path | None = None
    optical_label: str = "optical"

    def open(self):
        tiles_ds = open_store(self.tiles, need=("s1",), what="tiles store")
        optical_ds = None
        if self.optical is not None:
            optical_ds = open_store(self.optical, need=("s2",), what=f"{self.optical_label} store")
            check_aligned(tiles_ds, optical_ds, self.tiles, self.optical)
        return tiles_ds, optical_ds


def predict_store(
    predict: Predictor,
    inputs: StoreInputs,
    out: Path,
    attrs: dict[str, Any],
    *,
    ranks: Ranks,
    batch_size: int,
    shard_tiles: int,
    seed: int = 0,
    progress: bool = False,
    name: str = "predict",
    opened=None,
) -> dict[str, Any]:
    """Write `out` from `inputs` with `predict`, this rank's pending shards; rank 0 renames it into place.

    `seed` makes each tile's seeds (gac.terramind.tile_seed), which only sampling predictors use. Returns a summary
    (on every rank). `opened` passes stores the caller already opened for its own checks.
    """
    from tqdm import tqdm

    from gac.terramind import tile_seed

    tiles_ds, optical_ds = opened if opened is not None else inputs.open()
    store = PredictionStore(Path(out), like=tiles_ds, attrs=attrs, shard_tiles=shard_tiles)
    done = 0
    if ranks.rank == 0:
        done = store.open()
        if done:
            log.info("resuming %s: %d of %d shard(s) already written", store.partial, done, store.n_shards)
    ranks.barrier()
    mine = store.pending_shards(ranks.rank, ranks.world)
    ranks.barrier()  # every rank has its list before any rank marks a shard done
    n_mine = sum(store.shard_slice(k).stop - store.shard_slice(k).start for k in mine)
    log.info("rank %d/%d: %d tile(s) in %d shard(s) to %s", ranks.rank, ranks.world, n_mine, len(mine), name)
    ids = [str(t) for t in tiles_ds.tile.values]
    month = tiles_ds["month"].values.astype(np.int64)
    lat, lon = tiles_ds["lat"].values.astype(np.float32), tiles_ds["lon"].values.astype(np.float32)
    size_y, size_x = tiles_ds.sizes["y"], tiles_ds.sizes["x"]
    started = time.perf_counter()
    bar = tqdm(
        total=n_mine,
        unit="tile",
        desc=f"{name}[{ranks.rank}]",
        disable=not progress,
        position=ranks.rank,
        dynamic_ncols=True,
        bar_format=PROGRESS_FORMAT,
    )
    with bar:
        for shard in mine:
            window = store.shard_slice(shard)
            s1 = np.asarray(tiles_ds["s1"].isel(tile=window).values, dtype=np.float32)
            optical = (
                None if optical_ds is None else np.asarray(optical_ds["s2"].isel(tile=window).values, dtype=np.float32)
            )
            values = np.empty((len(s1), len(store.bands), size_y, size_x), dtype=np.float32)
            for batch in iter_batches(range(len(s1)), batch_size):
                where = [window.start + i for i in batch]
                seeds = [tile_seed(seed, ids[i]) for i in where]
                tiles = Batch(
                    s1=s1[batch],
                    month=month[where],
                    lat=lat[where],
                    lon=lon[where],
                    token_seeds=seeds,
                    noise_seeds=seeds,
                    optical=None if optical is None else optical[batch],
                )
                values[batch] = no_radar_no_prediction(predict(tiles), tiles)
                bar.update(len(batch))
            store.write_shard(shard, values)
    seconds = time.perf_counter() - started
    ranks.barrier()  # every shard is on disk; the other ranks end while rank 0 renames the store into place
    if ranks.rank == 0:
        store.finalize()
        log.info("wrote %s (%d tiles)", out, store.n_tiles)
    return {
        "tiles": n_mine,
        "shards": len(mine),
        "resumed_shards": done,
        "seconds": seconds,
        "tiles_per_s": n_mine / seconds if seconds else 0.0,
        "out": str(out),
    }
