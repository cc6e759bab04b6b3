"""`gac translate`: whole scenes, seamless, georeferenced, resumable, with uncertainty and gap-filling.

The trained models are made by tests/translate_artifacts.py with the
project's own builders and savers (no training), once per module. Most
behaviour is checked with the supervised baseline chain (fast, real U-Net);
TerraMind runs where the behaviour is TerraMind's (uncertainty, the full
chain, resume across processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from gac.translate.grid import TileGrid, axis_weights, tile_offsets
from tests.conftest import GAC, run_gac
from tests.numerics import assert_within_kernel_spread, within_kernel_spread
from tests.translate_artifacts import TILE, make_artifacts, params, smooth_s1, write_s1


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate-models")
    paths = make_artifacts(params(), root)
    (root / "params.yaml").write_text(json.dumps(_params_dict()))
    return {**paths, "params": root / "params.yaml", "root": root}


def _params_dict(**translate):
    from tests.translate_artifacts import PARAMS

    return {**PARAMS, "translate": {**PARAMS["translate"], **translate}}


def _write_params(path: Path, **translate) -> Path:
    path.write_text(json.dumps(_params_dict(**translate)))
    return path


def _model_args(arts) -> list[str]:
    return [
        "--stage2",
        str(arts["stage2"]),
        "--stage3",
        str(arts["stage3"]),
        "--baseline",
        str(arts["baseline"]),
        "--no-progress",
    ]


def _translate_lib(arts, scene: Path, out: Path, until="baseline", fill=None, **translate):
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options
    from gac.translate.run import translate as run

    p = params(until=until, **translate)
    options = Options(
        Artifacts(stage2=arts["stage2"], stage3=arts["stage3"], baseline=arts["baseline"]),
        *(fill or (None, None)),
        overwrite=True,
        progress=False,
    )
    return run(p, [scene], out, options)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# ----------------------------------------------------------------------------- grid


def test_tile_grid_covers_any_size_and_blend_weights_sum_to_one():
    assert tile_offsets(100, 32, 8) == [0, 23, 45, 68]  # spread evenly, the last flush with the end, never past it
    assert tile_offsets(113, 64, 16) == [0, 24, 49]  # not 0, 48, 49: no near-duplicate last tile
    assert tile_offsets(256, 64, 16) == [0, 48, 96, 144, 192]  # a length the stride fits: the plain stride
    assert tile_offsets(20, 32, 8) == [0]  # smaller than a tile: one (padded) tile
    for length, size, overlap in ((100, 32, 8), (113, 64, 16), (104, 64, 32), (65, 64, 32), (1000, 64, 16)):
        offsets = tile_offsets(length, size, overlap)
        assert all(a + size - b >= overlap for a, b in zip(offsets, offsets[1:]))  # neighbours share enough
        for kind in ("cosine", "linear"):
            weights = axis_weights(offsets, size, kind)
            total, blending = np.zeros(length), np.zeros(length, int)
            for start, w in zip(offsets, weights):
                total[start : start + size] += w
                blending[start : start + size] += (w > 0) & (w < 1)
            # a partition of unity before any normalising, and never more than two tiles blending at a pixel
            np.testing.assert_allclose(total, 1.0, atol=1e-12)
            assert blending.max() <= 2
    grid = TileGrid(150, 97, 32, 8, block_size=64)
    cover = np.zeros((150, 97), int)
    for r, c, h, w in grid.blocks():
        cover[r : r + h, c : c + w] += 1
    assert (cover == 1).all()
    assert grid.tiles_in((0, 0, 64, 64)) == [
        (i, j) for i in range(3) for j in range(3)
    ]  # offsets 0, 24, 48 touch [0, 64)


# ----------------------------------------------------------------------------- output


def test_cog_keeps_the_inputs_grid_with_bands_nodata_overviews_and_provenance(arts, tmp_path):
    from rasterio.transform import from_origin

    s1 = smooth_s1(600, 530)
    s1[:, :40, :50] = np.nan  # radar nodata corner
    transform = from_origin(399960, 5600040, 10, 10)
    scene = write_s1(tmp_path / "in" / "S1_scene.tif", s1, crs="EPSG:32631", transform=transform)
    result = run_gac(
        "translate",
        str(scene),
        "--out",
        str(tmp_path / "out"),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert result.returncode == 0, result.stderr
    assert "km2/s" in result.stderr
    with rasterio.open(tmp_path / "out" / "S1_scene.tif") as src:
        assert (src.crs.to_epsg(), src.transform, src.width, src.height) == (32631, transform, 530, 600)
        assert src.count == 12 and src.dtypes == ("uint16",) * 12 and src.nodata == 0
        assert src.descriptions == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.overviews(1) == [2]
        assert src.block_shapes[0] == (512, 512)
        tags = src.tags()
        values = src.read()
    assert tags["STAGES"] == "baseline" and tags["RANDOM_WEIGHTS"] == "false" and tags["UNITS"] == "reflectance x 10^4"
    assert (
        json.loads(tags["ADAPTERS"]).keys() == {"baseline"} and len(tags["PARAMS_HASH"]) == 16 and tags["MONTH"] == "6"
    )
    assert (values[:, :40, :50] == 0).all()  # no radar, no optical
    assert (values[:, 40:, :] > 0).all() and (values[:, :, 50:] > 0).all()
    assert (tmp_path / "out" / "S1_scene.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "S1_scene.partial").exists()


class ContextChain:
    """A stand-in for a model whose output depends on the whole tile (as TerraMind's tokens and Prithvi's attention do):
    each pixel is its S1 value plus its tile's mean. Neighbouring tiles disagree, so only the blending can hide the
    borders."""

    def __call__(self, batch):
        s1 = batch.s1
        values = 100 * (s1[:, :1] + s1.mean(axis=(1, 2, 3), keepdims=True)) + 5000
        return np.repeat(values, 12, axis=1)


def _column_jumps(image: np.ndarray, overlap: int) -> tuple[float, float]:
    """Largest mean |difference| between neighbouring columns at tile borders, and inside tiles."""
    jumps = np.abs(np.diff(image.astype(np.float64), axis=2)).mean(axis=(0, 1))
    offsets = tile_offsets(image.shape[2], TILE, overlap)
    borders = sorted({o - 1 for o in offsets[1:]} | {o + TILE - 1 for o in offsets[:-1]})
    inside = [c for c in range(len(jumps)) if c not in borders]
    return float(jumps[borders].max()), float(jumps[inside].max())


@pytest.mark.parametrize("overlap, seamless", [(8, True), (0, False)])
def test_seams_blend_away_with_overlap_and_show_without_it(tmp_path, overlap, seamless):
    from gac.translate.run import SceneJob
    from gac.translate.source import open_s1

    scene = open_s1(write_s1(tmp_path / "smooth.tif", smooth_s1(64, 160)), reproject=False)
    try:
        job = SceneJob(
            params(overlap=overlap), scene, TileGrid(64, 160, TILE, overlap, block_size=256), ContextChain(), samples=1
        )
        mosaic, _ = job.compute((0, 0, 64, 160))
    finally:
        scene.close()
    border, inside = _column_jumps(mosaic, overlap)
    assert (border <= inside) is seamless, (border, inside)  # without overlap the borders show: the check can fail


def test_real_model_mosaic_has_no_seams(arts, tmp_path):
    scene = write_s1(tmp_path / "smooth.tif", smooth_s1(96, 160))
    _translate_lib(arts, scene, tmp_path / "out")
    border, inside = _column_jumps(_read(tmp_path / "out" / "smooth.tif"), 8)
    assert border <= inside


@pytest.mark.kernels
def test_block_size_does_not_change_the_mosaic_and_tiny_scenes_work(arts, tmp_path):
    scene = write_s1(tmp_path / "odd.tif", smooth_s1(75, 131, seed=2))
    runs = _translate_lib(arts, scene, tmp_path / "b64", block_size=64)[0]["tile_runs"]
    _translate_lib(arts, scene, tmp_path / "b1024", block_size=1024)
    # 3 x 6 tiles of 32 px (overlap 8) over 2 x 3 blocks of 64 px: each tile runs once, though a tile row and two
    # tile columns straddle block borders (run once per block that touches them, that was 36 runs)
    grid = TileGrid(75, 131, TILE, 8, block_size=64)
    assert (len(grid.rows), len(grid.cols), len(grid.blocks())) == (3, 6, 6)
    assert runs == grid.n_tiles == 18 and sum(len(grid.tiles_in(b)) for b in grid.blocks()) == 36
    a, b = _read(tmp_path / "b64" / "odd.tif"), _read(tmp_path / "b1024" / "odd.tif")
    assert a.shape == (12, 75, 131)
    # Other blocks batch other tiles together: equal within float kernels' spread, and a wrong ramp is not.
    assert_within_kernel_spread(a, b, "block sizes 64 and 1024")
    _translate_lib(arts, scene, tmp_path / "linear", block_size=1024, blend="linear")
    assert not within_kernel_spread(_read(tmp_path / "linear" / "odd.tif"), b)
    small = write_s1(tmp_path / "small.tif", smooth_s1(20, 27))  # smaller than one tile
    _translate_lib(arts, small, tmp_path / "small")
    out = _read(tmp_path / "small" / "small.tif")
    assert out.shape == (12, 20, 27) and (out > 0).all()


# ----------------------------------------------------------------------------- TerraMind: the full chain, uncertainty


def test_full_chain_v3_writes_the_scene_and_records_every_model(arts, tmp_path):
    scene = write_s1(tmp_path / "s.tif", smooth_s1(40, 56))
    summary = _translate_lib(arts, scene, tmp_path / "v3", until="v3", block_size=64)
    with rasterio.open(tmp_path / "v3" / "s.tif") as src:
        tags, values = src.tags(), src.read()
    assert summary[0]["tile_runs"] == 4 and values.shape == (12, 40, 56) and (values > 0).all()
    assert tags["STAGES"] == "stage1 stage2 stage3" and tags["RANDOM_WEIGHTS"] == "true"
    assert json.loads(tags["ADAPTERS"]).keys() == {"stage2", "stage3"}
    assert json.loads(tags["WEIGHTS"]) == {"stage1": "random", "stage2": "random", "stage3": "random"}


@pytest.fixture(scope="module")
def v1_chain():
    """Stage 1 with the tokenizer's zero-initialised output conv set non-zero, so outputs depend on the tokens."""
    from gac.translate.chain import Artifacts, Chain

    chain = Chain(params(until="v1"), "v1", Artifacts(), TILE, torch.device("cpu"))
    out_conv = chain.stages[0].model.tokenizer["tok_sen2l2a@224"].decoder.out[-1]
    with torch.no_grad():
        out_conv.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    return chain


