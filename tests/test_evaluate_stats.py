"""Uncertainty and breakdowns of the evaluation: bootstrap intervals, paired comparisons, the significance sentence,
per-land-cover metrics; and the land-cover layer from the demo scenes and from a user's raster in another CRS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gac.evaluate.stats import bootstrap_interval, paired_comparisons, paired_difference


def test_bootstrap_interval_contains_the_mean_is_seeded_and_shrinks_with_more_tiles():
    rng = np.random.default_rng(7)
    few, many = rng.normal(20.0, 3.0, 8), rng.normal(20.0, 3.0, 128)
    for values in (few, many):
        low, high = bootstrap_interval(values, resamples=1000, seed=1)
        assert low < values.mean() < high
    assert bootstrap_interval(few, seed=1) == bootstrap_interval(few, seed=1)
    assert bootstrap_interval(few, seed=1) != bootstrap_interval(few, seed=2)
    width = lambda v: np.subtract(*bootstrap_interval(v, seed=1)[::-1])  # noqa: E731
    assert width(many) < 0.5 * width(few)  # ~ 1/sqrt(n): 8 -> 128 tiles is a quarter
    # Hand-checked: a constant has a zero-width interval; missing values are left out.
    assert bootstrap_interval([3.0, None, float("nan"), 3.0, float("inf")]) == (3.0, 3.0)
    assert bootstrap_interval([None]) is None


def test_paired_difference_of_a_variant_with_itself_is_zero():
    values = [21.5, 18.2, None, 25.0, 19.9]
    same = paired_difference(values, values)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0, "n": 4}
    rows = {"opt_v3": [{"psnr": v, "ssim": 0.5} for v in values], "opt_v2": [{"psnr": v, "ssim": 0.5} for v in values]}
    assert paired_comparisons(rows, 200, 0, 0.95) == {"v3_vs_v2": {"psnr": same, "ssim": {**same, "n": 5}}}


def test_paired_difference_finds_a_consistent_gain():
    rng = np.random.default_rng(0)
    b = rng.normal(20, 3, 10)
    a = b + 0.3 + rng.normal(0, 0.05, 10)  # 0.3 dB better on every tile: small against the spread, but consistent
    result = paired_difference(a, b, resamples=1000, seed=0)
    assert result["diff"] == pytest.approx(np.mean(a - b))
    assert 0 < result["lo"] < result["diff"] < result["hi"]
    assert result["p"] == pytest.approx(2 / 2**10)  # exact signed-rank test, all 10 differences positive
    unpaired_low, _ = bootstrap_interval(a - 0 * b, seed=0)
    assert unpaired_low < b.mean()  # the means' intervals overlap; only pairing tells the gain is real


def test_significance_sentence_is_generated_from_the_numbers():
    from gac.evaluate.report import paired_table, significance_sentence

    gain = {"diff": 1.5, "lo": 0.8, "hi": 2.1, "p": 0.004, "n": 8}
    noise = {"diff": 0.2, "lo": -0.5, "hi": 0.9, "p": 0.46, "n": 8}
    worse_sam = {"diff": 2.0, "lo": 1.0, "hi": 3.0, "p": 0.008, "n": 8}
    metrics = {
        "tiles": 8,
        "split": "test",
        "confidence": 0.95,
        "paired": {"v2_vs_v1": {"psnr": gain, "sam_deg": worse_sam}, "v3_vs_v2": {"psnr": noise}},
    }
    sentence = significance_sentence(metrics)
    assert sentence.startswith("On these 8 test tiles, the differences that are significant")
    assert "v2 vs v1: psnr +1.50 (better, p=0.004), sam +2.00 (worse, p=0.008)" in sentence
    assert sentence.endswith("not significant in any metric: v3 vs v2.") and "\n" not in sentence
    table = paired_table(metrics)
    assert "**+1.50 [+0.80, +2.10], p=0.004**" in table and "+0.20 [-0.50, +0.90], p=0.460" in table


def test_per_class_metrics_of_a_two_class_tile_equal_hand_computed_ones():
    from gac.evaluate.landcover import per_class

    rng = np.random.default_rng(3)
    truth = rng.uniform(500, 4000, (1, 12, 16, 16))
    pred = truth.copy()
    codes = np.zeros((1, 16, 16), dtype=np.int16)
    codes[:, :, 8:] = 7
    pred[:, :, :, 8:] += 100.0  # class 7: every band off by 0.01 reflectance
    pred[0, :, 0, 0] = np.nan  # one nodata pixel in class 0
    codes[0, 15, 15] = -1  # one unknown pixel
    result = per_class({"v": pred}, truth, codes, {0: "water"})
    assert set(result) == {"water", "class_7"}
    seven = result["class_7"]["v"]
    assert seven["pixels"] == 16 * 8 - 1
    assert seven["rmse"] == pytest.approx(0.01)
    assert seven["psnr"] == pytest.approx(40.0)  # 10 log10(1 / 0.01^2)
    p, t = pred[0][:, codes[0] == 7] / 1e4, truth[0][:, codes[0] == 7] / 1e4
    cos = (p * t).sum(0) / np.linalg.norm(p, axis=0) / np.linalg.norm(t, axis=0)
    assert seven["sam_deg"] == pytest.approx(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    water = result["water"]["v"]
    assert (
        water["pixels"] == 16 * 8 - 1
        and water["rmse"] == 0.0
        and water["psnr"] is math.inf
        and water["sam_deg"] == pytest.approx(0, abs=1e-6)
    )


def test_demo_tiles_carry_the_procedural_land_cover(tiles_store, demo_scenes):
    from gac.data.store import open_store
    from gac.data.synth import CLASS_NAMES, make_scene

    tiles = open_store(tiles_store, need=("s2",))
    assert tiles.attrs["landcover_classes"] == {str(i): name for i, name in enumerate(CLASS_NAMES)}
    first = [i for i, s in enumerate(tiles.scene.values) if s == "demo_00"][0]
    row, col, size = int(tiles.row_off.values[first]), int(tiles.col_off.values[first]), tiles.sizes["y"]
    expected = make_scene(0, 0, 128).landcover[row : row + size, col : col + size]
    np.testing.assert_array_equal(tiles.landcover.values[first], expected)


def test_a_user_raster_in_another_crs_is_resampled_nearest_onto_the_s2_grid(demo_scenes, tmp_path):
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from gac.data.landcover import read_scene_landcover, resample_onto
    from gac.errors import GacError

    s2 = demo_scenes / "S2L2A" / "demo_01.tif"
    codes = np.zeros((128, 128), dtype=np.uint8)
    codes[:, 64:] = 80  # east half water (WorldCover code 80), west half tree cover (10)
    codes[:, :64] = 10
    with rasterio.open(s2) as ref:
        transform, width, height = calculate_default_transform(ref.crs, "EPSG:4326", ref.width, ref.height, *ref.bounds)
        wgs = np.zeros((height, width), dtype=np.uint8)
        reproject(
            codes,
            wgs,
            src_transform=ref.transform,
            src_crs=ref.crs,
            dst_transform=transform,
            dst_crs="EPSG:4326",
            resampling=Resampling.nearest,
        )
    raster = tmp_path / "worldcover.tif"
    with rasterio.open(
        raster,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(wgs, 1)
    resample_onto(raster, s2, tmp_path / "LANDCOVER" / "demo_01.tif", {10: "tree cover", 80: "water"})
    layer, names = read_scene_landcover(tmp_path, "demo_01", (128, 128))
    assert names == {10: "tree cover", 80: "water"}
    assert set(np.unique(layer)) <= {10, 80, -1}  # nearest: no averaged, invented classes
    inner = layer[8:-8, 8:-8]  # away from the reprojected edges
    assert (inner[:, :50] == 10).all() and (inner[:, 60:] == 80).all()
    with pytest.raises(
        GacError, match=r"missing.tif: data.landcover raster not found; fix the path or remove data.landcover"
    ):
        resample_onto(tmp_path / "missing.tif", s2, tmp_path / "x.tif", {})
    with pytest.raises(GacError, match=r"land cover is 128x128 px but its S2 scene is 64x64"):
        read_scene_landcover(tmp_path, "demo_01", (64, 64))


def test_the_report_says_what_was_resampled_and_warns_when_clusters_are_few():
    from gac.evaluate.report import results_table

    base = {"tiles": 6, "split": "test", "confidence": 0.95, "bootstrap_resamples": 1000}
    blocks = results_table({**base, "bootstrap_unit": "block", "bootstrap_clusters": 2})
    assert "2 map blocks resampled whole (the tiles of a map block drawn together)" in blocks
    assert "Only 2 map blocks: a bootstrap over so few understates the uncertainty" in blocks
    many = results_table({**base, "tiles": 40, "bootstrap_unit": "scene", "bootstrap_clusters": 12})
    assert "12 scenes resampled whole" in many and "Only" not in many
    tiles = results_table({**base, "bootstrap_unit": "tile", "bootstrap_clusters": 6})
    assert "6 tiles resampled one by one (as if independent)" in tiles and "Only" not in tiles
