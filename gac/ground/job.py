"""Stage 3 as a gac.tuning job: TerraMind on S1 + an optical store, settings from `stage3`."""

from __future__ import annotations

from pathlib import Path

from gac.tuning.train import TuningTarget


def stage3_target(params, optical: Path) -> TuningTarget:
    s3 = params.stage3
    return TuningTarget("stage3", s3.model, s3.weights, "stage3.weights", params.stage1.input, Path(optical))