def test_uncertainty_is_zero_at_temperature_zero_and_positive_above(v1_chain, tmp_path):
    from gac.terramind import Decoding
    from gac.translate.run import SceneJob
    from gac.translate.source import open_s1

    scene = open_s1(write_s1(tmp_path / "u.tif", smooth_s1(32, 48)), reproject=False)
    grid = TileGrid(32, 48, TILE, 8, block_size=64)
    spreads = {}
    try:
        for temperature in (0.0, 1.0):
            v1_chain.set_decoding(Decoding(temperature=temperature, timesteps=1))
            job = SceneJob(params(until="v1", uncertainty=3), scene, grid, v1_chain, samples=3)
            mean, spread = job.compute((0, 0, 32, 48))
            spreads[temperature] = spread
            assert mean.shape == spread.shape == (12, 32, 48) and np.isfinite(mean).all()
    finally:
        scene.close()
    assert spreads[0.0].max() == 0.0
    assert spreads[1.0].mean() > 1.0  # DN: three token draws disagree


# ----------------------------------------------------------------------------- gap-filling


def _write_s2(path: Path, values: np.ndarray, like: Path, dtype="uint16") -> Path:
    with rasterio.open(like) as src:
        profile = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=values.shape[0],
            dtype=dtype,
            crs=src.crs,
            transform=src.transform,
            nodata=0 if dtype == "uint16" else None,
        )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
    return path


