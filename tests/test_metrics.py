"""Metrics against hand-computed values and the properties the issue names."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from gac.metrics import (
    LpipsMetric,
    aggregate,
    band_mse,
    json_safe,
    ms_ssim,
    psnr,
    sam_degrees,
    ssim,
    tile_metrics,
    unit_reflectance,
)

torch.set_num_threads(2)


def _image(size: int = 64, seed: int = 0) -> np.ndarray:
    """12-band reflectance x 10^4 with texture: smooth fields plus fine detail, band-dependent."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    bands = []
    for b in range(12):
        base = 800 + 250 * b + 600 * np.sin(2 * np.pi * (1 + b % 3) * xx) * np.cos(2 * np.pi * 2 * yy)
        bands.append(base + gaussian_filter(rng.normal(0, 400, (size, size)), 1.0))
    return np.clip(np.stack(bands), 0, 10000).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([gaussian_filter(band, sigma) for band in image])


def test_psnr_and_rmse_by_hand():
    target = np.zeros((2, 4, 4))
    pred = np.zeros((2, 4, 4))
    pred[0] += 0.1
    pred[1] += 0.2
    assert band_mse(pred, target) == pytest.approx([0.01, 0.04])
    # MSE over both bands = 0.025 -> 10 log10(1 / 0.025) = 16.0206 dB.
    assert psnr(pred, target) == pytest.approx(10 * math.log10(40), abs=1e-12)


def test_sam_by_hand():
    target = np.zeros((2, 3, 3))
    target[0] = 0.5
    pred = np.full((2, 3, 3), 0.5)  # spectrum (0.5, 0.5) against (0.5, 0): 45 degrees everywhere
    assert sam_degrees(pred, target) == pytest.approx(45.0, abs=1e-9)
    assert sam_degrees(2 * target, target) == pytest.approx(0.0, abs=1e-6)  # SAM ignores brightness


def test_identical_images_are_perfect():
    image = unit_reflectance(_image())
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-9)
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-9)
    assert sam_degrees(image, image) == pytest.approx(0.0, abs=1e-6)
    assert np.all(band_mse(image, image) == 0)


def test_blur_scores_lower_the_more_it_blurs():
    sharp = _image()
    scores = []
    for sigma in (0.7, 1.5, 3.0):
        row = tile_metrics(_blur(sharp, sigma), sharp)
        scores.append((row["psnr"], row["ssim"], row["ms_ssim"]))
    for name, column in zip(("psnr", "ssim", "ms_ssim"), zip(*scores)):
        assert column[0] > column[1] > column[2], (name, column)
    assert scores[0][1] < 1.0 and math.isfinite(scores[0][0])


def test_swapped_bands_raise_sam():
    image = _image()
    swapped = image.copy()
    swapped[[3, 7]] = image[[7, 3]]  # B04 <-> B08
    more = swapped.copy()
    more[[1, 10]] = image[[10, 1]]  # and B02 <-> B11
    sam_swap = tile_metrics(swapped, image)["sam_deg"]
    assert sam_swap > 1.0
    assert tile_metrics(more, image)["sam_deg"] > sam_swap


def test_scaling_clips_to_unit_reflectance():
    target = np.full((12, 32, 32), 10000.0)
    pred = np.full((12, 32, 32), 12500.0)  # above reflectance 1: clipped to the same value
    assert unit_reflectance(pred).max() == 1.0
    assert tile_metrics(pred, target)["psnr"] == math.inf
    # 1000 off in store units is 0.1 in reflectance: PSNR 20 dB.
    assert tile_metrics(target - 1000, target)["psnr"] == pytest.approx(20.0, abs=1e-9)


def test_nodata_pixels_do_not_count():
    image = _image(32)
    target = image.copy()
    target[:, :4, :4] = np.nan
    pred = image.copy()
    pred[:, :4, :4] = 9999.0  # garbage only where the truth has no data
    row = tile_metrics(pred, target)
    assert row["psnr"] == math.inf
    assert row["sam_deg"] == pytest.approx(0.0, abs=1e-6)
    assert row["ssim"] == pytest.approx(1.0, abs=1e-9)


