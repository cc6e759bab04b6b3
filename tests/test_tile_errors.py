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


def tile(tmp_path, scenes, size=64, reproject="false", s2_offset=0, out_name="tiles.zarr"):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.format(size=size, reproject=reproject) + f"data:\n  s2_offset: {s2_offset}\n")
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
    rewrite(path, lambda d: np.pad(d, ((0, 0), (0, 0), (8, 0)), mode="edge"), transform=shifted, width=original.shape[2] + 8)
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
    assert_one_line_error(result, out, "S1RTC/demo_01.tif", "looks like linear power, not dB", "10*log10(value)")


def test_s1_in_linear_power_is_caught_before_reprojection(tmp_path, scenes):
    """Reprojection takes dB to linear and back: a linear file would turn into nonsense, not an error, if checked after."""
    from affine import Affine

    path = scenes / "S1RTC" / "demo_01.tif"
    with rasterio.open(path) as src:
        shifted = src.transform * Affine.translation(-8, 0)
    rewrite(path, lambda d: np.pad(10.0 ** (d / 10.0), ((0, 0), (0, 0), (8, 0)), mode="edge"), transform=shifted, width=136)
    result, out = tile(tmp_path, scenes, reproject="true")
    assert_one_line_error(result, out, "S1RTC/demo_01.tif", "looks like linear power")


def test_s2_passed_as_s1(tmp_path, scenes):
    shutil.copy(scenes / "S2L2A" / "demo_00.tif", scenes / "S1RTC" / "demo_00.tif")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S1RTC/demo_00.tif", "12 bands", "looks like a Sentinel-2 file passed as Sentinel-1")


def test_s2_as_0_1_floats(tmp_path, scenes):
    rewrite(scenes / "S2L2A" / "demo_02.tif", lambda d: (d / 10_000).astype(np.float32), dtype="float32")
    result, out = tile(tmp_path, scenes)
    assert_one_line_error(result, out, "S2L2A/demo_02.tif", "0-1 floats", "multiply by 10000")


def test_s2_offset_removes_the_l2a_offset_exactly(tmp_path, scenes):
    from gac.data.store import open_store

    result, plain = tile(tmp_path, scenes, out_name="plain.zarr")
    assert result.returncode == 0, result.stderr
    for path in sorted((scenes / "S2L2A").glob("*.tif")):  # baseline 04.00 products: DN = reflectance x 10^4 + 1000, 0 stays nodata
        rewrite(path, lambda d: np.where(d == 0, 0, d + 1000).astype(d.dtype))
    result, offset = tile(tmp_path, scenes, s2_offset=1000, out_name="offset.zarr")
    assert result.returncode == 0, result.stderr
    a, b = open_store(plain, need=("s2",)), open_store(offset, need=("s2",))
    assert list(a.tile.values) == list(b.tile.values) and a.sizes["tile"] > 0
    np.testing.assert_array_equal(b.s2.values, a.s2.values)


def test_s2_offset_on_a_scene_without_one_is_refused(tmp_path, scenes):
    result, out = tile(tmp_path, scenes, s2_offset=1000)
    assert_one_line_error(result, out, "S2L2A/demo_00.tif", "data.s2_offset is 1000 but", "of valid pixels are below 1000",
                          "set data.s2_offset: 0")


def test_synth_checks_real_pairs_before_copying(tmp_path, scenes):
    rewrite(scenes / "S1RTC" / "demo_02.tif", lambda d: 10.0 ** (d / 10.0))
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {scenes}\n")
    out = tmp_path / "copied"
    result = run_gac("synth", "--params", str(params), "--out", str(out))
    assert_one_line_error(result, out, "S1RTC/demo_02.tif", "looks like linear power")
