"""`gac translate`: S1 scenes of any size -> seamless, georeferenced S2 L2A COGs (+ uncertainty, cloud gap-filling).

The product of the pipeline: the trained stages run on a new radar scene that
has no optical partner. Models come from the DVC stages' outputs (overridable
per stage); the `translate` params section holds every knob.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gac.params import DEFAULT_PARAMS
from stages.common import ParamsOption, user_errors_as_one_line


@user_errors_as_one_line
def main(
    inputs: Annotated[
        Optional[list[Path]],
        typer.Argument(
            help="S1 GeoTIFFs (VV, VH; or <name>_VV.tif, which brings its _VH partner) or directories of them; "
            "default: translate.scenes",
            show_default=False,
        ),
    ] = None,
    vv: Annotated[Optional[Path], typer.Option("--vv", help="one scene's VV GeoTIFF (with --vh)")] = None,
    vh: Annotated[Optional[Path], typer.Option("--vh", help="one scene's VH GeoTIFF (with --vv)")] = None,
    s1_units: Annotated[
        Optional[str],
        typer.Option(
            "--s1-units", help="units of the S1 files: db, linear (power) or amplitude; default data.s1_units"
        ),
    ] = None,
    s1_nodata: Annotated[
        Optional[float],
        typer.Option("--s1-nodata", help="S1 value meaning nodata, in the files' units; default data.s1_nodata"),
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory: <stem>.tif, <stem>.png, <stem>_uncertainty.tif")] = Path(
        "data/translate"
    ),
    until: Annotated[
        Optional[str], typer.Option(help="last stage: v1, v2, v3 (full pipeline) or baseline; default translate.until")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    uncertainty: Annotated[
        Optional[int],
        typer.Option(help="N >= 2 token-sampling runs: per-pixel mean, and <stem>_uncertainty.tif (per-band std)"),
    ] = None,
    fill_s2: Annotated[
        Optional[Path],
        typer.Option(
            "--fill-s2",
            help="S2 L2A scene on the same grid (a 12-band stack, or a folder of its band files at "
            "10/20/60 m): its clear pixels are kept, clouds filled",
        ),
    ] = None,
    cloud_mask: Annotated[
        Optional[Path],
        typer.Option(
            "--cloud-mask",
            help="SCL layer at 10 or 20 m (translate.cloud_classes are filled), or a 0/1 or 0/255 mask "
            "(1 or 255 is filled)",
        ),
    ] = None,
    date: Annotated[
        Optional[str],
        typer.Option(help="acquisition date YYYY-MM-DD when the scene's tags lack one (the refiner's month)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing outputs")] = False,
    stage1_finetune: Annotated[
        Path, typer.Option("--stage1-finetune", help="fine-tuned stage-1 adapter (with stage1_finetune.enabled)")
    ] = Path("data/stage1_finetune"),
    stage2: Annotated[Path, typer.Option(help="trained stage-2 refiner directory")] = Path("data/stage2"),
    stage3: Annotated[Path, typer.Option(help="trained stage-3 adapter directory")] = Path("data/stage3"),
    baseline: Annotated[Path, typer.Option(help="trained baseline directory (--until baseline)")] = Path(
        "data/baseline"
    ),
    progress: Annotated[bool, typer.Option(help="progress bar with tiles/s and ETA")] = True,
    scenes_dir: Annotated[
        Path, typer.Option("--scenes", help="scene directory whose test-split scenes translate.scenes: null takes")
    ] = Path("data/scenes"),
    tiles: Annotated[Path, typer.Option(help="tiles store that says which scenes hold test-split tiles")] = Path(
        "data/tiles.zarr"
    ),
) -> None:
    """Translate Sentinel-1 scenes into Sentinel-2 L2A images: 12-band uint16 COGs on the input's grid, with
    quicklooks."""
    from gac.errors import GacError
    from gac.translate.params import STAGES

    if until is not None and until not in STAGES:
        raise GacError(f"--until '{until}' is not a stage; use one of {', '.join(STAGES)}")
    if uncertainty is not None and uncertainty < 2:
        raise GacError(
            f"--uncertainty {uncertainty}: needs N >= 2 samples to give a spread (1 = no uncertainty output)"
        )
    if (vv is None) != (vh is None):
        raise GacError("--vv and --vh go together: pass both polarisation files of the scene")
    if vv is not None and inputs:
        raise GacError("pass a scene either as INPUTS or as --vv/--vh, not both")
    from gac.data.params import S1_UNITS

    if s1_units is not None and s1_units not in S1_UNITS:
        raise GacError(f"--s1-units '{s1_units}' is not a unit; use one of {', '.join(S1_UNITS)}")
    from gac.params import load_params
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options, effective_params, translate

    p = effective_params(load_params(params), until, uncertainty)  # `deterministic` is applied once the inputs pass
    if s1_units is not None or s1_nodata is not None:
        update = {k: v for k, v in (("s1_units", s1_units), ("s1_nodata", s1_nodata)) if v is not None}
        p = p.model_copy(update={"data": p.data.model_copy(update=update)})
    if vv is not None:
        from gac.data.readers import s1_pair

        scenes = [s1_pair(vv, vh)]
    elif inputs:
        scenes = inputs
    elif p.translate.scenes is not None:
        scenes = [Path(s) for s in p.translate.scenes]
    else:
        from gac.translate.source import default_scenes

        scenes, why = default_scenes(p, scenes_dir, tiles)
        typer.echo(why, err=True)
        if not scenes:
            out.mkdir(parents=True, exist_ok=True)  # the DVC stage's output: there, and empty
            return
    options = Options(
        Artifacts(stage1_finetune, stage2, stage3, baseline), fill_s2, cloud_mask, date, overwrite, progress
    )
    for summary in translate(p, scenes, out, options):
        rate = summary["km2"] / summary["seconds"] if summary["seconds"] else float("nan")
        typer.echo(
            f"{summary['out']}: {summary['km2']:.2f} km2, {summary['tile_runs']} tile run(s) in "
            f"{summary['seconds']:.1f} s ({rate:.3f} km2/s)",
            err=True,
        )