def test_aggregate_means_and_pooled_rmse():
    rows = [
        {
            "psnr": 20.0,
            "ssim": 0.5,
            "ms_ssim": 0.6,
            "sam_deg": 10.0,
            "sar_edge": 0.1,
            "lpips": None,
            "mse": {"B02": 0.01},
        },
        {
            "psnr": 30.0,
            "ssim": 0.7,
            "ms_ssim": 0.8,
            "sam_deg": 20.0,
            "sar_edge": 0.3,
            "lpips": None,
            "mse": {"B02": 0.03},
        },
    ]
    agg = aggregate(rows)
    assert agg["tiles"] == 2
    assert agg["psnr"] == pytest.approx(25.0)
    assert agg["sam_deg"] == pytest.approx(15.0)
    assert agg["lpips"] is None
    assert agg["rmse"]["B02"] == pytest.approx(math.sqrt(0.02))
    # One identical tile makes the split's PSNR infinite, written as null in JSON.
    agg_inf = aggregate(rows + [{**rows[0], "psnr": math.inf}])
    assert agg_inf["psnr"] == math.inf
    assert json.loads(json.dumps(json_safe(agg_inf)))["psnr"] is None


def test_sar_edge_in_tile_metrics_prefers_the_matching_truth():
    # Fields (quadrants) that differ in both radar and optical: their boundaries are the shared edges.
    yy, xx = np.mgrid[0:64, 0:64]
    field = (yy >= 32).astype(float) * 2 + (xx >= 24)
    s2 = np.stack([1000 + 700 * field + 50 * b for b in range(12)])
    s1 = np.stack([-18 + 3 * field, -25 + 3 * field])
    matched = tile_metrics(s2, s2, s1_db=s1)["sar_edge"]
    shifted = tile_metrics(np.roll(s2, (14, 14), axis=(1, 2)), s2, s1_db=s1)["sar_edge"]
    flat = tile_metrics(np.full_like(s2, 1500), s2, s1_db=s1)["sar_edge"]
    assert matched > 0.8
    assert shifted < matched - 0.3
    assert flat == pytest.approx(0.0, abs=1e-6)


def test_lpips_reports_why_it_is_off():
    metric = LpipsMetric(enabled=False)
    assert metric(np.zeros((12, 32, 32)), np.zeros((12, 32, 32))) is None
    assert "false" in metric.reason
    auto = LpipsMetric(enabled=True)
    if not auto.available:
        assert auto(np.zeros((12, 32, 32)), np.zeros((12, 32, 32))) is None
        assert "LPIPS off" in auto.reason and "offline" in auto.reason
    else:  # trunk weights cached: identical images have distance 0
        image = unit_reflectance(_image(64))
        assert auto(image, image) == pytest.approx(0.0, abs=1e-6)


def test_real_s2_tile_blur_and_band_swap(shared_samples):
    """On a real Sentinel-2 L2A tile (not just synthetic texture) the properties hold too."""
    import rasterio

    path = sorted((shared_samples / "S2L2A").glob("*.tif"))[0]
    with rasterio.open(path) as src:
        truth = src.read().astype(np.float64)[:, :64, :64]
    light, heavy = tile_metrics(_blur(truth, 1.0), truth), tile_metrics(_blur(truth, 2.5), truth)
    assert math.isfinite(light["psnr"]) and light["psnr"] > heavy["psnr"]
    assert 1.0 > light["ssim"] > heavy["ssim"] and light["ms_ssim"] > heavy["ms_ssim"]
    swapped = truth.copy()
    swapped[[3, 7]] = truth[[7, 3]]
    assert tile_metrics(swapped, truth)["sam_deg"] > light["sam_deg"]


def test_gac_score_hand_values():
    from gac.metrics import gac_score

    assert gac_score(20.0, 0.4) == pytest.approx(0.5 * 0.4 + 0.5 * 0.5)
    assert gac_score(math.inf, 0.2) == pytest.approx(0.6)  # identical images: PSNR counts as 40 dB
    assert gac_score(-3.0, -1.0) == pytest.approx(-0.5)  # PSNR below 0 dB counts as 0
    assert gac_score(30.0, None) is None
    assert float(gac_score(torch.tensor(60.0), torch.tensor(0.5))) == pytest.approx(0.75)
