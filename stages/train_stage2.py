"""`gac train-stage2`: fit the Prithvi-EO-2.0 + LoRA refiner on tiles.zarr + opt_v1.zarr (stage2 params).

Writes data/stage2/ (peft adapter, head weights, stage2.json) and DVCLive
metrics and plots under data/live/stage2. An interrupted run resumes from its
last checkpoint (data/checkpoints/stage2, kept outside DVC's outs) when the
params and inputs are unchanged. Several GPUs: set stage2.devices / strategy
(e.g. devices: 2, strategy: ddp); the command stays the same.
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
    tiles: Annotated[Path, typer.Option(help="tile store (s1, ground-truth s2, split, month, lat/lon)")] = Path(
        "data/tiles.zarr"
    ),
    opt_v1: Annotated[Path, typer.Option(help="stage-1 prediction store (s2)")] = Path("data/opt_v1.zarr"),
    out: Annotated[Path, typer.Option(help="directory for the adapter, head weights and JSON record")] = Path(
        "data/stage2"
    ),
    live: Annotated[Path, typer.Option(help="DVCLive directory (metrics, step plots)")] = Path("data/live/stage2"),
    checkpoints: Annotated[
        Path, typer.Option(help="checkpoint root, outside DVC's outs so an interrupted run resumes")
    ] = Path("data/checkpoints"),
) -> None:
    """Train stage 2 (LoRA on a frozen, optionally 8-bit Prithvi backbone + a FiLM-conditioned dense head)."""
    p = load_torch_params(params)
    from gac.refine.train import train_stage2

    record = train_stage2(p.stage2, p.seed, tiles, opt_v1, out, live, checkpoints)
    if not record["exported"]:  # a DDP rank other than 0
        return
    counts = record["parameters"]
    typer.echo(
        f"{out}: best val loss {record['best_val_loss']}, {record['global_step']} step(s); trainable "
        f"{counts['trainable']} of {counts['total']} parameters ({100 * counts['trainable_share']:.2f}%)",
        err=True,
    )
