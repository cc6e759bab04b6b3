"""Every bad input to `gac tile` gives one line naming the file or key and the fix, exit 2, and no store."""

import shutil

import numpy as np
import pytest
import rasterio

from tests.conftest import run_gac

PARAMS = "seed: 0\ntile:\n  size: {size}\n  stride: {size}\n  split_block: 64\n  reproject: {reproject}\n"


@pytest.fixture()
def scenes(demo_scenes, tmp_path):
    root = tmp_path / "scenes"
    shutil.copytree(demo_scenes, root)
    return root


def tile(tmp_path, scenes, size=64, reproject="false", out_name="tiles.zarr", **data):
    params = tmp_path / "params.yaml"
    data_section = "data:\n" + "".join(f"  {k}: {v}\n" for k, v in data.items()) if data else ""
    params.write_text(PARAMS.format(size=size, reproject=reproject) + data_section)
    out = tmp_path / out_name
    result = run_gac("tile", "--params", str(params), "--scenes", str(scenes), "--out", str(out))
    return result, out


def assert_one_line_error(result, out, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_s1_without_s2_partner(tmp_path, scenes):
    (scenes / "S2L2A" / "demo_01.tif").unlink()
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S1RTC/demo_01.tif", "no S2 partner")


def test_s2_without_s1_partner(tmp_path, scenes):
    (scenes / "S1RTC" / "demo_02.tif").unlink()
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S2L2A/demo_02.tif", "no S1 partner")


def test_truncated_tiff(tmp_path, scenes):
    path = scenes / "S2L2A" / "demo_01.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "demo_01.tif", "again")


def test_file_that_is_not_a_tiff(tmp_path, scenes):
    (scenes / "S1RTC" / "demo_00.tif").write_bytes(b"this is not a GeoTIFF at all" * 10)
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S1RTC/demo_00.tif", "unreadable")


def rewrite(path, transform_data=None, **profile_changes):
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(profile_changes)
    if transform_data:
        data = transform_data(data)
        profile["count"] = data.shape[0]
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_wrong_band_count(tmp_path, scenes):
    rewrite(scenes / "S2L2A" / "demo_00.tif", lambda d: d[:4])
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S2L2A/demo_00.tif", "4 band(s)", "needs 12")


def test_mismatched_crs_without_and_with_reprojection(tmp_path, scenes):
    path = scenes / "S1RTC" / "demo_01.tif"
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg()
    # same pixels declared one UTM zone over: a different CRS
    rewrite(path, crs=f"EPSG:{epsg + 1}")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S1RTC/demo_01.tif", f"EPSG:{epsg + 1}", "tile.reproject: true")


def test_reprojection_puts_shifted_s1_back_on_the_s2_grid(tmp_path, scenes):
    from affine import Affine

    from gac.data.store import open_store

    path = scenes / "S1RTC" / "demo_01.tif"
    with rasterio.open(path) as src:
        original = src.read()
        shifted = src.transform * Affine.translation(-8, 0)  # S1 grid starts 8 px further west...
    rewrite(
        path, lambda d: np.pad(d, ((0, 0), (0, 0), (8, 0)), mode="edge"), transform=shifted, width=original.shape[2] + 8
    )
    result, out = tile(tmp_path, scenes, reproject="true")
    assert result.returncode == 0, result.stderr
    ds = open_store(out, need=("s1",))
    i = list(ds.tile.values).index("demo_01_r00000_c00000")
    # ...so after reprojection onto the S2 grid the pixels line up again (bilinear at exact pixel centres)
    np.testing.assert_allclose(ds.s1.values[i], original[:, :64, :64], atol=1e-3)


def test_tile_size_not_multiple_of_16(tmp_path, scenes):
    result, out = tile(tmp_path, scenes, size=50)
    assert_one_line_error(result, out, "params.yaml", "tile.size", "multiple of 16")


def test_tile_larger_than_scene(tmp_path, scenes):
    result, out = tile(tmp_path, scenes, size=256)
    assert_one_line_error(result, out, "tile.size 256", "larger than scene", "<= 128")


def test_all_nodata_scene(tmp_path, scenes):
    rewrite(scenes / "S2L2A" / "demo_02.tif", lambda d: np.zeros_like(d))
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S2L2A/demo_02.tif", "every pixel is nodata")


def test_unknown_params_key(tmp_path, scenes):
    params = tmp_path / "params.yaml"
    params.write_text("tile:\n  sise: 64\n")
    out = tmp_path / "tiles.zarr"
    result = run_gac("tile", "--params", str(params), "--scenes", str(scenes), "--out", str(out))
    assert_one_line_error(result, out, "unknown key 'tile.sise'", "did you mean 'size'")


def test_a_failed_run_leaves_the_previous_store_untouched(tmp_path, scenes):
    result, out = tile(tmp_path, scenes)
    assert result.returncode == 0, result.stderr
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (scenes / "S2L2A" / "demo_01.tif").unlink()
    result, _ = tile(tmp_path, scenes)
    assert result.returncode == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_s1_in_linear_power(tmp_path, scenes):
    rewrite(scenes / "S1RTC" / "demo_01.tif", lambda d: 10.0 ** (d / 10.0))
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(
        result,
        out,
        "S1RTC/demo_01.tif",
        "looks like linear power or amplitude, not dB (median 0.0",
        "set data.s1_units: linear",
    )


def test_s1_in_db_told_linear_is_refused(tmp_path, scenes):
    result, out = tile(tmp_path, scenes, s1_units="linear")
    assert_one_line_error(
        result, out, "S1RTC/demo_00.tif", "looks like dB, not linear (median -1", "set data.s1_units: db"
    )


def _s1_tiles(out):
    from gac.data.store import open_store

    ds = open_store(out, need=("s1",))
    return list(ds.tile.values), ds.s1.values


@pytest.mark.parametrize("units", ["linear", "amplitude"])
def test_s1_delivered_as_separate_vv_vh_files_in_linear_units_tiles_as_the_db_stack(tmp_path, scenes, units):
    """What Planetary Computer / ASF deliver: one file per polarisation, linear power (or amplitude), 0 = nodata,
    a few slightly negative powers from thermal-noise removal. The tiles are the dB stack's, up to float rounding."""
    result, reference = tile(tmp_path, scenes, out_name="db.zarr")
    assert result.returncode == 0, result.stderr
    for path in sorted((scenes / "S1RTC").glob("*.tif")):
        with rasterio.open(path) as src:
            profile, db = src.profile, src.read()
        power = 10.0 ** (db / 10.0)
        values = power if units == "linear" else np.sqrt(power)
        if path.stem == "demo_00":  # 0: nodata; negative: noise-subtracted below zero, the noise floor
            values[:, 0, :3] = [[0.0, -1e-4, 0.0], [0.0, -2e-4, 0.0]]
        profile.update(count=1, nodata=None)
        for band, pol in enumerate(("VV", "VH")):
            with rasterio.open(path.with_name(f"{path.stem}_{pol}.tif"), "w", **profile) as dst:
                dst.write(values[band : band + 1].astype(np.float32))
        path.unlink()
    result, out = tile(tmp_path, scenes, out_name=f"{units}.zarr", s1_units=units)
    assert result.returncode == 0, result.stderr
    (ids, expected), (ids_now, s1) = _s1_tiles(reference), _s1_tiles(out)
    assert ids_now == ids
    first = ids.index("demo_00_r00000_c00000")
    assert np.isnan(s1[first][:, 0, 0]).all() and np.isnan(s1[first][:, 0, 2]).all()  # 0 is nodata in linear units
    assert (s1[first][:, 0, 1] == -35.0).all()  # a negative power: the noise floor, not a hole
    s1[first][:, 0, :3] = expected[first][:, 0, :3]
    np.testing.assert_allclose(s1, expected, atol=2e-4)


def test_s1_nodata_as_delivered_becomes_nan_never_inf(tmp_path, scenes):
    """A GRD's zero-filled border is -inf in dB; an undeclared fill value is named by data.s1_nodata."""
    from gac.data.store import open_store

    path = scenes / "S1RTC" / "demo_01.tif"
    rewrite(path, lambda d: np.where(np.arange(d.shape[2]) < 3, -np.inf, d).astype(np.float32))  # a 3 px -inf border
    top_rows = lambda d: np.where(np.arange(d.shape[1])[:, None] < 3, -9999.0, d).astype(np.float32)  # noqa: E731
    rewrite(scenes / "S1RTC" / "demo_02.tif", top_rows)
    result, out = tile(tmp_path, scenes, s1_nodata=-9999)
    assert result.returncode == 0, result.stderr
    ds = open_store(out, need=("s1",))
    s1, ids = ds.s1.values, list(ds.tile.values)
    assert not np.isinf(s1).any() and np.nanmin(s1) > -60
    left = s1[ids.index("demo_01_r00064_c00000")]
    assert np.isnan(left[:, :, :3]).all() and np.isfinite(left[:, :, 3:]).all()
    top = s1[ids.index("demo_02_r00000_c00064")]
    assert np.isnan(top[:, :3]).all() and np.isfinite(top[:, 3:]).all()


def test_s2_pixels_zero_in_every_band_are_nodata_without_a_declared_value(tmp_path, scenes):
    from gac.data.store import open_store

    path = scenes / "S2L2A" / "demo_01.tif"
    rewrite(path, lambda d: np.where(np.arange(d.shape[2]) < 2, 0, d).astype(d.dtype), nodata=None)  # undeclared 0 fill
    result, out = tile(tmp_path, scenes)
    assert result.returncode == 0, result.stderr
    ds = open_store(out, need=("s2",))
    left = ds.s2.values[list(ds.tile.values).index("demo_01_r00064_c00000")]
    assert np.isnan(left[:, :, :2]).all() and np.isfinite(left[:, :, 2:]).all()  # not black ground truth


def test_s2_on_web_mercator_is_refused_with_its_ground_pixel_size(tmp_path, scenes):
    from affine import Affine

    for folder in ("S1RTC", "S2L2A"):  # 10 map units at 60 N: 5 m on the ground
        rewrite(scenes / folder / "demo_01.tif", crs="EPSG:3857", transform=Affine(10, 0, 1_000_000, 0, -10, 8_399_737))
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(
        result, out, "S2L2A/demo_01.tif", "pixels are 10 x 10 metre (5.01 x 5 m on the ground", "not a 10 m grid"
    )


def test_s1_in_linear_power_is_caught_before_reprojection(tmp_path, scenes):
    """Reprojection takes dB to linear and back: a linear file would turn into nonsense, not an error, if checked
    after."""
    from affine import Affine

    path = scenes / "S1RTC" / "demo_01.tif"
    with rasterio.open(path) as src:
        shifted = src.transform * Affine.translation(-8, 0)
        original = src.read()
    rewrite(
        path, lambda d: np.pad(10.0 ** (d / 10.0), ((0, 0), (0, 0), (8, 0)), mode="edge"), transform=shifted, width=136
    )
    result, out = tile(tmp_path, scenes, reproject="true")
    assert_one_line_error(result, out, "S1RTC/demo_01.tif", "looks like linear power")
    for name in ("demo_00", "demo_02"):
        rewrite(scenes / "S1RTC" / f"{name}.tif", lambda d: 10.0 ** (d / 10.0))
    result, out = tile(tmp_path, scenes, reproject="true", s1_units="linear")  # told: converted to dB, then reprojected
    assert result.returncode == 0, result.stderr
    ids, s1 = _s1_tiles(out)
    np.testing.assert_allclose(s1[ids.index("demo_01_r00000_c00000")], original[:, :64, :64], atol=1e-3)


def test_s2_passed_as_s1(tmp_path, scenes):
    shutil.copy(scenes / "S2L2A" / "demo_00.tif", scenes / "S1RTC" / "demo_00.tif")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(
        result, out, "S1RTC/demo_00.tif", "12 bands", "looks like a Sentinel-2 file passed as Sentinel-1"
    )


def test_s2_as_0_1_floats(tmp_path, scenes):
    rewrite(scenes / "S2L2A" / "demo_02.tif", lambda d: (d / 10_000).astype(np.float32), dtype="float32")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S2L2A/demo_02.tif", "0-1 floats", "multiply by 10000")


@pytest.mark.parametrize("setting", ["1000", "auto"])
def test_s2_offset_removes_the_l2a_offset_exactly(tmp_path, scenes, setting):
    """1000 forces it; auto finds it per scene: demo_00 from its product name, the others from their values."""
    from gac.data.store import open_store

    result, plain = tile(tmp_path, scenes, out_name="plain.zarr")
    assert result.returncode == 0, result.stderr
    for path in sorted(
        (scenes / "S2L2A").glob("*.tif")
    ):  # baseline 04.00 products: DN = reflectance x 10^4 + 1000, 0 stays nodata
        rewrite(path, lambda d: np.where(d == 0, 0, d + 1000).astype(d.dtype))
    product = "S2B_MSIL2A_20240415T101559_N0510_R065_T32TQM_20240415T131501"
    for folder in ("S1RTC", "S2L2A"):
        (scenes / folder / "demo_00.tif").rename(scenes / folder / f"{product}.tif")
    result, offset = tile(tmp_path, scenes, s2_offset=setting, out_name="offset.zarr")
    assert result.returncode == 0, result.stderr
    a, b = open_store(plain, need=("s2",)), open_store(offset, need=("s2",))
    assert b.attrs["s2_offsets"] == {product: 1000, "demo_01": 1000, "demo_02": 1000}
    assert a.sizes["tile"] == b.sizes["tile"] > 0
    np.testing.assert_array_equal(b.s2.values, a.s2.values)


def test_s2_offset_on_a_scene_without_one_is_refused(tmp_path, scenes):
    result, out = tile(tmp_path, scenes, s2_offset=1000)
    assert_one_line_error(
        result,
        out,
        "S2L2A/demo_00.tif: data.s2_offset is 1000, but 9",
        "% of its land pixels' visible values (B02-B04) are below 1000: this scene has no L2A "
        "offset; set data.s2_offset: 0",
    )


def test_a_product_name_that_claims_the_offset_is_checked_against_the_values(tmp_path, scenes):
    """A source that harmonised the values but kept the product name (N0509): auto reads the name, the values refuse."""
    product = "S2A_MSIL2A_20230601T101559_N0509_R065_T32TQM_20230601T131501"
    for folder in ("S1RTC", "S2L2A"):
        (scenes / folder / "demo_01.tif").rename(scenes / folder / f"{product}.tif")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(
        result,
        out,
        f"{product}.tif: data.s2_offset is auto and processing baseline N0509 in its "
        "name says the L2A offset is 1000, but",
        "set data.s2_offset: 0",
    )


def test_synth_checks_real_pairs_before_copying(tmp_path, scenes):
    rewrite(scenes / "S1RTC" / "demo_02.tif", lambda d: 10.0 ** (d / 10.0))
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {scenes}\n")
    out = tmp_path / "copied"
    result = run_gac("synth", "--params", str(params), "--out", str(out))
    assert_one_line_error(result, out, "S1RTC/demo_02.tif", "looks like linear power")


def test_s1_vv_without_vh_is_named(tmp_path, scenes):
    path = scenes / "S1RTC" / "demo_01.tif"
    rewrite(path, lambda d: d[:1])
    path.rename(path.with_name("demo_01_VV.tif"))
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S1RTC/demo_01_VV.tif: VV without its VH partner (expected demo_01_VH.tif")
