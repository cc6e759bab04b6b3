"""`gac ground`: generate opt_v3 with the trained LoRA through the one store runner (gac.runner).

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

from gac.errors import GacError

log = logging.getLogger(__name__)


def load_grounding_model(params, adapter_root: Path, tile_size: int, device: str = "cpu"):
    """The stage-3 TerraMind (S1 + S2L2A inputs) with the trained adapter, frozen; returns (peft model, adapter
    record)."""
    from gac.terramind import TARGET, build_generator
    from gac.tuning.lora import STAGE3_ADAPTER, checked_adapter_record, load_adapter

    s3 = params.stage3
    inputs = [params.stage1.input, TARGET]
    record = checked_adapter_record(adapter_root, STAGE3_ADAPTER, s3.model, inputs)
    bare = build_generator(
        s3.model, inputs=inputs, weights=s3.weights, tile_size=tile_size, seed=params.seed, key="stage3.weights"
    )
    if record.get("weights") != bare.gac_weights.describe():
        raise GacError(
            f"{adapter_root}: adapter was trained on weights '{record.get('weights')}' but stage3.weights is "
            f"'{bare.gac_weights.describe()}'; re-run `gac train-stage3` or set stage3.weights back"
        )
    net = load_adapter(bare, adapter_root, STAGE3_ADAPTER, inputs).to(device).eval()
    return net, record


def ground(
    params, tiles: Path, optical: Path, adapter_root: Path, out: Path, input_label: str = "v2"
) -> dict[str, Any]:
    """Write `out` (opt_v3) from tiles.zarr's S1 and `optical`'s S2L2A through the one store runner; returns the output
    attrs."""
    from gac.digest import json_digest
    from gac.runner import StoreInputs, predict_store, start_ranks
    from gac.terramind import TARGET, check_s1_product
    from gac.tuning.lora import STAGE3_ADAPTER, checked_adapter_record

    inputs = StoreInputs(Path(tiles), Path(optical), f"opt_{input_label}")
    opened = inputs.open()
    check_s1_product(opened[0], inputs.tiles, params.stage1.input)
    adapter_root = Path(adapter_root)
    # a missing or mismatched adapter is named before torch is even imported
    checked_adapter_record(adapter_root, STAGE3_ADAPTER, params.stage3.model, [params.stage1.input, TARGET])

    from gac.device import run_dtype
    from gac.terramind import Decoding, TerraMindPredictor

    s3 = params.stage3
    infer = s3.infer
    ranks, device = start_ranks(infer.device, "stage3.infer.device")
    try:
        net, record = load_grounding_model(params, adapter_root, int(opened[0].sizes["y"]), device)
        model = net.get_base_model()
        decoding = Decoding(**infer.sampling(), capped=False)
        # What this output depends on besides the adapter (whose own hash follows): the keys dvc.yaml gives `ground`.
        reads = {
            "seed": params.seed,
            "input": params.stage1.input,
            "model": s3.model,
            "weights": s3.weights,
            "infer": infer.model_dump(mode="json"),
        }
        attrs = {
            "stage": "ground",
            "input": f"opt_{input_label}",
            "params_hash": f"{json_digest(reads)}-{input_label}-{record.get('params_hash')}",
            "model": s3.model,
            "adapter": str(adapter_root),
            "adapter_params_hash": record.get("params_hash"),
            **model.gac_weights.provenance(),
            "decoding": str(decoding),
            "compute_dtype": run_dtype(device, infer.precision),  # what ran, not what precision asked for
        }
        predict = TerraMindPredictor(model, params.stage1.input, decoding, infer.precision)
        predict_store(
            predict,
            inputs,
            Path(out),
            attrs,
            ranks=ranks,
            seed=params.seed,
            batch_size=infer.batch_size,
            shard_tiles=params.tile.shard_tiles,
            name=f"ground on opt_{input_label}",
            opened=opened,
        )
        return attrs
    finally:
        ranks.close()
