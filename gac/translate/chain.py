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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gac.errors import GacError

log = logging.getLogger(__name__)

STAGES = {"v1": ("stage1",), "v2": ("stage1", "stage2"), "v3": ("stage1", "stage2", "stage3"), "baseline": ("baseline",)}


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
    return GacError(f"{path}: trained for {what} {trained} but {key} is {now}; set {key}: {trained} or re-train it (dvc repro {stage})")


def _terramind_adapter(root: Path, missing: str, stage: str, option: str, key: str, model: str) -> dict[str, Any]:
    """The record beside a TerraMind LoRA adapter (peft files present), trained for `model`."""
    from gac.tuning.lora import read_adapter_record

    record = read_adapter_record(root, missing, f"run `dvc repro {stage}` (or pass {option} DIR)")
    if record.get("model") != model:
        raise _mismatch(root, "TerraMind", record.get("model"), key, model, stage)
    return record


def check_artifacts(params, until: str, artifacts: Artifacts) -> dict[str, dict[str, Any]]:
    """The records of the models `until` needs, checked against params; {stage: record + digest}. No torch."""
    from gac.baseline.saved import read_record as read_baseline
    from gac.refine.build import read_record as read_stage2
    from gac.terramind import TARGET

    found: dict[str, dict[str, Any]] = {}
    stages = STAGES[until]
    if "stage1" in stages and params.stage1_finetune.enabled:
        root = artifacts.stage1_finetune
        missing = "stage1_finetune.enabled is true but no fine-tuned stage-1 adapter is there"
        record = _terramind_adapter(root, missing, "finetune-stage1", "--stage1-finetune", "stage1.model", params.stage1.model)
        found["stage1_finetune"] = {**record, "digest": dir_digest(root)}
    if "stage2" in stages:
        root = artifacts.stage2
        record = read_stage2(root)  # a missing model is one line naming `dvc repro train-stage2`
        config = record["config"]
        if config["backbone"] != params.stage2.backbone:
            raise _mismatch(root, "backbone", config["backbone"], "stage2.backbone", params.stage2.backbone, "train-stage2")
        if list(config["bands"]) != list(params.stage2.bands):
            raise _mismatch(root, "bands", list(config["bands"]), "stage2.bands", list(params.stage2.bands), "train-stage2")
        found["stage2"] = {**record, "digest": dir_digest(root)}
    if "stage3" in stages:
        root = artifacts.stage3
        record = _terramind_adapter(root, "no trained stage-3 adapter", "train-stage3", "--stage3", "stage3.model", params.stage3.model)
        inputs = [params.stage1.input, TARGET]
        if record.get("inputs") != inputs:
            raise _mismatch(root, "inputs", record.get("inputs"), "stage1.input", params.stage1.input, "train-stage3")
        found["stage3"] = {**record, "digest": dir_digest(root)}
    if "baseline" in stages:
        root = artifacts.baseline
        record = read_baseline(root)  # missing or unreadable: one line naming `dvc repro train-baseline`
        if record.get("enabled") is False:
            raise GacError(f"{root}: the baseline was not trained (baseline.enabled: false); set it true and run `dvc repro train-baseline`")
        found["baseline"] = {**record, "digest": dir_digest(root)}
    return found


class Chain:
    """S1 tiles (B, 2, T, T) in dB -> S2 L2A (B, 12, T, T) reflectance x 10^4 through the stages up to `until`."""

    def __init__(self, params, until: str, artifacts: Artifacts, tile_size: int, device):
        from gac.terramind import Decoding

        self.params, self.until, self.tile_size, self.device = params, until, tile_size, device
        t = params.translate
        self.decoding = Decoding(**t.sampling(), capped=False)
        self.precision = t.precision
        self.random_weights: dict[str, bool] = {}
        self.weights: dict[str, str] = {}
        stages = STAGES[until]
        if "baseline" in stages:
            from gac.baseline.saved import load_baseline

            self.baseline, record = load_baseline(artifacts.baseline)
            depth = record["config"]["depth"]
            if tile_size % 2**depth:
                raise GacError(f"translate.tile_size {tile_size} does not divide by 2^{depth} (the baseline U-Net's depth); use a multiple of {2**depth}")
            self.baseline.to(device)
            self.random_weights["baseline"] = False
            self.weights["baseline"] = "trained from scratch"
            return
        from gac.finetune.handover import stage1_generator
        from gac.terramind import build_generator

        s1 = params.stage1
        model = build_generator(s1.model, [s1.input], s1.weights, tile_size=tile_size, seed=params.seed)
        self.stage1 = stage1_generator(model, params, artifacts.stage1_finetune).eval().to(device)
        self.stage1_capped = s1.capped_decoder
        self._note("stage1", self.stage1.gac_weights)
        if "stage2" in stages:
            from gac.refine.build import load_refiner

            self.refiner, loaded = load_refiner(artifacts.stage2)
            self.refiner.to(device)
            self.random_weights["stage2"] = bool(loaded["random_weights"])
            self.weights["stage2"] = str(loaded["weights"])
        if "stage3" in stages:
            from gac.ground.infer import load_grounding_model

            net, _ = load_grounding_model(params, artifacts.stage3, tile_size, device)
            self.stage3 = net.get_base_model()
            self._note("stage3", self.stage3.gac_weights)

    def _note(self, stage: str, source) -> None:
        self.random_weights[stage] = bool(source.is_random)
        self.weights[stage] = source.describe()

    def _generate(self, model, inputs, token_seeds: Sequence[int], noise_seeds: Sequence[int], capped: bool):
        from gac.terramind import decode_tokens, sample_tokens

        tokens = sample_tokens(model, inputs, token_seeds, self.decoding, self.precision)
        return decode_tokens(model, tokens, noise_seeds, self.decoding.timesteps, capped, self.precision)

    def __call__(self, s1: np.ndarray, month: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 token_seeds: Sequence[int], noise_seeds: Sequence[int]) -> np.ndarray:
        """One batch; NaN where any S1 band is NaN (no radar, no prediction)."""
        import torch

        from gac.terramind import TARGET

        x = torch.from_numpy(np.ascontiguousarray(s1, dtype=np.float32)).to(self.device)
        radar_gap = torch.isnan(x).any(dim=1, keepdim=True)
        masked = lambda t: t.float().masked_fill(radar_gap, float("nan"))  # noqa: E731  (as the stores hold it between stages)
        with torch.inference_mode():
            if self.until == "baseline":
                out = self.baseline(x)
            else:
                s1_name = self.params.stage1.input
                out = masked(self._generate(self.stage1, {s1_name: x}, token_seeds, noise_seeds, self.stage1_capped))
                if self.until in ("v2", "v3"):
                    out = masked(self.refiner(out, torch.nan_to_num(x, nan=0.0), torch.from_numpy(month.astype(np.int64)).to(self.device),
                                              torch.from_numpy(lat).to(self.device), torch.from_numpy(lon).to(self.device)))
                if self.until == "v3":
                    out = self._generate(self.stage3, {s1_name: x, TARGET: out}, token_seeds, noise_seeds, False)
        return masked(out).cpu().numpy()