CLOUD = 9000  # DN every band shows under the cloud: any of it left in the output shows


def _cloudy_scene(tmp_path, height=64, width=80):
    """A scene, its S2 (random clear values, CLOUD under the clouds) and the cloud's footprint: one cloud touching the
    scene's top and right borders, one shadow inside."""
    scene = write_s1(tmp_path / "g.tif", smooth_s1(height, width))
    rng = np.random.default_rng(0)
    s2 = rng.integers(200, 4000, (12, height, width)).astype(np.uint16)
    cloud = np.zeros((height, width), bool)
    cloud[0:20, 50:] = True  # at the border
    shadow = np.zeros_like(cloud)
    shadow[40:50, 10:20] = True
    s2[:, cloud] = CLOUD
    return scene, s2, cloud, shadow


@pytest.mark.parametrize("kind", ["scl", "scl-20m", "binary", "binary-255"])
def test_gap_fill_leaves_no_cloud_at_the_border_or_the_mask_edge(arts, tmp_path, kind):
    """Masked pixels take the translation whole (no trace of CLOUD); clear pixels more than `feather` (3) px from it
    keep the S2 bit for bit, and the ones nearer blend the two."""
    from rasterio.transform import Affine

    scene, s2, cloud, shadow = _cloudy_scene(tmp_path)
    s2_path = _write_s2(tmp_path / "s2.tif", s2, scene)
    scl = np.full((1, 64, 80), 4, np.uint8)  # vegetation
    scl[0, cloud], scl[0, shadow] = 9, 3  # cloud high probability, cloud shadow
    if kind == "scl-20m":  # SCL as delivered: 20 m, resampled nearest onto the 10 m grid by GAC
        with rasterio.open(scene) as src:
            profile = dict(
                driver="GTiff",
                width=40,
                height=32,
                count=1,
                dtype="uint8",
                crs=src.crs,
                transform=src.transform * Affine.scale(2),
            )
        mask_path = tmp_path / "scl20.tif"
        with rasterio.open(mask_path, "w", **profile) as dst:
            dst.write(scl[:, ::2, ::2])
    elif kind == "scl":
        mask_path = _write_s2(tmp_path / "scl.tif", scl, scene, dtype="uint8")
    else:
        marked = 1 if kind == "binary" else 255
        mask_path = _write_s2(tmp_path / "mask.tif", np.where(np.isin(scl, (3, 9)), marked, 0), scene, dtype="uint8")
    _translate_lib(arts, scene, tmp_path / "plain")
    _translate_lib(arts, scene, tmp_path / "filled", fill=(s2_path, mask_path))
    plain, filled = _read(tmp_path / "plain" / "g.tif"), _read(tmp_path / "filled" / "g.tif")
    masked = cloud | shadow
    assert np.array_equal(filled[:, masked], plain[:, masked])  # the translation whole: no masked pixel keeps cloud
    assert (filled[:, cloud] != CLOUD).all() and (plain[:, cloud] != CLOUD).all()
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~masked)
    far, near = distance > 3, (distance > 0) & (distance <= 3)
    assert np.array_equal(filled[:, far], s2[:, far])  # bit for bit
    lo, hi = np.minimum(s2[:, near], plain[:, near]), np.maximum(s2[:, near], plain[:, near])
    assert ((filled[:, near] >= lo - 1) & (filled[:, near] <= hi + 1)).all() and (filled[:, near] != s2[:, near]).any()
    assert CLOUD not in filled


