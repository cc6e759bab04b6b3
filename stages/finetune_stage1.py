"""`gac finetune-stage1`: fine-tune stage 1's generator (S1 -> S2L2A) with LoRA through TerraMind's differentiable path.

Params: `stage1_finetune` (whether, LoRA, loss, training knobs) and stage 1's
model, weights and input. With `stage1_finetune.enabled: false` (the default)
it writes in seconds a record saying stage 1 stays frozen, since DVC runs
every stage; `gac generate` then uses TerraMind as loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, load_torch_params, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    tiles: Annotated[Path, typer.Option(help="tiles store (S1, ground truth, splits)")] = Path("data/tiles.zarr"),
    out: Annotated[Path, typer.Option(help="adapter directory `gac generate --finetune` reads")] = Path(
        "data/stage1_finetune"
    ),
    live: Annotated[Path, typer.Option(help="DVCLive directory (metrics, step plots)")] = Path(
        "data/live/stage1_finetune"
    ),
    checkpoints: Annotated[
        Path, typer.Option(help="checkpoint root, outside DVC's outs so an interrupted run resumes")
    ] = Path("data/checkpoints"),
) -> None:
    """Train stage 1's LoRA adapter (or record that stage 1 stays frozen)."""
    from gac.finetune.handover import stage1_finetune_target, write_disabled

    p = load_torch_params(params)
    if not p.stage1_finetune.enabled:
        write_disabled(out, live)
        typer.echo(f"{out}: stage1_finetune.enabled is false; stage 1 stays frozen, nothing trained")
        return
    from gac.tuning.train import train_adapter

    record = train_adapter(stage1_finetune_target(p), p, tiles, out, live, checkpoints)
    counts = record["parameters"]
    typer.echo(
        f"{out}: stage-1 adapter, {counts['trainable']} trainable parameters, best {record['selected_by']['monitor']} "
        f"{record['selected_by']['best']}"
    )
