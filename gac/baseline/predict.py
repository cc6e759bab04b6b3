"""`predict-baseline`: tiles.zarr's S1 -> data/baseline.zarr with the trained U-Net, in the prediction-store format.

Same tiles, coordinates and georeference as tiles.zarr, written shard by shard
through PredictionStore (resumable, renamed into place when whole). Pixels
where S1 has no data stay NaN. With `baseline.enabled: false` the store holds
no prediction, only `enabled: false` in its attributes; evaluate skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from gac.baseline.params import BaselineInferParams
from gac.data.store import PredictionStore, S2_BANDS, open_store, partial_path, replace_dir
from gac.device import resolve_device

log = logging.getLogger(__name__)


def output_hash(infer: BaselineInferParams, record: dict[str, Any]) -> str:
    payload = {"infer": infer.model_dump(mode="json"), "model": {k: record.get(k) for k in ("config", "seed", "statistics", "best_val_loss", "global_step")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_disabled_store(out: Path, attrs: dict[str, Any]) -> None:
    """A store that says the baseline was switched off (DVC needs the out; evaluate reads `enabled`)."""
    import xarray as xr

    from gac.data.store import consolidate

    out = Path(out)
    tmp = partial_path(out)
    xr.Dataset(attrs={**attrs, "stage": "predict-baseline", "enabled": False}).to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    consolidate(tmp)
    replace_dir(tmp, out)


def predict_store(model_dir: Path, tiles: Path, out: Path, infer: BaselineInferParams, shard_tiles: int, attrs: dict[str, Any]) -> dict[str, Any]:
    """Write `out` from tiles.zarr's S1; returns a summary. Resumes an interrupted run with the same model and settings."""
    import torch

    from gac.baseline.saved import load_baseline, read_record

    tiles = Path(tiles)
    if read_record(model_dir).get("enabled") is False:
        write_disabled_store(out, attrs)
        return {"tiles": 0, "shards": 0, "resumed_shards": 0, "out": str(out), "enabled": False}
    tiles_ds = open_store(tiles, need=("s1",), what="tiles store")
    net, record = load_baseline(model_dir)
    device = resolve_device(infer.accelerator, key="baseline.infer.accelerator")
    net.to(device)
    store_attrs = {
        **attrs,
        "stage": "predict-baseline",
        "enabled": True,
        "model": record["model"],
        "weights": record["weights"],
        "random_weights": False,
        "params_hash": output_hash(infer, record),
        "model_dir": str(model_dir),
        "inputs": json.dumps({"tiles": str(tiles)}),
    }
    store = PredictionStore(Path(out), tiles_ds, store_attrs, shard_tiles, bands=S2_BANDS)
    done = store.open()
    if done:
        log.info("resuming %s: %d of %d shard(s) already written", out, done, store.n_shards)
    for shard in store.pending_shards():
        window = store.shard_slice(shard)
        s1 = torch.from_numpy(np.asarray(tiles_ds["s1"].isel(tile=window).values, dtype=np.float32))
        with torch.no_grad():
            outputs = [net(s1[start : start + infer.batch_size].to(device)).float().cpu().numpy() for start in range(0, s1.shape[0], infer.batch_size)]
        store.write_shard(shard, np.concatenate(outputs))
    path = store.finalize()
    return {"tiles": store.n_tiles, "shards": store.n_shards, "resumed_shards": done, "out": str(path), "enabled": True}
