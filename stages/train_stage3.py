"""`gac train-stage3`: train stage 3's LoRA (S1 + opt_v2 -> S2L2A) through TerraMind's differentiable path (gac.tuning).

Reads `stage3`'s training keys; `stage3.infer` is `gac ground`'s alone.
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
    optical: Annotated[Path, typer.Option(help="optical store conditioning stage 3 (opt_v2)")] = Path(
        "data/opt_v2.zarr"
    ),
    out: Annotated[Path, typer.Option(help="adapter directory")] = Path("data/stage3"),
    live: Annotated[Path, typer.Option(help="DVCLive directory (metrics, step plots)")] = Path("data/live/stage3"),
    checkpoints: Annotated[
        Path, typer.Option(help="checkpoint root, outside DVC's outs so an interrupted run resumes")
    ] = Path("data/checkpoints"),
) -> None:
    """Train the LoRA adapter; writes peft's adapter files and adapter.json (weights, trainable counts)."""
    from gac.ground.job import stage3_target
    from gac.tuning.train import train_adapter

    p = load_torch_params(params)
    job = stage3_target(p, optical)
    record = train_adapter(job, p, tiles, out, live, checkpoints)
    counts = record["parameters"]
    typer.echo(
        f"{out}: {job.stage} adapter, {counts['trainable']} trainable parameters "
        f"({100 * counts['trainable_share']:.4f}%), "
        f"best {record['selected_by']['monitor']} {record['selected_by']['best']}, weights {record['weights']}"
    )
