"""The trained stages as one function of a batch of S1 tiles: stage 1 -> 2 -> 3 (or the supervised baseline).

`check_artifacts` reads only the small records the training stages wrote, so
a missing or mismatched model fails in one line before torch is imported.
`Chain` then loads exactly what `until` needs, each model the way its own
stage loads it (gac.finetune.handover, gac.refine.build, gac.ground.infer,
gac.baseline.saved), so a translated scene equals what the pipeline's stages
would give tile by tile.

Randomness: TerraMind samples tokens with one seed per tile and sample, and
starts the diffusion decoder from noise seeded per tile alone. So the N
uncertainty samples differ only in their token draws (the spread is
TerraMind's sampling uncertainty), and at temperature 0 they are identical.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gac.errors import GacError
from gac.translate.params import STAGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifacts:
    """Where the trained models are (the DVC stages' outs by default)."""

    stage1_finetune: Path = Path("data/stage1_finetune")
    stage2: Path = Path("data/stage2")
    stage3: Path = Path("data/stage3")
    baseline: Path = Path("data/baseline")


def dir_digest(path: Path) -> str:
    """A short hash of every file under `path` (names and bytes): which trained model made an output."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _mismatch(path: Path, what: str, trained: Any, key: str, now: Any, stage: str) -> GacError:
    return GacError(
        f"{path}: trained for {what} {trained} but {key} is {now}; set {key}: {trained} or re-train it (dvc repro "
        f"{stage})"
    )


def check_artifacts(params, until: str, artifacts: Artifacts) -> dict[str, dict[str, Any]]:
    """The records of the models `until` needs, checked against params; {stage: record + digest}. No torch."""
    from gac.baseline.saved import read_record as read_baseline
    from gac.refine.build import read_record as read_stage2
    from gac.terramind import TARGET
    from gac.tuning.lora import STAGE1_ADAPTER, STAGE3_ADAPTER, checked_adapter_record

    found: dict[str, dict[str, Any]] = {}
    stages = STAGES[until]
    if "stage1" in stages and params.stage1_finetune.enabled:
        root = artifacts.stage1_finetune
        fix = "run `dvc repro finetune-stage1` (or pass --stage1-finetune DIR)"
        record = checked_adapter_record(root, STAGE1_ADAPTER, params.stage1.model, [params.stage1.input], fix)
        found["stage1_finetune"] = {**record, "digest": dir_digest(root)}
    if "stage2" in stages:
        root = artifacts.stage2
        record = read_stage2(root)  # a missing model is one line naming `dvc repro train-stage2`
        config = record["config"]
        if config["backbone"] != params.stage2.backbone:
            raise _mismatch(
                root, "backbone", config["backbone"], "stage2.backbone", params.stage2.backbone, "train-stage2"
            )
        if list(config["bands"]) != list(params.stage2.bands):
            raise _mismatch(
                root, "bands", list(config["bands"]), "stage2.bands", list(params.stage2.bands), "train-stage2"
            )
        found["stage2"] = {**record, "digest": dir_digest(root)}
    if "stage3" in stages:
        root = artifacts.stage3
        fix = "run `dvc repro train-stage3` (or pass --stage3 DIR)"
        record = checked_adapter_record(root, STAGE3_ADAPTER, params.stage3.model, [params.stage1.input, TARGET], fix)
        found["stage3"] = {**record, "digest": dir_digest(root)}
    if "baseline" in stages:
        root = artifacts.baseline
        record = read_baseline(root)  # missing or unreadable: one line naming `dvc repro train-baseline`
        if record.get("enabled") is False:
            raise GacError(
                f"{root}: the baseline was not trained (baseline.enabled: false); set it true and run `dvc repro "
                "train-baseline`"
            )
        found["baseline"] = {**record, "digest": dir_digest(root)}
    return found


def _generation_only(model):
    """`model` without the S2L2A tokenizer's encoder: generation samples tokens and decodes them, never encodes an
    image, and the encoder's weights are a third of the model (0.37 GB in float32 for tiny) held for nothing."""
    from gac.terramind import TOKENS_KEY

    model.tokenizer[TOKENS_KEY].encoder = None
    return model


class Chain:
    """A batch of S1 tiles (gac.runner.Batch) -> S2 L2A (B, 12, T, T) reflectance x 10^4 through the stages up to
    `until`: each stage's own predictor (the one its store is written with), the previous stage's output as the
    next one's optical input."""

    def __init__(self, params, until: str, artifacts: Artifacts, tile_size: int, device):
        from gac.terramind import Decoding

        self.params, self.until, self.tile_size, self.device = params, until, tile_size, device
        t = params.translate
        self.decoding = Decoding(**t.sampling(), capped=False)
        self.random_weights: dict[str, bool] = {}
        self.weights: dict[str, str] = {}
        self.stages: list = []  # the predictors, in order
        stages = STAGES[until]
        if "baseline" in stages:
            from gac.baseline.predict import BaselinePredictor
            from gac.baseline.saved import load_baseline

            net, record = load_baseline(artifacts.baseline)
            depth = record["config"]["depth"]
            if tile_size % 2**depth:
                raise GacError(
                    f"translate.tile_size {tile_size} does not divide by 2^{depth} (the baseline U-Net's depth); use "
                    f"a multiple of {2**depth}"
                )
            self.stages.append(BaselinePredictor(net, device))
            self.random_weights["baseline"] = False
            self.weights["baseline"] = "trained from scratch"
            return
        from gac.finetune.handover import stage1_generator
        from gac.terramind import TerraMindPredictor, build_generator

        s1 = params.stage1
        model = build_generator(s1.model, [s1.input], s1.weights, tile_size=tile_size, seed=params.seed)
        stage1 = _generation_only(stage1_generator(model, params, artifacts.stage1_finetune).eval().to(device))
        self.stages.append(
            TerraMindPredictor(stage1, s1.input, replace(self.decoding, capped=s1.capped_decoder), t.infer.precision)
        )
        self._note("stage1", stage1.gac_weights)
        if "stage2" in stages:
            from gac.refine.build import load_refiner
            from gac.refine.infer import RefinerPredictor

            refiner, loaded = load_refiner(artifacts.stage2)
            self.stages.append(RefinerPredictor(refiner, device))
            self.random_weights["stage2"] = bool(loaded["random_weights"])
            self.weights["stage2"] = str(loaded["weights"])
        if "stage3" in stages:
            from gac.ground.infer import load_grounding_model

            net, _ = load_grounding_model(params, artifacts.stage3, tile_size, device)
            stage3 = _generation_only(net.get_base_model())
            self.stages.append(TerraMindPredictor(stage3, s1.input, self.decoding, t.infer.precision))
            self._note("stage3", stage3.gac_weights)

    def _note(self, stage: str, source) -> None:
        self.random_weights[stage] = bool(source.is_random)
        self.weights[stage] = source.describe()

    def set_decoding(self, decoding) -> None:
        """Sample every TerraMind stage with `decoding` (stage 1 keeps its decoder cap)."""
        from gac.terramind import TerraMindPredictor

        self.decoding = decoding
        for stage in self.stages:
            if isinstance(stage, TerraMindPredictor):
                stage.decoding = replace(decoding, capped=stage.decoding.capped)

    def __call__(self, batch) -> np.ndarray:
        """One batch; NaN where any S1 band is NaN (no radar, no prediction), between stages as in the stores."""
        from gac.runner import no_radar_no_prediction

        out = None
        for stage in self.stages:
            out = no_radar_no_prediction(stage(batch if out is None else batch.with_optical(out)), batch)
        return out
