"""tiles.zarr -> opt_v1.zarr: frozen TerraMind S1 -> S2L2A over a whole store, through the one store runner.

gac.runner does the shards, batches, resume and torchrun ranks; this module checks the tiles, builds the
generator (with stage 1's fine-tuned adapter when `stage1_finetune.enabled`) and says what the store records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gac import __version__ as gac_version
from gac.digest import params_hash
from gac.errors import GacError
from gac.terramind import INPUT_BANDS, Decoding, check_s1_product

PARAM_SECTIONS = ["seed", "tile", "stage1"]


def decoding_of(stage1) -> Decoding:
    return Decoding(**stage1.sampling(), capped=stage1.capped_decoder)


def check_tiles(ds, path: Path, modality: str) -> int:
    """The S1 input must match what the model takes; returns the tile side in px."""
    bands = INPUT_BANDS[modality]
    have = [str(b) for b in ds.s1_band.values] if "s1_band" in ds.coords else []
    if ds.sizes.get("s1_band") != len(bands):
        raise GacError(
            f"{path}: s1 has {ds.sizes.get('s1_band')} band(s) {have}; TerraMind {modality} takes {len(bands)} "
            f"({', '.join(bands)}); re-tile from S1 with {', '.join(bands)}"
        )
    if have and have != list(bands):
        raise GacError(
            f"{path}: s1 bands are {have}; TerraMind {modality} takes them in the order {list(bands)}; re-tile"
        )
    check_s1_product(ds, path, modality)
    size_y, size_x = ds.sizes["y"], ds.sizes["x"]
    if size_y != size_x or size_y % 16:
        raise GacError(
            f"{path}: tiles are {size_y}x{size_x} px; TerraMind takes square tiles a multiple of 16 px; re-tile with "
            f"tile.size: {max(16, size_y // 16 * 16)}"
        )
    if ds.sizes["tile"] == 0:
        raise GacError(f"{path}: holds no tiles; check tile.max_nodata and the scenes")
    return size_y


def output_attrs(params, model, device) -> dict[str, Any]:
    from gac.device import run_dtype

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
        "compute_dtype": run_dtype(device, stage1.infer.precision),  # what ran, not what precision asked for
    }


def run_generate(
    params, tiles_path: Path, out_path: Path, progress: bool = True, finetune_dir: Path | None = None
) -> dict[str, Any]:
    """Generate opt_v1 for every tile of `tiles_path` into `out_path`; returns a small summary (on every rank).

    With `stage1_finetune.enabled: true` the generator carries the LoRA adapter that
    `gac finetune-stage1` left in `finetune_dir`
    (gac.finetune.handover.stage1_generator); otherwise it is TerraMind as loaded.
    """
    from gac.finetune.handover import stage1_generator
    from gac.runner import StoreInputs, predict_store, start_ranks
    from gac.terramind import TerraMindPredictor, build_generator

    stage1 = params.stage1
    inputs = StoreInputs(Path(tiles_path))
    opened = inputs.open()
    size = check_tiles(opened[0], inputs.tiles, stage1.input)
    ranks, device = start_ranks(stage1.infer.device, "stage1.infer.device")
    try:
        model = build_generator(stage1.model, [stage1.input], stage1.weights, tile_size=size, seed=params.seed)
        model = stage1_generator(model, params, Path(finetune_dir) if finetune_dir else None).eval().to(device)
        predict = TerraMindPredictor(model, stage1.input, decoding_of(stage1), stage1.infer.precision)
        return predict_store(
            predict,
            inputs,
            out_path,
            output_attrs(params, model, device),
            ranks=ranks,
            seed=params.seed,
            batch_size=stage1.infer.batch_size,
            shard_tiles=params.tile.shard_tiles,
            progress=progress,
            name="generate",
            opened=opened,
        )
    finally:
        ranks.close()
