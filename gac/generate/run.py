"""tiles.zarr -> opt_v1.zarr: frozen TerraMind S1 -> S2L2A over a whole store, resumable and shardable.

Work is split in the output store's shards (`tile.shard_tiles` tiles per
file): a shard is generated, written in one piece and then marked done, so a
run killed at any moment (SIGKILL included) resumes with the shards that
were not marked. Under `torchrun --nproc-per-node N` each rank takes every
N-th pending shard and writes only its own files; rank 0 renames the store
into place once all are done. Batches never cross a shard and every tile has
its own seed, so 1 process, N processes and a resumed run write the same
numbers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gac import __version__ as gac_version
from gac.data.store import PredictionStore, open_store
from gac.device import resolve_device  # noqa: F401  (gac.generate.run.resolve_device: the one in gac.device)
from gac.errors import GacError
from gac.params import params_hash
from gac.terramind import INPUT_BANDS, Decoding, build_generator, generate, iter_batches, tile_seed

log = logging.getLogger(__name__)

PARAM_SECTIONS = ["seed", "tile", "stage1"]
# How long a rank waits at a barrier for the others: torch's default (10 min with NCCL, 30 with gloo) is shorter than
# the work one rank may still have when another finishes (a share of a scene's blocks with uncertainty samples on
# CPU). A rank that dies does not leave the others waiting: torchrun ends the whole group when one process fails.
RANK_WAIT = timedelta(hours=24)


@dataclass
class Ranks:
    """This process's place among the processes torchrun started (1 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))

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


def decoding_of(stage1) -> Decoding:
    return Decoding(**stage1.sampling(), capped=stage1.capped_decoder)


def check_tiles(ds, path: Path, modality: str) -> int:
    """The S1 input must match what the model takes; returns the tile side in px."""
    bands = INPUT_BANDS[modality]
    have = [str(b) for b in ds.s1_band.values] if "s1_band" in ds.coords else []
    if ds.sizes.get("s1_band") != len(bands):
        raise GacError(
            f"{path}: s1 has {ds.sizes.get('s1_band')} band(s) {have}; TerraMind {modality} takes {len(bands)} ({', '.join(bands)}); re-tile from S1 with {', '.join(bands)}"
        )
    if have and have != list(bands):
        raise GacError(f"{path}: s1 bands are {have}; TerraMind {modality} takes them in the order {list(bands)}; re-tile")
    product = ds.attrs.get("s1_product")
    if product and product != modality:
        raise GacError(f"{path}: tiles hold {product} but stage1.input is {modality}; set stage1.input: {product}")
    size_y, size_x = ds.sizes["y"], ds.sizes["x"]
    if size_y != size_x or size_y % 16:
        raise GacError(f"{path}: tiles are {size_y}x{size_x} px; TerraMind takes square tiles a multiple of 16 px; re-tile with tile.size: {max(16, size_y // 16 * 16)}")
    if ds.sizes["tile"] == 0:
        raise GacError(f"{path}: holds no tiles; check tile.max_nodata and the scenes")
    return size_y


def output_attrs(params, model) -> dict[str, Any]:
    stage1 = params.stage1
    return {
        "gac_version": gac_version,
        "stage": "generate",
        "model": stage1.model,
        "input": stage1.input,
        **model.gac_weights.provenance(),
        "params_hash": params_hash(params, PARAM_SECTIONS),
        "seed": params.seed,
        "stage1": stage1.model_dump_json(),
        "units": "reflectance x 10^4",
        "capped_decoder": stage1.capped_decoder,
        "finetuned": params.stage1_finetune.enabled,
    }


def run_generate(params, tiles_path: Path, out_path: Path, progress: bool = True, finetune_dir: Path | None = None) -> dict[str, Any]:
    """Generate opt_v1 for every tile of `tiles_path` into `out_path`; returns a small summary (on every rank).

    With `stage1_finetune.enabled: true` the generator carries the LoRA adapter that
    `gac finetune-stage1` left in `finetune_dir`
    (gac.finetune.handover.stage1_generator); otherwise it is TerraMind as loaded.
    """
    from gac.finetune.handover import stage1_generator

    import torch
    from tqdm import tqdm

    stage1 = params.stage1
    tiles_path, out_path = Path(tiles_path), Path(out_path)
    ds = open_store(tiles_path, need=("s1",), what="tiles store")
    size = check_tiles(ds, tiles_path, stage1.input)
    ranks = Ranks.from_env()
    device = resolve_device(stage1.device, ranks.local_rank)
    ranks.connect(device)
    try:
        model = build_generator(stage1.model, [stage1.input], stage1.weights, tile_size=size, seed=params.seed)
        model = stage1_generator(model, params, Path(finetune_dir) if finetune_dir else None).eval().to(device)
        precision = stage1.precision if device.type == "cuda" else "32"
        store = PredictionStore(out_path, like=ds, attrs=output_attrs(params, model), shard_tiles=params.tile.shard_tiles)
        if ranks.rank == 0:
            done = store.open()
            if done:
                log.info("resuming %s: %d of %d shard(s) already written", store.partial, done, store.n_shards)
        ranks.barrier()
        mine = store.pending_shards(ranks.rank, ranks.world)
        ranks.barrier()  # every rank has its list before any rank marks a shard done
        n_mine = sum(store.shard_slice(k).stop - store.shard_slice(k).start for k in mine)
        log.info("rank %d/%d: %d tile(s) in %d shard(s) to generate on %s", ranks.rank, ranks.world, n_mine, len(mine), device)
        ids = [str(t) for t in ds.tile.values]
        decoding = decoding_of(stage1)
        started = time.perf_counter()
        bar = tqdm(
            total=n_mine, unit="tile", desc=f"generate[{ranks.rank}]", disable=not progress, position=ranks.rank, dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining} ETA, {rate_noinv_fmt}]",
        )
        with bar:
            for shard in mine:
                window = store.shard_slice(shard)
                s1 = ds.s1.isel(tile=window).values.astype(np.float32)
                out = np.empty((s1.shape[0], len(store.bands), size, size), dtype=np.float32)
                for batch in iter_batches(range(s1.shape[0]), stage1.batch_size):
                    seeds = [tile_seed(params.seed, ids[window.start + i]) for i in batch]
                    x = torch.from_numpy(s1[batch])
                    out[batch] = generate(model, {stage1.input: x}, seeds, decoding, precision).cpu().numpy()
                    bar.update(len(batch))
                out[np.isnan(s1).any(axis=1)[:, None].repeat(out.shape[1], axis=1)] = np.nan  # no radar, no prediction
                store.write_shard(shard, out)
        seconds = time.perf_counter() - started
        ranks.barrier()  # every shard is on disk; the other ranks end while rank 0 renames the store into place
        if ranks.rank == 0:
            store.finalize()
            log.info("wrote %s (%d tiles)", out_path, store.n_tiles)
    finally:
        ranks.close()
    return {"tiles": n_mine, "shards": len(mine), "seconds": seconds, "tiles_per_s": n_mine / seconds if seconds else 0.0}
