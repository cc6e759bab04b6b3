"""`gac ground`: generate opt_v3 with the trained LoRA, shard by shard, resumable.

Generation is stage 1's engine (gac.terramind.generate: iterative token
decoding with temperature/top-k/top-p, then the uncapped diffusion decoder)
run on TerraMind with stage 3's adapter and S1 + an optical store as inputs.
The optical input is opt_v2 normally; opt_v1 for the evaluation's ablation
"stage 3 on opt_v1, skipping stage 2". Each tile gets its own seed, so an
output does not depend on batch size or on where a killed run resumed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gac.errors import GacError

log = logging.getLogger(__name__)


def load_grounding_model(params, adapter_root: Path, tile_size: int, device: str = "cpu"):
    """The stage-3 TerraMind (S1 + S2L2A inputs) with the trained adapter, frozen; returns (peft model, adapter record)."""
    from gac.tuning.lora import load_adapter, read_adapter_record
    from gac.terramind import TARGET, build_generator

    s3 = params.stage3
    record = read_adapter_record(adapter_root)
    inputs = [params.stage1.input, TARGET]
    if record.get("inputs") != inputs:
        raise GacError(f"{adapter_root}: adapter was trained on inputs {record.get('inputs')} but grounding uses {inputs}; "
                       "re-run `gac train-stage3`")
    bare = build_generator(s3.model, inputs=inputs, weights=s3.weights, tile_size=tile_size, seed=params.seed, key="stage3.weights")
    if record.get("weights") != bare.gac_weights.describe():
        raise GacError(f"{adapter_root}: adapter was trained on weights '{record.get('weights')}' but stage3.weights is "
                       f"'{bare.gac_weights.describe()}'; re-run `gac train-stage3` or set stage3.weights back")
    net = load_adapter(bare, adapter_root, s3.model).to(device).eval()
    return net, record


def ground(params, tiles: Path, optical: Path, adapter_root: Path, out: Path, input_label: str = "v2") -> dict[str, Any]:
    """Write `out` (opt_v3) from tiles.zarr's S1 and `optical`'s S2L2A; returns the output attrs."""
    from gac.data.store import PredictionStore, check_aligned, open_store
    from gac.device import resolve_device
    from gac.tuning.lora import read_adapter_record
    from gac.tuning.train import check_s1_product
    from gac.params import json_digest

    tiles, optical, out, adapter_root = Path(tiles), Path(optical), Path(out), Path(adapter_root)
    tiles_ds = open_store(tiles, need=("s1", "s2"), what="tiles store")
    optical_ds = open_store(optical, need=("s2",), what=f"opt_{input_label} store")
    check_aligned(tiles_ds, optical_ds, tiles, optical)
    check_s1_product(tiles_ds, tiles, params.stage1.input)
    read_adapter_record(adapter_root)  # a missing adapter is named before torch is even imported

    import torch

    from gac.terramind import TARGET, Decoding, generate, iter_batches, tile_seed

    s3, s1_name = params.stage3, params.stage1.input
    infer = s3.infer
    device = resolve_device(infer.device, key="stage3.infer.device")
    net, record = load_grounding_model(params, adapter_root, int(tiles_ds.sizes["y"]), device)
    model = net.get_base_model()
    decoding = Decoding(**infer.sampling(), capped=False)
    # What this output depends on besides the adapter (whose own hash follows): the keys dvc.yaml gives `ground`.
    reads = {"seed": params.seed, "input": s1_name, "model": s3.model, "weights": s3.weights, "infer": infer.model_dump(mode="json")}
    attrs = {
        "stage": "ground",
        "input": f"opt_{input_label}",
        "params_hash": f"{json_digest(reads)}-{input_label}-{record.get('params_hash')}",
        "model": s3.model,
        "adapter": str(adapter_root),
        "adapter_params_hash": record.get("params_hash"),
        **model.gac_weights.provenance(),
        "decoding": str(decoding),
    }
    store = PredictionStore(out, like=tiles_ds, attrs=attrs, shard_tiles=params.tile.shard_tiles)
    done = store.open()
    if done:
        log.info("%s: resuming, %d of %d shard(s) already written", out, done, store.n_shards)
    tile_ids = tiles_ds["tile"].values.astype(str)
    s1_all, opt_all = tiles_ds["s1"], optical_ds["s2"]
    for shard in store.pending_shards():
        window = store.shard_slice(shard)
        values = np.empty((window.stop - window.start, 12, tiles_ds.sizes["y"], tiles_ds.sizes["x"]), dtype=np.float32)
        for batch in iter_batches(range(window.start, window.stop), infer.batch_size):
            s1 = np.asarray(s1_all[batch].values, dtype=np.float32)
            opt = np.asarray(opt_all[batch].values, dtype=np.float32)
            inputs = {s1_name: torch.from_numpy(s1), TARGET: torch.from_numpy(opt)}  # NaN reads as the mean (gac.terramind.standardize_filled)
            seeds = [tile_seed(params.seed, tile_ids[i]) for i in batch]
            pred = generate(model, inputs, seeds, decoding, infer.precision).float().cpu().numpy()
            # No output where the radar saw nothing: stage 3 is grounded in S1.
            pred = np.where(np.isnan(s1).any(axis=1, keepdims=True), np.nan, pred)
            values[batch[0] - window.start : batch[-1] - window.start + 1] = pred
        store.write_shard(shard, values)
        log.info("%s: shard %d/%d written", out, shard + 1, store.n_shards)
    store.finalize()
    return attrs
