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
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="S1 GeoTIFFs (VV, VH in dB) or directories of them; default: translate.scenes", show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="output directory: <stem>.tif, <stem>.png, <stem>_uncertainty.tif")] = Path("data/translate"),
    until: Annotated[Optional[str], typer.Option(help="last stage: v1, v2, v3 (full pipeline) or baseline; default translate.until")] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    uncertainty: Annotated[Optional[int], typer.Option(help="N >= 2 token-sampling runs: per-pixel mean, and <stem>_uncertainty.tif (per-band std)")] = None,
    fill_s2: Annotated[Optional[Path], typer.Option("--fill-s2", help="S2 L2A scene on the same grid: its clear pixels are kept, clouds filled")] = None,
    cloud_mask: Annotated[Optional[Path], typer.Option("--cloud-mask", help="SCL layer (translate.cloud_classes are filled) or 0/1 mask (1 is filled)")] = None,
    date: Annotated[Optional[str], typer.Option(help="acquisition date YYYY-MM-DD when the scene's tags lack one (the refiner's month)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing outputs")] = False,
    stage1_finetune: Annotated[Path, typer.Option("--stage1-finetune", help="fine-tuned stage-1 adapter (with stage1_finetune.enabled)")] = Path("data/stage1_finetune"),
    stage2: Annotated[Path, typer.Option(help="trained stage-2 refiner directory")] = Path("data/stage2"),
    stage3: Annotated[Path, typer.Option(help="trained stage-3 adapter directory")] = Path("data/stage3"),
    baseline: Annotated[Path, typer.Option(help="trained baseline directory (--until baseline)")] = Path("data/baseline"),
    progress: Annotated[bool, typer.Option(help="progress bar with tiles/s and ETA")] = True,
) -> None:
    """Translate Sentinel-1 scenes into Sentinel-2 L2A images: 12-band uint16 COGs on the input's grid, with quicklooks."""
    from gac.errors import GacError
    from gac.translate.params import STAGES

    if until is not None and until not in STAGES:
        raise GacError(f"--until '{until}' is not a stage; use one of {', '.join(STAGES)}")
    if uncertainty is not None and uncertainty < 2:
        raise GacError(f"--uncertainty {uncertainty}: needs N >= 2 samples to give a spread (1 = no uncertainty output)")
    from gac.params import load_params
    from gac.translate.run import Options, effective_params, translate
    from gac.translate.chain import Artifacts

    p = effective_params(load_params(params), until, uncertainty)  # `deterministic` is applied once the inputs pass
    scenes = inputs or [Path(s) for s in p.translate.scenes]
    options = Options(Artifacts(stage1_finetune, stage2, stage3, baseline), fill_s2, cloud_mask, date, overwrite, progress)
    for summary in translate(p, scenes, out, options):
        rate = summary["km2"] / summary["seconds"] if summary["seconds"] else float("nan")
        typer.echo(f"{summary['out']}: {summary['km2']:.2f} km2, {summary['tile_runs']} tile run(s) in {summary['seconds']:.1f} s ({rate:.3f} km2/s)", err=True)
