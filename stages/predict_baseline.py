"""`gac predict-baseline`: the trained baseline on every tile's S1 -> data/baseline.zarr (prediction-store format).

Reads the model from data/baseline/ and only `baseline.infer` from params, so
changing how inference runs never retrains. Resumes an interrupted run.
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
    model: Annotated[Path, typer.Option(help="trained baseline directory (train-baseline's output)")] = Path(
        "data/baseline"
    ),
    tiles: Annotated[Path, typer.Option(help="tile store (s1, georeference)")] = Path("data/tiles.zarr"),
    out: Annotated[Path, typer.Option(help="prediction store to write")] = Path("data/baseline.zarr"),
) -> None:
    """Translate every tile with the baseline U-Net; same tiles and georeference as tiles.zarr."""
    p = load_torch_params(params)
    from gac import __version__
    from gac.baseline.predict import predict_store

    summary = predict_store(model, tiles, out, p.baseline.infer, p.tile.shard_tiles, {"gac_version": __version__})
    if not summary["enabled"]:
        typer.echo(f"{out}: baseline.enabled is false; an empty store marks the variant as skipped", err=True)
        return
    typer.echo(f"{out}: {summary['tiles']} tile(s) predicted in {summary['shards']} shard(s)", err=True)
