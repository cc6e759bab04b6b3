"""One nodata rule in training and inference (gac.nodata): tiles with a nodata corner train, and the numbers a model
gives them in training are the numbers the store path and `gac translate` give.

Demo scenes of 64 px whose S1 carries a -inf corner (10*log10 of a zero-filled GRD border) and, in demo_00, S2
nodata under valid radar; 32 px tiles, so each scene's top-left tile holds the corner. Before the rule was shared,
training read
that corner as 0 dB (the dataset's fill) and inference as the band mean (the models' fill): the U-Net's convolutions
carried the difference into valid pixels up to its receptive field away.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from tests.conftest import small_tile_params

CORNER = 12  # px of -inf S1 at each scene's top-left
TILE = 32
S2_GAP = slice(20, 26)  # columns of demo_00's top-left tile without S2 under valid S1


@pytest.fixture(scope="module")
def corner_scenes(tmp_path_factory):
    from gac.data.synth import write_demo
    from gac.data.tiling import make_tiles

    root = tmp_path_factory.mktemp("corner")
    scenes = root / "scenes"
    names = write_demo(scenes, seed=0, n_scenes=3, size=64)
    for name in names:
        with rasterio.open(scenes / "S1RTC" / f"{name}.tif", "r+") as dst:
            values = dst.read()
            values[:, :CORNER, :CORNER] = -np.inf
            dst.write(values)
    with rasterio.open(scenes / "S2L2A" / "demo_00.tif", "r+") as dst:  # S2 nodata (0) under valid radar
        values = dst.read()
        values[:, :TILE, S2_GAP] = 0
        dst.write(values)
    tiles = root / "tiles.zarr"
    tile = small_tile_params(size=TILE, stride=TILE, split_block=TILE, max_nodata=0.5)
    make_tiles(scenes, tiles, tile, seed=0, attrs={"stage": "tile", "params_hash": "test"})
    return {"root": root, "scenes": scenes, "tiles": tiles}


@pytest.fixture(scope="module")
def trained(corner_scenes):
    from gac.baseline.params import BaselineParams
    from gac.baseline.predict import predict_store
    from gac.baseline.train import train_baseline

    torch.set_num_threads(2)
    root = corner_scenes["root"]
    p = BaselineParams(
        channels=8, depth=2, max_epochs=1, max_steps=3, batch_size=2, lr=5e-3, warmup_steps=1, accelerator="cpu"
    )
    record = train_baseline(p, 0, corner_scenes["tiles"], root / "model", root / "live", root / "ckpt")
    store = root / "baseline.zarr"
    predict_store(root / "model", corner_scenes["tiles"], store, p.infer, 4, {"gac_version": "test"})
    return {"params": p, "record": record, "model": root / "model", "store": store}


def _corner_tiles(tiles_path):
    from gac.data.store import open_store

    tiles = open_store(tiles_path, need=("s1", "s2"))
    s1 = tiles.s1.values
    corner = np.flatnonzero(np.isnan(s1[:, 0, :CORNER, :CORNER]).all(axis=(1, 2)))
    return tiles, corner


def test_the_store_holds_nodata_as_nan_and_the_corner_tiles_train(corner_scenes, trained):
    tiles, corner = _corner_tiles(corner_scenes["tiles"])
    assert len(corner) == 3  # every scene's top-left tile
    s1 = tiles.s1.values
    assert np.isfinite(s1[corner][:, :, CORNER:, :]).all() and not np.isinf(s1).any()  # -inf became NaN, nothing else
    splits = tiles.split.values.astype(str)
    assert "train" in set(splits[corner])  # a corner tile is trained on
    assert np.isnan(tiles.s2.values).all(axis=1).any()  # demo_00's S2 gap: S2 nodata under valid S1 too
    record = trained["record"]
    assert record["global_step"] == 3 and np.isfinite(record["best_val_loss"])
    assert all(np.isfinite(v).all() for v in record["statistics"].values())


def test_training_store_and_translate_give_a_nodata_corner_tile_the_same_numbers(corner_scenes, trained, tmp_path):
    from gac.baseline.module import BaselineModule
    from gac.baseline.saved import load_baseline
    from gac.data.dataset import TileDataset
    from gac.data.store import open_store
    from gac.params import validate_params
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options, translate

    tiles, corner = _corner_tiles(corner_scenes["tiles"])
    names = tiles.scene.values.astype(str)
    index = int(next(i for i in corner if names[i] == "demo_01"))  # a whole tile of S2 (demo_00 has a gap)
    net, _ = load_baseline(trained["model"])
    dataset = TileDataset(corner_scenes["tiles"])
    item = dataset[index]
    assert torch.isnan(item["s1"][:, :CORNER, :CORNER]).all() and not item["valid"][:CORNER, :CORNER].any()
    batch = {k: v[None] for k, v in item.items()}
    with torch.no_grad():  # the training step's own forward (BaselineModule._l1)
        _, standardised, _ = BaselineModule(net, trained["params"])._l1(batch)
        training = net.to_reflectance(standardised)[0].numpy()
    store = open_store(trained["store"]).s2.values[index]
    radar = np.isfinite(tiles.s1.values[index]).all(axis=0)
    assert np.array_equal(np.isfinite(store).all(axis=0), radar)  # nodata in, nodata out
    np.testing.assert_allclose(store[:, radar], training[:, radar], rtol=1e-5, atol=1e-2)
    with torch.no_grad():  # the old training fill (0 dB): the comparison above would catch it
        zero_filled = net(torch.nan_to_num(item["s1"][None], nan=0.0))[0].numpy()
    assert np.abs(zero_filled[:, radar] - store[:, radar]).max() > 10

    p = validate_params(
        {
            "seed": 3,
            "tile": {"size": TILE},
            "baseline": {"channels": 8, "depth": 2},
            "translate": {"until": "baseline", "overlap": 0, "block_size": 64, "infer": {"batch_size": 4}},
        }
    )
    scene = corner_scenes["scenes"] / "S1RTC" / "demo_01.tif"
    translate(p, [scene], tmp_path / "out", Options(Artifacts(baseline=trained["model"]), progress=False))
    with rasterio.open(tmp_path / "out" / "demo_01.tif") as src:
        cog = src.read().astype(np.int64)
    row, col = (int(v) for v in (tiles.row_off.values[index], tiles.col_off.values[index]))
    part = cog[:, row : row + TILE, col : col + TILE]
    assert (part[:, ~radar] == 0).all()  # the COG's nodata where the radar has none
    expected = np.clip(np.rint(store[:, radar]), 1, 65535)
    assert np.abs(part[:, radar] - expected).max() <= 1


def test_refiner_and_terramind_read_a_nodata_corner_the_same_in_training_and_inference(corner_scenes, trained):
    """The refiner (opt_v1 NaN where the radar is, as every store has it) and TerraMind's inputs, through the training
    code (the dataset's items) and the inference code (gac.runner.Batch from the stores)."""
    from gac.data.dataset import TileDataset
    from gac.params import validate_params
    from gac.refine.build import build_refiner
    from gac.refine.infer import RefinerPredictor
    from gac.refine.module import RefinerModule
    from gac.runner import Batch
    from gac.terramind import standardize_filled
    from gac.tuning.objective import model_inputs
    from tests.translate_artifacts import _perturb

    tiles, corner = _corner_tiles(corner_scenes["tiles"])
    index = int(next(i for i in corner if tiles.scene.values.astype(str)[i] == "demo_00"))  # corner and S2 strip
    dataset = TileDataset(corner_scenes["tiles"], inputs={"opt_v1": trained["store"]})
    item = dataset[index]
    training = {k: v[None] for k, v in item.items()}
    from gac.data.store import open_store

    optical = open_store(trained["store"]).s2.values[index : index + 1]
    s1 = tiles.s1.values[index : index + 1]
    batch = Batch(
        s1=s1,
        month=tiles.month.values[index : index + 1].astype(np.int64),
        lat=tiles.lat.values[index : index + 1].astype(np.float32),
        lon=tiles.lon.values[index : index + 1].astype(np.float32),
        token_seeds=[0],
        noise_seeds=[0],
        optical=optical,
    )
    radar = np.isfinite(s1[0]).all(axis=0)

    config = validate_params({"stage2": {"use_sar": True}}).stage2.training_dict()
    refiner, _ = build_refiner(config)
    _perturb(refiner, 2)
    inference = RefinerPredictor(refiner, torch.device("cpu"))(batch)[0]  # also puts the refiner in eval mode
    with torch.no_grad():
        pred, _ = RefinerModule(refiner, None, None).predict_batch(training)
    trained_view = pred[0].numpy() * 1e4
    assert np.isfinite(trained_view).all()  # finite everywhere, so the losses can mask instead of propagate NaN
    np.testing.assert_allclose(trained_view[:, radar], inference[:, radar], rtol=1e-4, atol=0.5)
    with torch.no_grad():  # the old training fill (0 dB, 0 reflectance) moves valid pixels: the check above can fail
        old = refiner(
            torch.nan_to_num(training["opt_v1"]),
            torch.nan_to_num(training["s1"]),
            training["month"],
            training["lat"],
            training["lon"],
        )[0].numpy()
    assert np.abs(old[:, radar] - inference[:, radar]).max() > 1

    s2_gap = radar & ~item["valid"].numpy()  # radar present, ground truth absent (demo_00's S2 gap)
    assert s2_gap.any()
    stage_inputs = model_inputs(training, "S1RTC", "opt_v1")
    np.testing.assert_array_equal(
        stage_inputs["S1RTC"].numpy(), standardize_filled(torch.from_numpy(s1), "S1RTC").numpy()
    )
    np.testing.assert_array_equal(
        stage_inputs["S2L2A"].numpy(), standardize_filled(torch.from_numpy(optical), "S2L2A").numpy()
    )
    assert (stage_inputs["S1RTC"][0][:, torch.from_numpy(s2_gap)] != 0).all()  # the radar stays where S2 has no data
    assert (stage_inputs["S1RTC"][0][:, :CORNER, :CORNER] == 0).all()  # the corner at the band mean
