"""The `gac` console script: one subcommand per DVC stage.

Stage modules import nothing heavy at module level, so `gac --help` stays fast.
"""

from __future__ import annotations

import typer

from stages import (
    evaluate,
    finetune_stage1,
    generate,
    ground,
    params_check,
    predict_baseline,
    profile,
    refine,
    synth,
    tile,
    train_baseline,
    train_stage2,
    train_stage3,
    translate,
)

app = typer.Typer(
    help="GAC: Sentinel-1 -> Sentinel-2 L2A translation in three foundation-model stages, run by DVC (`dvc repro`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("check-params")(params_check.main)
app.command("profile")(profile.main)
app.command("synth")(synth.main)
app.command("tile")(tile.main)
app.command("finetune-stage1")(finetune_stage1.main)
app.command("generate")(generate.main)
app.command("train-stage2")(train_stage2.main)
app.command("refine")(refine.main)
app.command("train-stage3")(train_stage3.main)
app.command("ground")(ground.main)
app.command("train-baseline")(train_baseline.main)
app.command("predict-baseline")(predict_baseline.main)
app.command("evaluate")(evaluate.main)
app.command("translate")(translate.main)


def main() -> None:
    app()
