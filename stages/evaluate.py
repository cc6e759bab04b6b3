"""`gac evaluate`: score every variant on the held-out split; metrics, per-tile table, quicklooks and COGs
(data/eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, load_torch_params, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    tiles: Annotated[Path, typer.Option(help="tile store with ground truth (s1, s2, split)")] = Path("data/tiles.zarr"),
    data_dir: Annotated[Path, typer.Option(help="directory holding the variant stores <name>.zarr")] = Path("data"),
    out: Annotated[Path, typer.Option(help="directory for metrics.json, per_tile.csv, quicklooks/, cogs/")] = Path(
        "data/eval"
    ),
) -> None:
    """Compare opt_v1, opt_v2, opt_v3, stage 3 on v1 and the tokenizer ceiling with the ground truth (evaluate
    params)."""
    p = load_torch_params(params)
    from gac.evaluate.report import results_table
    from gac.evaluate.run import EvalPaths, evaluate

    metrics = evaluate(p, EvalPaths(tiles=tiles, data_dir=data_dir, out_dir=out))
    typer.echo(results_table(metrics))
    if metrics.get("random_weights"):
        typer.echo(
            f"WARNING: random weights in {', '.join(metrics['random_weight_variants'])}: these numbers show the "
            "pipeline working, not the models' skill",
            err=True,
        )
