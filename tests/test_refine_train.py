"""Stage 2 training and refine on demo tiles: loss goes down, a killed run resumes, opt_v2 keeps the tiles' grid.

One training run per module (Prithvi tiny, random weights, 64 px tiles, 3 epochs
of 3 steps), interrupted after 4 steps and resumed, as a user's run would be.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gac.data.store import open_store, write_store
from gac.errors import GacError
from gac.refine.params import Stage2Params
from tests.conftest import run_gac


def write_opt_v1(tiles, out, drop_first: bool = False):
    """A stand-in for stage 1's output: the ground truth blurred, dimmed and noised (NaN kept where there is no
    data)."""
    import xarray as xr
    from scipy.ndimage import gaussian_filter

    ds = open_store(tiles, need=("s2",)).load()
    s2 = ds["s2"].values
    rng = np.random.default_rng(0)
    v1 = 0.85 * gaussian_filter(np.nan_to_num(s2), sigma=(0, 0, 1.5, 1.5)) + rng.normal(0, 100, s2.shape)
    v1 = np.where(np.isnan(s2), np.nan, v1).astype(np.float32)
    coords = {name: ds[name] for name in ds.coords if name != "s1_band"}
    opt = xr.Dataset(
        {"s2": (("tile", "band", "y", "x"), v1)}, coords=coords, attrs={"stage": "generate", "params_hash": "test"}
    )
    if drop_first:
        opt = opt.isel(tile=slice(1, None))
    write_store(opt, out, 4)
    return out


def _params(**overrides) -> Stage2Params:
    values = dict(
        max_epochs=3,
        batch_size=2,
        lr=3e-3,
        warmup_steps=1,
        accelerator="cpu",
        head_channels=16,
        feature_levels=2,
        early_stopping_patience=5,
    )
    values.update(overrides)
    return Stage2Params(**values)


class _CrashAt:
    """Stops the run with an exception after `step` optimizer steps, as a kill would (no checkpoint on the way out)."""

    def __new__(cls, step: int):
        import lightning.pytorch as pl

        class CrashAt(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= step:
                    raise RuntimeError("simulated kill")

        return CrashAt()


class _CountSteps:
    def __new__(cls):
        import lightning.pytorch as pl

        class CountSteps(pl.Callback):
            batches = 0

            def on_train_batch_end(self, *args):
                self.batches += 1

        return CountSteps()


@pytest.fixture(scope="module")
def trained(tiles_store, tmp_path_factory):
    torch.set_num_threads(2)
    from gac.refine.train import train_stage2

    root = tmp_path_factory.mktemp("stage2")
    opt_v1 = write_opt_v1(tiles_store, root / "opt_v1.zarr")
    paths = dict(
        tiles=tiles_store, opt_v1=opt_v1, out_dir=root / "stage2", live_dir=root / "live", checkpoint_root=root / "ckpt"
    )
    p = _params()
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_stage2(p, 0, **paths, extra_callbacks=[_CrashAt(4)])
    after_kill = {"out_exists": paths["out_dir"].exists(), "last": (root / "ckpt" / "stage2" / "last.ckpt").is_file()}
    counter = _CountSteps()
    record = train_stage2(p, 0, **paths, extra_callbacks=[counter])
    return dict(paths=paths, params=p, record=record, after_kill=after_kill, resumed_batches=counter.batches, root=root)


def test_killed_run_resumes_from_its_last_checkpoint(trained):
    # 6 train tiles, batch 2: 3 steps per epoch. Killed at step 4, the last checkpoint is from epoch 1 (step 3).
    assert trained["after_kill"] == {"out_exists": False, "last": True}  # nothing exported by the killed run
    record = trained["record"]
    assert record["resumed_from"].endswith("last.ckpt")
    assert trained["resumed_batches"] == 6  # epochs 2 and 3 only
    assert record["global_step"] == 9


def test_training_lowers_the_loss_below_opt_v1(trained):
    """opt_v1 itself is where a fresh refiner starts; after 9 steps the best validation loss is below it."""
    from gac.data.dataset import TileDataset
    from gac.data.store import S2_BANDS
    from gac.losses import WeightedLoss

    paths, p = trained["paths"], trained["params"]
    val = TileDataset(paths["tiles"], "val", {"opt_v1": paths["opt_v1"]})
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])
    target = torch.where(batch["valid"][:, None], batch["s2"], torch.nan) / 1e4
    identity, _ = WeightedLoss(p.loss.weights(), S2_BANDS)(batch["opt_v1"] / 1e4, target)
    best = trained["record"]["best_val_loss"]
    assert best < 0.97 * identity.item(), (best, identity.item())
    # stage2.monitor (default loss) chose that checkpoint: lowest validation loss
    assert trained["record"]["selected_by"] == {"monitor": "val/loss", "mode": "min", "best": best}


def test_exports_adapter_head_record_and_live_metrics(trained):
    out, live = trained["paths"]["out_dir"], trained["paths"]["live_dir"]
    record = json.loads((out / "stage2.json").read_text())
    assert record["weights"] == "random" and record["random_weights"] is True
    assert record["parameters"]["trainable_share"] < 0.10
    assert record["config"]["lora_rank"] == 8 and record["config"]["backbone"] == "prithvi_eo_v2_tiny_tl"
    assert record["loss"]["weights"].keys() >= {"l1", "ms_ssim", "sam"}
    assert record["loss"]["lpips"].startswith("LPIPS ")
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["peft_type"] == "LORA"
    assert (out / "head.safetensors").stat().st_size > 0
    plots = live / "plots" / "metrics"
    for name in ("train/loss_step", "train/l1_step", "train/ms_ssim_step", "train/sam_step", "val/loss", "val/psnr"):
        assert (plots / f"{name}.tsv").is_file(), name
    psnr = np.loadtxt(plots / "val" / "psnr.tsv", skiprows=1, usecols=-1, ndmin=1)
    assert np.isfinite(psnr).all() and (psnr > 10).all()


def test_refine_writes_opt_v2_on_the_tiles_grid(trained):
    from gac.refine.build import load_refiner
    from gac.refine.infer import refine_store

    paths = trained["paths"]
    out = trained["root"] / "opt_v2.zarr"
    summary = refine_store(
        paths["out_dir"], paths["tiles"], paths["opt_v1"], out, trained["params"].infer, 4, {"gac_version": "test"}
    )
    tiles, v1, v2 = (open_store(x) for x in (paths["tiles"], paths["opt_v1"], out))
    assert summary["tiles"] == tiles.sizes["tile"]
    assert list(v2.tile.values) == list(tiles.tile.values)
    assert np.array_equal(v2.transform.values, tiles.transform.values)
    assert list(v2.crs.values) == list(tiles.crs.values) and list(v2.band.values) == list(tiles.band.values)
    assert v2.attrs["weights"] == "random" and v2.attrs["random_weights"] is True
    assert v2.attrs["backbone"] == "prithvi_eo_v2_tiny_tl" and len(v2.attrs["params_hash"]) == 16
    assert v2.attrs["opt_v1_random_weights"] is False  # the stand-in opt_v1 carries no random-weights flag
    a, b = v1["s2"].values, v2["s2"].values
    assert np.array_equal(np.isnan(a), np.isnan(b))  # nodata stays nodata
    assert np.nanmean(np.abs(b - a)) > 1.0  # the trained residual is not nothing
    refiner, _ = load_refiner(paths["out_dir"])
    with torch.no_grad():
        direct = refiner(
            torch.from_numpy(a[:1]),
            torch.from_numpy(tiles["s1"].values[:1]),
            torch.tensor(tiles.month.values[:1].astype(np.int64)),
            torch.tensor(tiles.lat.values[:1].astype(np.float32)),
            torch.tensor(tiles.lon.values[:1].astype(np.float32)),
        )
    np.testing.assert_allclose(b[:1], direct.numpy(), rtol=1e-5, atol=1e-2)


def test_misaligned_opt_v1_stops_training_before_anything_is_written(tiles_store, tmp_path):
    bad = write_opt_v1(tiles_store, tmp_path / "opt_v1.zarr", drop_first=True)
    (tmp_path / "params.yaml").write_text("stage2: {}\n")
    result = run_gac("train-stage2", "--tiles", str(tiles_store), "--opt-v1", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "opt_v1.zarr: tile ids disagree" in lines[0] and lines[0].startswith("gac: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt_v1.zarr", "params.yaml"]  # no data/, no checkpoints


def test_refine_without_a_trained_model_says_what_to_run(tiles_store, tmp_path):
    from gac.refine.infer import refine_store

    opt_v1 = write_opt_v1(tiles_store, tmp_path / "opt_v1.zarr")
    with pytest.raises(GacError, match="no trained stage-2 model here .*gac train-stage2"):
        refine_store(tmp_path / "stage2", tiles_store, opt_v1, tmp_path / "opt_v2.zarr", Stage2Params().infer, 4, {})
    assert not (tmp_path / "opt_v2.zarr").exists() and not (tmp_path / "opt_v2.zarr.partial").exists()
