import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from gac.data.dataset import TileDataset
from gac.data.store import S1_BANDS, S2_BANDS, open_store
from gac.data.tiling import SPLITS, make_tiles, tile_offsets, tile_transform
from tests.conftest import small_tile_params


def test_offsets_cover_the_scene_with_a_final_flush_tile():
    assert tile_offsets(128, 64, 64) == [0, 64]
    assert tile_offsets(100, 32, 32) == [0, 32, 64, 68]
    assert tile_offsets(64, 64, 16) == [0]
    assert tile_transform((10, 0, 1000, 0, -10, 5000), row=3, col=5) == (10, 0, 1050, 0, -10, 4970)


def test_each_tile_maps_back_onto_its_scene_exactly(tiles_store, demo_scenes):
    ds = open_store(tiles_store, need=("s1", "s2"))
    size = ds.sizes["y"]
    for i in range(ds.sizes["tile"]):
        scene = str(ds.scene.values[i])
        transform = Affine(*ds.transform.values[i])
        with (
            rasterio.open(demo_scenes / "S2L2A" / f"{scene}.tif") as s2,
            rasterio.open(demo_scenes / "S1RTC" / f"{scene}.tif") as s1,
        ):
            # the tile's own transform puts its pixel (0, 0) on the scene pixel (row_off, col_off)
            col, row = ~s2.transform * (transform * (0.5, 0.5))
            assert (int(row), int(col)) == (int(ds.row_off[i]), int(ds.col_off[i]))
            window = Window(int(ds.col_off[i]), int(ds.row_off[i]), size, size)
            assert s2.window_transform(window) == transform
            assert np.array_equal(ds.s2.values[i], s2.read(window=window).astype(np.float32))
            assert np.array_equal(ds.s1.values[i], s1.read(window=window))
            assert str(ds.crs.values[i]) == s2.crs.to_string()


def test_store_round_trip_keeps_names_georeference_and_metadata(tiles_store):
    ds = open_store(tiles_store, need=("s1", "s2"))
    assert list(ds.band.values.astype(str)) == list(S2_BANDS)
    assert list(ds.s1_band.values.astype(str)) == list(S1_BANDS)
    assert ds.s1.dtype == np.float32 and ds.s2.dtype == np.float32
    assert ds.s2.encoding["chunks"] == (1, 12, 64, 64) and ds.s2.encoding["shards"][0] == 4
    assert set(ds.month.values) == {7, 4, 10}  # the demo scenes' acquisition months, read from the GeoTIFF tags
    lat, lon = ds.lat.values, ds.lon.values
    assert ((lat > 40) & (lat < 60)).all() and ((lon > -5) & (lon < 25)).all()  # demo scenes are in Europe
    # demo_00's right edge has no optical data: its tiles there are dropped (max_nodata 5%)
    assert ds.attrs["dropped_nodata"] == 2 and not any(
        str(t).startswith("demo_00_r00000_c00064") for t in ds.tile.values
    )
    assert set(ds.split.values.astype(str)) == set(SPLITS)


def test_splits_are_deterministic_and_never_overlap(demo_scenes, tmp_path):
    params = small_tile_params(size=32, stride=16, split_block=64)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    make_tiles(demo_scenes, a, params, seed=5, attrs={})
    make_tiles(demo_scenes, b, params, seed=5, attrs={})
    da, db = open_store(a), open_store(b)
    assert list(da.tile.values) == list(db.tile.values) and list(da.split.values) == list(db.split.values)
    assert da.attrs["dropped_split_border"] > 0  # overlapping tiles across block borders were removed
    scene, row, col, split = (da[k].values for k in ("scene", "row_off", "col_off", "split"))
    for i in range(len(row)):
        others = (scene == scene[i]) & (split != split[i])
        overlap = others & (np.abs(row - row[i]) < 32) & (np.abs(col - col[i]) < 32)
        assert not overlap.any()
    make_tiles(demo_scenes, b, params, seed=6, attrs={})
    assert list(open_store(b).split.values) != list(da.split.values)


def test_real_terramesh_samples_tile_in_place(shared_samples, tmp_path):
    out = tmp_path / "real.zarr"
    summary = make_tiles(
        shared_samples,
        out,
        small_tile_params(size=112, stride=112, split_block=112, val_fraction=0.1, test_fraction=0.1),
        seed=0,
        attrs={},
    )
    ds = open_store(out, need=("s1", "s2"))
    assert summary["tiles"] == 12 and ds.sizes["tile"] == 12 and ds.attrs["s1_product"] == "S1RTC"
    name = "433D_629L_3_1"
    i = list(ds.tile.values.astype(str)).index(f"{name}_r00112_c00000")
    # data.s2_offset: auto decides per scene: this one carries the L2A offset (no value below 969), the others do not
    assert ds.attrs["s2_offsets"] == {"282D_485L_3_3": 0, "433D_629L_3_1": 1000, "637U_59R_1_3": 0}
    with rasterio.open(shared_samples / "S2L2A" / f"{name}.tif") as s2:
        assert np.array_equal(ds.s2.values[i], s2.read(window=Window(0, 112, 112, 112)).astype(np.float32) - 1000)
        assert Affine(*ds.transform.values[i]) == s2.transform * Affine.translation(0, 112)
        assert str(ds.crs.values[i]) == s2.crs.to_string()
    assert ds.month.values[i] == 4  # 2020-04-11, read from the S1 "datetime" tag when S2 has none
    assert np.isfinite(ds.s1.values).all() and -40 < ds.s1.values.min() and ds.s1.values.max() < 20


