"""`refine`: opt_v1.zarr (+ tiles.zarr's S1 and metadata) -> opt_v2.zarr with the trained refiner.

The store is written by the one store runner (gac.runner: shards, resume, torchrun ranks); `RefinerPredictor` is
the refiner's call on one batch, which `gac translate` makes too. Pixels with no radar data stay NaN.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gac.digest import prediction_hash
from gac.refine.params import Stage2InferParams

log = logging.getLogger(__name__)

# what opt_v2 depends on besides the inference settings: the trained refiner (config, seed, fingerprint)
REFINER_KEYS = ("config", "seed", "backbone_fingerprint", "best_val_loss", "global_step")


class RefinerPredictor:
    """A batch (gac.runner.Batch, its optical input = opt_v1) -> opt_v2, (B, 12, H, W) float32."""

    def __init__(self, refiner, device):
        self.refiner, self.device = refiner.to(device).eval(), device

    def __call__(self, batch):
        import numpy as np
        import torch

        def tensor(values, dtype):
            return torch.from_numpy(np.ascontiguousarray(values, dtype=dtype)).to(self.device)

        with torch.no_grad():
            pred = self.refiner(
                tensor(batch.optical, np.float32),
                tensor(batch.s1, np.float32),
                tensor(batch.month, np.int64),
                tensor(batch.lat, np.float32),
                tensor(batch.lon, np.float32),
            )
        return pred.float().cpu().numpy()


def refine_store(
    model_dir: Path,
    tiles: Path,
    opt_v1: Path,
    out: Path,
    infer: Stage2InferParams,
    shard_tiles: int,
    attrs: dict[str, Any],
) -> dict[str, Any]:
    """Write `out` (opt_v2) from `opt_v1`; returns a summary. Resumes an interrupted run with the same model and
    settings."""
    from gac.refine.build import load_refiner, read_record
    from gac.runner import StoreInputs, predict_store, start_ranks

    inputs = StoreInputs(Path(tiles), Path(opt_v1), "opt_v1")
    opened = inputs.open()
    record = read_record(model_dir)
    ranks, device = start_ranks(infer.device, "stage2.infer.device")
    try:
        refiner, loaded = load_refiner(model_dir)
        store_attrs = {
            **attrs,
            "stage": "refine",
            "backbone": record["config"]["backbone"],
            "weights": loaded["weights"],
            "random_weights": loaded["random_weights"],
            "params_hash": prediction_hash(infer, record, REFINER_KEYS),
            "model_dir": str(model_dir),
            # opt_v2 inherits opt_v1's content: say whether stage 1 ran on random weights too.
            "opt_v1_random_weights": bool(opened[1].attrs.get("random_weights", False)),
            "inputs": json.dumps({"tiles": str(tiles), "opt_v1": str(opt_v1)}),
        }
        return predict_store(
            RefinerPredictor(refiner, device),
            inputs,
            Path(out),
            store_attrs,
            ranks=ranks,
            batch_size=infer.batch_size,
            shard_tiles=shard_tiles,
            name="refine",
            opened=opened,
        )
    finally:
        ranks.close()
