"""`predict-baseline`: tiles.zarr's S1 -> data/baseline.zarr with the trained U-Net, in the prediction-store format.

Same tiles, coordinates and georeference as tiles.zarr, written shard by shard
through PredictionStore (resumable, renamed into place when whole). Pixels
where S1 has no data stay NaN. With `baseline.enabled: false` the store holds
no prediction, only `enabled: false` in its attributes; evaluate skips it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gac.baseline.params import BaselineInferParams
from gac.data.store import partial_path, replace_dir
from gac.digest import prediction_hash

log = logging.getLogger(__name__)

# what identifies a trained baseline in its record (its output store's hash follows them)
BASELINE_KEYS = ("config", "seed", "statistics", "best_val_loss", "global_step")


class BaselinePredictor:
    """A batch (gac.runner.Batch) -> the U-Net's S2 L2A from its S1, (B, 12, H, W) float32."""

    def __init__(self, net, device):
        self.net, self.device = net.to(device).eval(), device

    def __call__(self, batch):
        import numpy as np
        import torch

        with torch.no_grad():
            return (
                self.net(torch.from_numpy(np.ascontiguousarray(batch.s1, dtype=np.float32)).to(self.device))
                .float()
                .cpu()
                .numpy()
            )


def write_disabled_store(out: Path, attrs: dict[str, Any]) -> None:
    """A store that says the baseline was switched off (DVC needs the out; evaluate reads `enabled`)."""
    import xarray as xr

    from gac.data.store import consolidate

    out = Path(out)
    tmp = partial_path(out)
    xr.Dataset(attrs={**attrs, "stage": "predict-baseline", "enabled": False}).to_zarr(
        tmp, mode="w", zarr_format=3, consolidated=False
    )
    consolidate(tmp)
    replace_dir(tmp, out)


def predict_store(
    model_dir: Path, tiles: Path, out: Path, infer: BaselineInferParams, shard_tiles: int, attrs: dict[str, Any]
) -> dict[str, Any]:
    """Write `out` from tiles.zarr's S1; returns a summary. Resumes an interrupted run with the same model and
    settings."""
    from gac.baseline.saved import load_baseline, read_record
    from gac.runner import StoreInputs, start_ranks
    from gac.runner import predict_store as run

    if read_record(model_dir).get("enabled") is False:
        write_disabled_store(out, attrs)
        return {"tiles": 0, "shards": 0, "resumed_shards": 0, "out": str(out), "enabled": False}
    inputs = StoreInputs(Path(tiles))
    opened = inputs.open()
    ranks, device = start_ranks(infer.device, "baseline.infer.device")
    try:
        net, record = load_baseline(model_dir)
        store_attrs = {
            **attrs,
            "stage": "predict-baseline",
            "enabled": True,
            "model": record["model"],
            "weights": record["weights"],
            "random_weights": False,
            "params_hash": prediction_hash(infer, record, BASELINE_KEYS),
            "model_dir": str(model_dir),
            "inputs": json.dumps({"tiles": str(tiles)}),
        }
        summary = run(
            BaselinePredictor(net, device),
            inputs,
            Path(out),
            store_attrs,
            ranks=ranks,
            batch_size=infer.batch_size,
            shard_tiles=shard_tiles,
            name="predict-baseline",
            opened=opened,
        )
        return {**summary, "enabled": True}
    finally:
        ranks.close()