def test_gap_fill_from_per_band_s2_files_at_native_resolution(arts, tmp_path):
    """--fill-s2 given a folder of band files (10 m B02 B03 B04 B08, 20 m and 60 m others): 10 m bands bit for bit where
    clear; the coarser ones resampled bilinearly onto the grid."""
    from rasterio.transform import Affine

    from gac.data.store import S2_BANDS

    scene, s2, cloud, shadow = _cloudy_scene(tmp_path, 60, 84)
    yy, xx = np.mgrid[0:60, 0:84]
    smooth = (1500 + 800 * np.sin(xx / 13.0) * np.cos(yy / 17.0)).astype(np.uint16)
    s2[:, ~(cloud | shadow)] = smooth[~(cloud | shadow)]
    folder = tmp_path / "S2B_MSIL2A_20230601T101559_N0509_R065_T32TQM_20230601T131501"  # baseline 05.09: +1000 offset
    folder.mkdir()
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    for b, band in enumerate(S2_BANDS):
        factor = 1 if band in ("B02", "B03", "B04", "B08") else 6 if band in ("B01", "B09") else 2
        coarse = (s2[b].astype(np.float64) + 1000).reshape(60 // factor, factor, 84 // factor, factor).mean(axis=(1, 3))
        with rasterio.open(
            folder / f"T32TQM_20230601T101559_{band}_{10 * factor}m.tif",
            "w",
            driver="GTiff",
            count=1,
            width=coarse.shape[1],
            height=coarse.shape[0],
            dtype="uint16",
            crs=crs,
            transform=transform * Affine.scale(factor),
        ) as dst:
            dst.write(np.rint(coarse).astype(np.uint16)[None])
    mask_path = _write_s2(tmp_path / "mask.tif", (cloud | shadow)[None].astype(np.uint8), scene, dtype="uint8")
    _translate_lib(arts, scene, tmp_path / "filled", fill=(folder, mask_path))
    filled = _read(tmp_path / "filled" / "g.tif").astype(np.float64)
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~(cloud | shadow))
    for b, band in enumerate(S2_BANDS):
        if band in ("B02", "B03", "B04", "B08"):
            far = distance > 3
            assert np.array_equal(filled[b][far], s2[b][far].astype(np.float64)), band  # less the offset, no more
        else:  # a smooth field back from 20 / 60 m (away from where the coarse pixels mixed in the cloud)
            far = distance > 14
            assert np.abs(filled[b][far] - s2[b][far]).mean() < 40, band


def test_a_mask_that_is_neither_binary_nor_scl_is_refused(arts, tmp_path):
    scene, s2, cloud, _ = _cloudy_scene(tmp_path)
    s2_path = _write_s2(tmp_path / "s2.tif", s2, scene)
    mask_path = _write_s2(tmp_path / "prob.tif", np.where(cloud, 87, 3)[None], scene, dtype="uint8")  # a probability
    result = run_gac(
        "translate",
        str(scene),
        "--out",
        str(tmp_path / "out"),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        "--fill-s2",
        str(s2_path),
        "--cloud-mask",
        str(mask_path),
        *_model_args(arts),
    )
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (
        f"gac: error: {mask_path}: values 3, 87 are neither a 0/1 (or 0/255) mask "
        "nor Sentinel-2 SCL classes 0-11; pass the scene's SCL layer or a mask with 1 "
        "(or 255) where clouds are"
    )


