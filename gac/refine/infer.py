"""`refine`: opt_v1.zarr (+ tiles.zarr's S1 and metadata) -> opt_v2.zarr with the trained refiner.

The output keeps tiles.zarr's tile ids, coordinates and georeference, and is
written shard by shard through PredictionStore, so an interrupted run resumes
where it stopped. Pixels with no data in opt_v1 stay NaN.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gac.data.store import PredictionStore, S2_BANDS, check_aligned, open_store
from gac.device import resolve_device
from gac.refine.params import Stage2InferParams

log = logging.getLogger(__name__)


def output_hash(infer: Stage2InferParams, record: dict[str, Any]) -> str:
    """What opt_v2 depends on: the inference settings and the trained model (its config, seed and fingerprint)."""
    payload = {"infer": infer.model_dump(mode="json"), "model": {k: record.get(k) for k in ("config", "seed", "backbone_fingerprint", "best_val_loss", "global_step")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def refine_store(model_dir: Path, tiles: Path, opt_v1: Path, out: Path, infer: Stage2InferParams, shard_tiles: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """Write `out` (opt_v2) from `opt_v1`; returns a summary. Resumes an interrupted run with the same model and settings."""
    from gac.refine.build import load_refiner, read_record

    tiles, opt_v1 = Path(tiles), Path(opt_v1)
    tiles_ds = open_store(tiles, need=("s1", "s2"), what="tiles store")
    v1 = open_store(opt_v1, need=("s2",), what="opt_v1 store")
    check_aligned(tiles_ds, v1, tiles, opt_v1)
    record = read_record(model_dir)
    refiner, loaded = load_refiner(model_dir)
    device = resolve_device(infer.accelerator, key="stage2.infer.accelerator")
    refiner.to(device)
    store_attrs = {
        **attrs,
        "stage": "refine",
        "backbone": record["config"]["backbone"],
        "weights": loaded["weights"],
        "random_weights": loaded["random_weights"],
        "params_hash": output_hash(infer, record),
        "model_dir": str(model_dir),
        # opt_v2 inherits opt_v1's content: say whether stage 1 ran on random weights too.
        "opt_v1_random_weights": bool(v1.attrs.get("random_weights", False)),
        "inputs": json.dumps({"tiles": str(tiles), "opt_v1": str(opt_v1)}),
    }
    store = PredictionStore(Path(out), v1, store_attrs, shard_tiles, bands=S2_BANDS)
    done = store.open()
    if done:
        log.info("resuming %s: %d of %d shard(s) already written", out, done, store.n_shards)
    month = torch.from_numpy(tiles_ds["month"].values.astype(np.int64))
    lat = torch.from_numpy(tiles_ds["lat"].values.astype(np.float32))
    lon = torch.from_numpy(tiles_ds["lon"].values.astype(np.float32))
    for shard in store.pending_shards():
        window = store.shard_slice(shard)
        x = torch.from_numpy(np.asarray(v1["s2"].isel(tile=window).values, dtype=np.float32))
        s1 = torch.from_numpy(np.asarray(tiles_ds["s1"].isel(tile=window).values, dtype=np.float32))
        outputs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], infer.batch_size):
                part = slice(start, start + infer.batch_size)
                index = slice(window.start + part.start, min(window.start + part.start + infer.batch_size, window.stop))
                pred = refiner(
                    x[part].to(device),
                    torch.nan_to_num(s1[part], nan=0.0).to(device),
                    month[index].to(device),
                    lat[index].to(device),
                    lon[index].to(device),
                )
                outputs.append(pred.float().cpu().numpy())
        store.write_shard(shard, np.concatenate(outputs))
    path = store.finalize()
    return {"tiles": store.n_tiles, "shards": store.n_shards, "resumed_shards": done, "out": str(path)}
