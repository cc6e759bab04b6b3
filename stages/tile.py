"""`gac tile`: cut the scene pairs into tiles, split them spatially, and write data/tiles.zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gac.params import DEFAULT_PARAMS, load_params
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(
    params: ParamsOption = DEFAULT_PARAMS,
    scenes: Annotated[Path, typer.Option(help="scene directory (S1RTC|S1GRD/ and S2L2A/)")] = Path("data/scenes"),
    out: Annotated[Path, typer.Option(help="tile store to write")] = Path("data/tiles.zarr"),
) -> None:
    """Tile co-registered S1/S2 scenes into a Zarr store (tile, band, y, x) with georeference and splits."""
    from gac import __version__
    from gac.data.readers import Inputs
    from gac.data.tiling import make_tiles
    from gac.digest import json_digest

    p = load_params(params)
    attrs = {"gac_version": __version__, "stage": "tile", "params_hash": json_digest(reads(p)), "source": str(scenes)}
    summary = make_tiles(
        scenes, out, p.tile, p.seed, attrs, max_tiles=p.data.max_tiles, inputs=Inputs.from_params(p.data)
    )
    typer.echo(f"{out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


def reads(p) -> dict:
    """The params the tile store follows from (its params_hash): not tile.workers, which changes only the speed."""
    return {
        "seed": p.seed,
        "tile": p.tile.model_dump(mode="json", exclude={"workers"}),
        "max_tiles": p.data.max_tiles,
        **p.data.model_dump(mode="json", include={"s1_units", "s1_nodata", "s2_offset"}),
    }