def test_gap_fill_removes_the_l2a_offset_when_told(arts, tmp_path):
    from gac.params import validate_params
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options
    from gac.translate.run import translate as run

    scene = write_s1(tmp_path / "o.tif", smooth_s1(32, 32))
    s2 = np.random.default_rng(1).integers(200, 4000, (12, 32, 32)).astype(np.uint16)
    s2_path = _write_s2(tmp_path / "s2.tif", s2 + 1000, scene)
    mask_path = _write_s2(tmp_path / "m.tif", np.zeros((1, 32, 32)), scene, dtype="uint8")
    for setting in (1000, "auto"):  # forced, or found from the values (no metadata here)
        p = validate_params({**_params_dict(until="baseline"), "data": {"s2_offset": setting}})
        options = Options(Artifacts(baseline=arts["baseline"]), s2_path, mask_path, overwrite=True, progress=False)
        run(p, [scene], tmp_path / "out", options)
        assert np.array_equal(_read(tmp_path / "out" / "o.tif"), s2)


# ----------------------------------------------------------------------------- reprojection


def test_scene_off_the_10m_grid_is_refused_or_reprojected_to_its_utm_zone(arts, tmp_path):
    from rasterio.transform import from_origin

    coarse = write_s1(tmp_path / "coarse.tif", smooth_s1(30, 40), transform=from_origin(500000, 5000000, 20, 20))
    refused = run_gac(
        "translate",
        str(coarse),
        "--out",
        str(tmp_path / "no"),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert (
        refused.returncode == 2 and "20 x 20 metre" in refused.stderr and "translate.reproject: true" in refused.stderr
    )
    assert not (tmp_path / "no").exists()
    _translate_lib(arts, coarse, tmp_path / "utm", reproject=True)
    with rasterio.open(tmp_path / "utm" / "coarse.tif") as src:
        assert (src.crs.to_epsg(), src.res, src.width, src.height) == (32633, (10.0, 10.0), 80, 60)
        assert (src.read() > 0).all()
    lonlat = write_s1(
        tmp_path / "lonlat.tif", smooth_s1(40, 40), crs="EPSG:4326", transform=from_origin(15.0, 45.2, 0.0002, 0.0002)
    )
    _translate_lib(arts, lonlat, tmp_path / "geo", reproject=True)
    with rasterio.open(tmp_path / "geo" / "lonlat.tif") as src:
        assert src.crs.to_epsg() == 32633 and src.res == (10.0, 10.0)  # 15 E, 45 N: UTM zone 33 N
        assert abs(src.width - 40 * 0.0002 * 111320 * np.cos(np.radians(45.2)) / 10) < 3
        values = src.read()
    assert (values > 0).mean() > 0.9  # the reprojected footprint is nearly all valid (rotation leaves corners empty)


# ------------------------------------------------------------------------ bad inputs: one line, exit 2, nothing written


def _bad(tmp_path: Path, make) -> tuple[list[str], str]:
    """(command-line args, expected message part) for one broken input."""
    return make(tmp_path)


def _bands(tmp_path):
    return [
        str(write_s1(tmp_path / "three.tif", np.concatenate([smooth_s1(32, 32), smooth_s1(32, 32)[:1]])))
    ], "3 band(s)"


def _s2_as_s1(tmp_path):
    return [str(write_s1(tmp_path / "s2.tif", np.full((12, 32, 32), 1500.0)))], "Sentinel-2"


def _linear(tmp_path):
    return [str(write_s1(tmp_path / "lin.tif", 10 ** (smooth_s1(32, 32) / 10)))], "linear power"


def _empty(tmp_path):
    return [str(write_s1(tmp_path / "nan.tif", np.full((2, 32, 32), np.nan)))], "every pixel is nodata"


def _no_crs(tmp_path):
    import rasterio

    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=2, dtype="float32") as dst:
        dst.write(smooth_s1(32, 32))
    return [str(path)], "has no CRS"


