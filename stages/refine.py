"""`gac refine`: apply the trained stage-2 refiner to every tile (data/opt_v2.zarr).

Reads the model from data/stage2/ (built from its own stage2.json) and only
`stage2.infer` from params, so changing how inference runs never retrains.
Resumes an interrupted run with the same model and settings.
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
    model: Annotated[Path, typer.Option(help="trained stage-2 directory (train-stage2's output)")] = Path(
        "data/stage2"
    ),
    tiles: Annotated[Path, typer.Option(help="tile store (s1, month, lat/lon, georeference)")] = Path(
        "data/tiles.zarr"
    ),
    opt_v1: Annotated[Path, typer.Option(help="stage-1 prediction store to refine")] = Path("data/opt_v1.zarr"),
    out: Annotated[Path, typer.Option(help="prediction store to write")] = Path("data/opt_v2.zarr"),
) -> None:
    """Refine opt_v1 into opt_v2 = opt_v1 + the refiner's residual, same tiles and georeference."""
    p = load_torch_params(params)
    from gac import __version__
    from gac.refine.infer import refine_store

    summary = refine_store(model, tiles, opt_v1, out, p.stage2.infer, p.tile.shard_tiles, {"gac_version": __version__})
    typer.echo(f"{out}: {summary['tiles']} tile(s) refined in {summary['shards']} shard(s)", err=True)
