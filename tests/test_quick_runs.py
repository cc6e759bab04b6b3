"""Switches for quick and reproducible runs: data.max_tiles, deterministic, and the ready-made profiles."""

from __future__ import annotations

import random
import subprocess

import pytest
import yaml

from gac.errors import GacError
from tests.conftest import REPO, run_gac, small_tile_params


def _records(counts: dict[str, int]) -> list[dict]:
    return [{"tile": f"{split}_{i:03d}", "split": split} for split, n in counts.items() for i in range(n)]


def test_max_tiles_keeps_a_fixed_subset_with_every_split():
    from gac.data.tiling import subset_tiles

    records = _records({"train": 30, "val": 8, "test": 2})
    kept = subset_tiles(records, 10, seed=1)
    counts = {s: sum(r["split"] == s for r in kept) for s in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 2, "test": 1}  # shares 7.5, 2, 0.5 -> floors, at least one each
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert {r["tile"] for r in subset_tiles(shuffled, 10, seed=1)} == {r["tile"] for r in kept}  # order does not matter
    assert {r["tile"] for r in subset_tiles(records, 10, seed=2)} != {r["tile"] for r in kept}  # the seed does
    assert kept == [r for r in records if r in kept]  # the store keeps the tiling order
    assert subset_tiles(records, 100, seed=1) == records


def test_max_tiles_applies_to_the_tile_store(demo_scenes, tmp_path):
    from gac.data.store import open_store
    from gac.data.tiling import make_tiles

    summary = make_tiles(demo_scenes, tmp_path / "t.zarr", small_tile_params(), seed=0, attrs={}, max_tiles=4)
    ds = open_store(tmp_path / "t.zarr", need=("s1", "s2"))
    assert summary["tiles"] == ds.sizes["tile"] == 4
    assert set(ds["split"].values.astype(str)) == {"train", "val", "test"}


def test_deterministic_switch_is_process_wide_and_the_trainer_keeps_it(tmp_path):
    import torch

    from gac.device import use_deterministic
    from gac.schema import TrainingParams
    from gac.training import build_trainer

    before = torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic(True)
        build_trainer(TrainingParams(accelerator="cpu"), tmp_path / "ckpt", tmp_path / "live", batches_per_epoch=1)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        use_deterministic(False)
        build_trainer(TrainingParams(accelerator="cpu"), tmp_path / "ckpt2", tmp_path / "live2", batches_per_epoch=1)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        use_deterministic(before)


@pytest.mark.parametrize("name", ["low-vram", "gpu"])
def test_profiles_validate_on_top_of_the_project_params(name):
    from gac.profiles import apply_profile

    p = apply_profile(REPO / "params.yaml", REPO / "profiles" / f"{name}.yaml")
    if name == "low-vram":
        for train in (p.stage2, p.stage3, p.stage1_finetune):
            assert (train.batch_size, train.accumulate_grad_batches, train.precision) == (1, 8, "bf16-mixed")
        assert p.stage2.backbone_8bit is True
        assert p.stage1.timesteps == p.stage3.infer.timesteps == 10
    else:
        assert p.stage1.model == p.stage3.model == "terramind_v1_base_generate"
        assert p.tile.size == 224 and p.tile.size % 16 == 0
        assert 10 <= p.stage1.timesteps <= 12 and 10 <= p.stage3.infer.timesteps <= 12
        assert p.stage1.infer.device == p.stage3.infer.device == "cuda"
        assert (p.stage3.loss.pixel_crop, p.stage3.loss.pixel_every) == (
            0,
            1,
        )  # a GPU affords the whole-tile pixel path
        assert p.stage3.loss.sar == 1.0  # the loss weights stay as params.yaml has them
    assert p.stage2.lora_rank == 8  # what a profile does not name stays as params.yaml has it


def test_a_profile_naming_a_key_params_yaml_lacks_is_one_line(tmp_path):
    from gac.profiles import apply_profile

    (tmp_path / "bad.yaml").write_text("stage3:\n  infer:\n    timestep: 10\n")
    with pytest.raises(GacError, match=r"'stage3\.infer\.timestep' is not in .*params\.yaml"):
        apply_profile(REPO / "params.yaml", tmp_path / "bad.yaml")
    with pytest.raises(GacError, match="no such profile; known profiles: bad"):
        apply_profile(REPO / "params.yaml", tmp_path / "nope.yaml")


def test_profile_command_feeds_dvc_exp_run(tmp_path):
    """The README's one command, `dvc exp run $(gac profile low-vram)`, on a copy of the project (check-params only)."""
    from tests.test_pipeline_tiles import copy_project, sh

    project = copy_project(tmp_path, {})
    (project / "profiles").mkdir(exist_ok=True)
    out = run_gac("profile", "low-vram", cwd=project)
    assert out.returncode == 0, out.stderr
    args = out.stdout.split()
    assert args[0] == "-S" and "stage1.infer.batch_size=1" in args and "stage2.backbone_8bit=true" in args
    sh("dvc", "exp", "run", *args, "check-params", cwd=project)
    applied = yaml.safe_load((project / "params.yaml").read_text())
    assert applied["stage2"]["accumulate_grad_batches"] == 8 and applied["stage3"]["infer"]["timesteps"] == 10
    assert applied["stage2"]["backbone_8bit"] is True and applied["stage2"]["precision"] == "bf16-mixed"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "check-params" in lock["stages"]
    assert subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "profiles"], cwd=project).returncode == 0