@pytest.mark.parametrize(
    "make", [_bands, _s2_as_s1, _linear, _empty, _no_crs], ids=["bands", "s2-as-s1", "linear", "nodata", "no-crs"]
)
def test_bad_s1_inputs_are_one_line_and_write_nothing(arts, tmp_path, make):
    args, expected = make(tmp_path)
    result = run_gac(
        "translate",
        *args,
        "--out",
        str(tmp_path / "out"),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("gac: error:")]
    assert len(lines) == 1 and expected in lines[0] and args[0] in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_bad_models_fill_inputs_and_existing_outputs_are_one_line(arts, tmp_path):
    import shutil

    scene = str(write_s1(tmp_path / "scene.tif", smooth_s1(32, 32)))
    wrong_size = tmp_path / "stage3-small"
    shutil.copytree(arts["stage3"], wrong_size)
    record = json.loads((wrong_size / "adapter.json").read_text())
    (wrong_size / "adapter.json").write_text(json.dumps({**record, "model": "terramind_v1_small_generate"}))
    from tests.translate_artifacts import make_stage2

    other_backbone = make_stage2(params(), tmp_path / "stage2-100", backbone="prithvi_eo_v2_100_tl")
    s2_01 = _write_s2(tmp_path / "s2_01.tif", np.full((12, 32, 32), 0.12), Path(scene), dtype="float32")
    mask = _write_s2(tmp_path / "mask.tif", np.zeros((1, 32, 32)), Path(scene), dtype="uint8")
    out = tmp_path / "out"
    cases = [
        (["--stage3", str(tmp_path / "missing")], "dvc repro train-stage3"),
        (["--stage3", str(wrong_size)], "terramind_v1_small_generate"),
        (["--stage2", str(other_backbone)], "prithvi_eo_v2_100_tl"),
        (["--until", "baseline", "--fill-s2", str(s2_01), "--cloud-mask", str(mask)], "multiply by 10000"),
        (["--until", "baseline", "--fill-s2", str(s2_01)], "needs both --fill-s2"),
        (["--until", "baseline", "--uncertainty", "3"], "the baseline U-Net is deterministic"),
        (["--until", "v1", "--uncertainty", "1"], "needs N >= 2"),
    ]
    for extra, expected in cases:
        result = run_gac(
            "translate", scene, "--out", str(out), "--params", str(arts["params"]), *_model_args(arts), *extra
        )
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, (
            extra,
            result.stderr,
        )
        assert not out.exists(), extra
    _translate_lib(arts, Path(scene), out)  # an earlier run's output
    assert (out / "scene.tif").is_file()
    again = run_gac(
        "translate",
        scene,
        "--out",
        str(out),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    forced = run_gac(
        "translate",
        scene,
        "--out",
        str(out),
        "--until",
        "baseline",
        "--overwrite",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert forced.returncode == 0, forced.stderr


def test_outputs_are_replaced_whole_and_only_by_the_run_that_owns_them(arts, tmp_path, monkeypatch):
    """--overwrite without --uncertainty removes an earlier run's uncertainty COG (it would describe another image);
    a partial directory left by a run with other settings does not let a run skip the existing-output check; the
    run that was interrupted while writing its own outputs finishes them without --overwrite."""
    import gac.evaluate.quicklooks
    from gac.errors import GacError
    from gac.translate.chain import Artifacts
    from gac.translate.run import Options
    from gac.translate.run import translate as run

    scene, out = write_s1(tmp_path / "s.tif", smooth_s1(32, 48)), tmp_path / "out"
    _translate_lib(arts, scene, out, until="v1", uncertainty=2)
    assert (out / "s_uncertainty.tif").is_file()
    _translate_lib(arts, scene, out)  # --overwrite, baseline, no uncertainty
    assert (out / "s.tif").is_file() and (out / "s.png").is_file() and not (out / "s_uncertainty.tif").exists()

    def once(overwrite: bool):
        models = Artifacts(stage2=arts["stage2"], stage3=arts["stage3"], baseline=arts["baseline"])
        return run(params(until="baseline"), [scene], out, Options(models, overwrite=overwrite, progress=False))

    foreign = out / "s.partial"
    foreign.mkdir()
    (foreign / "run.json").write_text(json.dumps({"input": "another scene", "reads": {}}))
    with pytest.raises(GacError, match="already exists; pass --overwrite"):
        once(overwrite=False)

    def killed(*args, **kwargs):  # the process dies once the image COG is in place, before its quicklook
        raise KeyboardInterrupt

    before = (out / "s.tif").stat().st_mtime_ns
    with monkeypatch.context() as patch:
        patch.setattr(gac.evaluate.quicklooks, "scene_quicklook", killed)
        with pytest.raises(KeyboardInterrupt):
            once(overwrite=True)
    assert (out / "s.tif").stat().st_mtime_ns != before and (out / "s.partial" / "run.json").is_file()
    once(overwrite=False)  # its own interrupted run: finished without --overwrite
    assert (out / "s.png").is_file() and not (out / "s.partial").exists()


# ----------------------------------------------------------------------------- resume and torchrun


@pytest.mark.kernels
def test_killed_run_resumes_to_the_same_bytes_and_two_ranks_agree(arts, tmp_path):
    """SIGKILL once the first block is done, resume, and compare with one uninterrupted run (the library, in this
    process; same machine, batch size and threads: the same bytes) and with torchrun -n 2 (one thread per rank:
    other float kernels, so equal within their spread, tests/numerics.py). Under torchrun, rank 0 writes the COG
    only once rank 1 has exited: no rank waits on a collective while rank 0 writes.

    Stages 1 and 2: stage 2's output varies within tiles (stage 1 alone is flat under random weights), so the
    values compared depend on which tiles were blended into which block.
    """
    scene = write_s1(tmp_path / "k.tif", smooth_s1(64, 64))
    prm = str(_write_params(tmp_path / "p.json", until="v2", block_size=32, infer={"batch_size": 2}))
    args = ["translate", str(scene), "--params", prm, "--no-progress", *_model_args(arts)]
    _translate_lib(arts, scene, tmp_path / "whole", until="v2", block_size=32, infer={"batch_size": 2})
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(GAC), *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    markers = out / "k.partial" / "done"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (markers.is_dir() and any(markers.iterdir())):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(markers.iterdir()))
    assert 1 <= done_before < 4 and not (out / "k.tif").exists()
    resumed = run_gac(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming, {done_before} of 4 block(s)" in resumed.stderr
    reference = (tmp_path / "whole" / "k.tif").read_bytes()
    assert (out / "k.tif").read_bytes() == reference

    torchrun = Path(sys.executable).with_name("torchrun")
    exited = tmp_path / "exited"
    exited.mkdir()
    ranks = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            str(Path(__file__).with_name("torchrun_rank0_writes_last.py")),
            *args[1:],
            "--out",
            str(tmp_path / "ranks"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GAC_TEST_EXITED": str(exited)},
    )
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    assert "rank 1/2" in ranks.stderr and (exited / "1").is_file()
    whole = _read(tmp_path / "whole" / "k.tif")
    assert whole.std(axis=(1, 2)).min() > 10  # not a flat image
    assert_within_kernel_spread(_read(tmp_path / "ranks" / "k.tif"), whole, "two ranks and one process")
    # Mistakes the same check catches: another blend ramp, tiles one pixel off their place.
    _translate_lib(arts, scene, tmp_path / "linear", until="v2", block_size=32, infer={"batch_size": 2}, blend="linear")
    assert not within_kernel_spread(_read(tmp_path / "linear" / "k.tif"), whole)
    assert not within_kernel_spread(np.roll(whole, 1, axis=2), whole)


def test_real_terramesh_s1_scenes_translate_on_their_own_grid(arts, shared_samples, tmp_path):
    """Real S1RTC (float64 dB, UTM, 10 m, no optical partner given): checked, translated, same grid out."""
    scenes = sorted((shared_samples / "S1RTC").glob("*.tif"))
    summaries = _translate_lib(arts, shared_samples / "S1RTC", tmp_path / "out")
    assert [s["scene"] for s in summaries] == [p.stem for p in scenes]
    for path in scenes:
        with rasterio.open(path) as s1, rasterio.open(tmp_path / "out" / path.name) as out:
            assert (out.crs, out.transform, out.shape) == (s1.crs, s1.transform, s1.shape)
            radar = np.isfinite(s1.read()).all(axis=0)
            values = out.read()
        assert ((values > 0).all(axis=0) == radar).all()  # output exactly where the radar has data


# ----------------------------------------------------------------------------- inputs as delivered


def test_real_terramesh_scene_with_an_inf_border_translates_until_v2(arts, shared_samples, tmp_path):
    """A GRD's zero-filled border is -inf in dB. Read as nodata it is NaN before any model sees it: no crash in
    TerraMind's token sampling, and the output is nodata exactly where the radar has none."""
    source = shared_samples / "S1RTC" / "637U_59R_1_3.tif"
    with rasterio.open(source) as src:
        profile, values = src.profile, src.read()
    border = np.zeros(values.shape[1:], bool)
    border[:5], border[-5:], border[:, :5], border[:, -5:] = True, True, True, True
    values[:, border] = -np.inf
    scene = tmp_path / "637U_59R_1_3_inf.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(values)
        dst.update_tags(datetime="2017-10-30T05:32:30")
    for until in ("v2", "baseline"):  # before: v2 stopped in token sampling, the baseline blanked the border's tiles
        _translate_lib(arts, scene, tmp_path / until, until=until)
        out = _read(tmp_path / until / scene.name)
        assert out.shape == (12, 224, 224)
        assert (out[:, border] == 0).all() and (out[:, ~border] > 0).all(), until


def test_separate_vv_vh_files_in_linear_power_translate_as_the_db_stack(arts, tmp_path):
    db = smooth_s1(40, 56)
    power = 10.0 ** (db / 10.0)
    db[:, :4, :4], power[:, :4, :4] = np.nan, 0.0  # nodata: NaN in dB, 0 in linear power (its log is -inf)
    stack = write_s1(tmp_path / "db" / "scene.tif", db)
    vv = write_s1(tmp_path / "lin" / "scene_VV.tif", power[:1])
    vh = write_s1(tmp_path / "lin" / "scene_VH.tif", power[1:])
    args = ["--until", "baseline", "--params", str(arts["params"]), *_model_args(arts)]
    assert run_gac("translate", str(stack), "--out", str(tmp_path / "a"), *args).returncode == 0
    refused = run_gac("translate", "--vv", str(vv), "--vh", str(vh), "--out", str(tmp_path / "b"), *args)
    assert refused.returncode == 2 and f"{vv}: looks like linear power or amplitude, not dB" in refused.stderr
    assert "--s1-units linear" in refused.stderr and not (tmp_path / "b").exists()
    for how in (["--vv", str(vv), "--vh", str(vh)], [str(vv)]):  # a VV file alone brings its VH partner
        result = run_gac("translate", *how, "--s1-units", "linear", "--out", str(tmp_path / "b"), "--overwrite", *args)
        assert result.returncode == 0, result.stderr
        a, b = _read(tmp_path / "a" / "scene.tif").astype(int), _read(tmp_path / "b" / "scene.tif").astype(int)
        assert (b[:, :4, :4] == 0).all() and (b[:, 4:, :] > 0).all()
        assert np.abs(a - b).max() <= 1  # the same dB, up to float rounding


def test_reprojected_windows_do_not_depend_on_where_they_are_read(tmp_path):
    """A 1 m scene resampled to 10 m: GDAL widens the bilinear kernel by the ratio (10 source px), so a window read
    with a fixed 2 px margin gave its border other values than the same pixels in a larger window (block seams)."""
    from rasterio.transform import from_origin

    from gac.translate.source import open_s1

    rng = np.random.default_rng(0)
    fine = (smooth_s1(800, 800) + rng.normal(0, 2, (2, 800, 800))).astype(np.float32)
    scene = open_s1(write_s1(tmp_path / "fine.tif", fine, transform=from_origin(500000, 5000000, 1, 1)), reproject=True)
    try:
        assert scene.reprojected and (scene.height, scene.width) == (80, 80) and scene.crs.to_epsg() == 32633
        whole = scene.read(0, 0, 80, 80)
        for row, col in ((16, 16), (40, 8), (53, 51)):
            part = scene.read(row, col, 20, 24)
            np.testing.assert_allclose(part, whole[:, row : row + 20, col : col + 24], rtol=0, atol=1e-4)
    finally:
        scene.close()


def test_web_mercator_is_not_a_10m_grid_and_reprojects_to_utm(arts, tmp_path):
    from rasterio.transform import from_origin

    y = 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(60.0) / 2))  # 60 N: 10 map units are 5 m on the ground
    scene = write_s1(
        tmp_path / "merc.tif", smooth_s1(64, 64), crs="EPSG:3857", transform=from_origin(1_113_195, y, 10, 10)
    )
    refused = run_gac(
        "translate",
        str(scene),
        "--out",
        str(tmp_path / "no"),
        "--until",
        "baseline",
        "--params",
        str(arts["params"]),
        *_model_args(arts),
    )
    assert refused.returncode == 2 and "pixels are 10 x 10 metre (5" in refused.stderr
    assert "translate.reproject: true" in refused.stderr
    _translate_lib(arts, scene, tmp_path / "utm", reproject=True)
    with rasterio.open(tmp_path / "utm" / "merc.tif") as src:
        assert src.crs.to_epsg() == 32632 and src.res == (10.0, 10.0)  # 10 E, 60 N
        assert abs(src.width - 32) <= 2 and abs(src.height - 32) <= 2  # 640 x 5 m on the ground = 32 px of 10 m