def test_dataset_reads_splits_and_marks_nodata(tiles_store):
    import torch

    train = TileDataset(tiles_store, split="train")
    full = TileDataset(tiles_store)
    assert 0 < len(train) < len(full)
    item = train[0]
    assert item["s1"].shape == (2, 64, 64) and item["s2"].shape == (12, 64, 64) and item["valid"].shape == (64, 64)
    assert str(full.tile_ids[int(item["index"])]) == train.tile_ids[0]
    assert 1 <= int(item["month"]) <= 12
    # a tile from demo_00 next to the nodata strip is kept (<5% nodata) with its few nodata pixels masked out and
    # left NaN, for the model to fill as inference does (gac.nodata)
    with_nodata = [full[i] for i in range(len(full)) if not bool(full[i]["valid"].all())]
    for sample in with_nodata:
        assert (
            torch.isnan(sample["s2"][:, ~sample["valid"]]).all()
            and torch.isfinite(sample["s2"][:, sample["valid"]]).all()
        )


def test_real_bigearthnet_pairs_tile_from_per_band_s2_and_separate_vv_vh_files(shared_samples, tmp_path):
    """BigEarthNet as it ships: S2 one file per band at 10/20/60 m, S1 VV and VH files; S1 folders renamed to their S2
    partner (`corresponding_s2_patch`), the layout documented for data.source."""
    import json
    import shutil

    ben = shared_samples.parent / "bigearthnet-v1-samples"
    if not ben.is_dir():
        pytest.skip(f"BigEarthNet samples not found at {ben}")
    root = tmp_path / "ben"
    for s1_dir in sorted((ben / "BigEarthNet-S1").iterdir()):
        name = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())["corresponding_s2_patch"]
        shutil.copytree(s1_dir, root / "S1GRD" / name)
        shutil.copytree(ben / "BigEarthNet-S2" / name, root / "S2L2A" / name)
    out = tmp_path / "ben.zarr"
    tiles = small_tile_params(size=48, stride=48, split_block=48, val_fraction=0.2, test_fraction=0.2)
    make_tiles(root, out, tiles, seed=0, attrs={})
    ds = open_store(out, need=("s1", "s2"))
    assert ds.attrs["s1_product"] == "S1GRD" and set(ds.attrs["s2_offsets"].values()) == {0}  # 2017-18: no offset
    months = dict(zip(ds.scene.values.astype(str), ds.month.values))  # no date tags: from the product names
    assert months["S2A_MSIL2A_20170613T101031_87_48"] == 6 and months["S2B_MSIL2A_20180204T94161_57_38"] == 2
    name = "S2A_MSIL2A_20170613T101031_87_48"
    i = list(ds.tile.values.astype(str)).index(f"{name}_r00048_c00048")
    s2, s1 = ds.s2.values[i], ds.s1.values[i]
    folder = root / "S2L2A" / name
    with rasterio.open(folder / f"{name}_B04.tif") as b04, rasterio.open(folder / f"{name}_B05.tif") as b05:
        assert b04.res == (10.0, 10.0) and b05.res == (20.0, 20.0)
        assert np.array_equal(s2[S2_BANDS.index("B04")], b04.read(1, window=Window(48, 48, 48, 48)).astype(np.float32))
        coarse = b05.read(1, window=Window(24, 24, 24, 24)).astype(np.float64)
    upsampled = s2[S2_BANDS.index("B05")].astype(np.float64)
    # bilinear: each 20 m pixel's 2x2 block of 10 m pixels averages back close to it, and the field is not blocky
    blocks = upsampled.reshape(24, 2, 24, 2).mean(axis=(1, 3))
    assert np.abs(blocks[2:-2, 2:-2] - coarse[2:-2, 2:-2]).mean() < 0.05 * coarse.mean()
    assert not np.array_equal(upsampled[0::2, 0::2], upsampled[1::2, 0::2])  # nearest would repeat rows
    assert np.isfinite(s2).all() and s2[S2_BANDS.index("B01")].std() > 0  # 60 m bands too
    s1_dir = next((root / "S1GRD" / name).glob("*_VV.tif")).parent
    with rasterio.open(next(s1_dir.glob("*_VV.tif"))) as vv, rasterio.open(next(s1_dir.glob("*_VH.tif"))) as vh:
        window = Window(48, 48, 48, 48)
        assert np.array_equal(s1, np.stack([vv.read(1, window=window), vh.read(1, window=window)]).astype(np.float32))