def test_default_scenes_are_the_test_split_scenes_or_the_demo_scene(demo_scenes, tmp_path):
    from gac.data.store import open_store
    from gac.data.tiling import make_tiles
    from gac.params import validate_params
    from gac.translate.source import default_scenes
    from tests.conftest import small_tile_params

    tiles = tmp_path / "tiles.zarr"
    make_tiles(demo_scenes, tiles, small_tile_params(), seed=0, attrs={})
    ds = open_store(tiles)
    held_out = sorted(set(ds.scene.values.astype(str)[ds.split.values.astype(str) == "test"]))
    assert held_out and held_out != ["demo_00", "demo_01", "demo_02"]
    real = validate_params({"data": {"source": str(demo_scenes)}})
    chosen, why = default_scenes(real, demo_scenes, tiles)
    assert [s.name for s in chosen] == held_out and why.endswith(", ".join(held_out))
    assert chosen[0].files == (demo_scenes / "S1RTC" / f"{held_out[0]}.tif",)
    chosen, why = default_scenes(validate_params({}), demo_scenes, tiles)
    assert [s.name for s in chosen] == ["demo_00"] and "the demo's first scene" in why
    none = tmp_path / "no-test.zarr"
    make_tiles(demo_scenes, none, small_tile_params(test_fraction=0), seed=0, attrs={})
    expected = (
        f"translate.scenes is null and {none} has no test-split tiles: nothing to translate; list scenes in "
        "translate.scenes or set tile.test_fraction above 0"
    )
    assert default_scenes(real, demo_scenes, none) == ([], expected)
