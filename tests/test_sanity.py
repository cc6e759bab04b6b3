"""Unit checks on input values: S1 must be dB, S2 reflectance x 10^4, the L2A offset removed only where there is one."""

import numpy as np
import pytest
import rasterio
from affine import Affine

from gac.data.sanity import (
    SAMPLE_PIXELS,
    check_s1_band_count,
    check_s1_db,
    check_s2_scaled,
    remove_s2_offset,
    sample_values,
)
from gac.data.synth import make_scene
from gac.errors import GacError


def s1_db(shape=(64, 64), seed=0) -> np.ndarray:
    """VV around -11 dB, VH around -18 dB, with speckle-like spread: what real S1 RTC looks like."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(-11, 3, shape), rng.normal(-18, 3, shape)]).astype(np.float32)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_db_backscatter_is_accepted_with_nodata_and_positive_urban_pixels():
    values = s1_db()
    values[:, :8] = np.nan
    values[:, 20, 20] = 4.5  # a bright corner reflector
    check_s1_db(values, "s1.tif")


def test_linear_power_is_detected_with_the_measured_median():
    linear = 10.0 ** (s1_db() / 10.0)
    linear[:, :4] = np.nan
    median = float(np.nanmedian(linear))
    assert 0.01 < median < 0.1  # the same pixels as dB -11 / -18, in linear power
    with pytest.raises(GacError) as excinfo:
        check_s1_db(linear, "scenes/S1RTC/a.tif")
    message = one_line(excinfo)
    assert message.startswith("scenes/S1RTC/a.tif: looks like linear power, not dB")
    assert f"all values >= 0, median {median:.3g}" in message
    assert "10*log10(value)" in message


def test_optical_values_passed_as_s1_are_detected():
    scene = make_scene(seed=0, index=1, size=64)
    optical = scene.s2[:2].astype(np.float32)  # two bands of reflectance x 10^4: a band-count check alone misses this
    median = float(np.median(optical))
    with pytest.raises(GacError) as excinfo:
        check_s1_db(optical, "s1.tif")
    message = one_line(excinfo)
    assert f"values look like optical reflectance (median {median:.0f}), not radar backscatter in dB" in message
    assert "pass the Sentinel-1 (VV, VH) GeoTIFF" in message


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_empty_s1_and_s2_are_refused(fill):
    with pytest.raises(GacError, match=r"^s1\.tif: every pixel is nodata"):
        check_s1_db(np.full((2, 16, 16), fill, np.float32), "s1.tif")
    with pytest.raises(GacError, match=r"^s2\.tif: every pixel is nodata"):
        check_s2_scaled(np.full((12, 16, 16), fill, np.float32), "s2.tif")


def test_band_count_messages():
    check_s1_band_count(2, "s1.tif")
    for count in (12, 13):
        with pytest.raises(GacError) as excinfo:
            check_s1_band_count(count, "x/S1RTC/a.tif")
        assert one_line(excinfo) == (f"x/S1RTC/a.tif: {count} bands, which looks like a Sentinel-2 file passed as Sentinel-1; "
                                     "pass the Sentinel-1 GeoTIFF (2 bands: VV, VH)")
    with pytest.raises(GacError) as excinfo:
        check_s1_band_count(3, "a.tif")
    assert one_line(excinfo) == "a.tif: 3 band(s), but Sentinel-1 needs 2 (VV VH); export the file with exactly VV, VH in that order"


def test_s2_as_0_1_floats_is_detected_and_x10000_accepted():
    s2 = make_scene(seed=0, index=0, size=64).s2.astype(np.float32)
    s2[s2 == 0] = np.nan
    check_s2_scaled(s2, "s2.tif")
    unit = s2 / 10_000
    p99 = float(np.nanpercentile(unit, 99))
    with pytest.raises(GacError) as excinfo:
        check_s2_scaled(unit, "S2L2A/a.tif")
    message = one_line(excinfo)
    assert message.startswith(f"S2L2A/a.tif: looks like reflectance as 0-1 floats (99th percentile {p99:.3g}); GAC expects reflectance x 10^4")
    assert "multiply by 10000" in message


def test_offset_is_removed_exactly_negatives_kept_nan_kept():
    dn = np.array([[[1000, 1234, 11000, np.nan, 995], [1001, 4000, 2500, 1800, 1500]]], dtype=np.float32)  # 1 of 9 valid below 1000
    out = remove_s2_offset(dn, 1000, "s2.tif")
    expected = np.array([[[0, 234, 10000, np.nan, -5], [1, 3000, 1500, 800, 500]]], dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)  # -5: a slightly negative reflectance, kept
    unchanged = remove_s2_offset(dn, 0, "s2.tif")
    assert unchanged.dtype == np.float32
    np.testing.assert_array_equal(unchanged, dn)


def test_offset_on_a_scene_without_one_is_refused_with_the_share():
    s2 = make_scene(seed=0, index=1, size=64).s2.astype(np.float32)  # the demo has no offset
    share = float((s2 < 1000).mean())
    assert share > 0.2
    with pytest.raises(GacError) as excinfo:
        remove_s2_offset(s2, 1000, "S2L2A/b.tif")
    assert one_line(excinfo) == (f"S2L2A/b.tif: data.s2_offset is 1000 but {share:.0%} of valid pixels are below 1000: "
                                 "this scene has no L2A offset; set data.s2_offset: 0")
    np.testing.assert_array_equal(remove_s2_offset(s2 + 1000, 1000, "S2L2A/b.tif"), s2)  # the same scene with its offset


def test_demo_scenes_pass_every_check():
    for index in range(4):
        scene = make_scene(seed=3, index=index, size=64)
        check_s1_db(scene.s1_db, "demo s1")
        s2 = scene.s2.astype(np.float32)
        s2[s2 == 0] = np.nan
        check_s2_scaled(s2, "demo s2")


def write_tif(path, data, nodata):
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype,
                   crs="EPSG:32632", transform=Affine(10, 0, 500_000, 0, -10, 5_300_000), nodata=nodata,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_sample_values_decimates_a_large_file_and_keeps_nodata(tmp_path):
    size = 2000
    data = np.arange(size * size, dtype=np.float32).reshape(1, size, size)  # every pixel a distinct value
    data[:, :, :1000] = -9999  # the left half is nodata
    path = tmp_path / "big.tif"
    write_tif(path, data, nodata=-9999)
    with rasterio.open(path) as dataset:
        default = sample_values(dataset)
        small = sample_values(dataset, max_pixels=250_000)
    assert default.shape == (1, 1000, 1000) and default.shape[1] * default.shape[2] <= SAMPLE_PIXELS
    assert small.shape == (1, 500, 500) and small.dtype == np.float32
    assert np.isnan(small[:, :, :250]).all() and np.isfinite(small[:, :, 250:]).all()
    # nearest: every sampled value is one of the file's own pixels, never a blend
    assert np.isin(small[:, :, 250:], data).all()


def test_sample_values_reads_a_small_file_whole(tmp_path):
    data = s1_db((40, 30))
    path = tmp_path / "small.tif"
    write_tif(path, data, nodata=None)
    with rasterio.open(path) as dataset:
        np.testing.assert_array_equal(sample_values(dataset), data)


def test_sample_values_names_a_corrupt_file(tmp_path):
    size = 1024
    data = np.random.default_rng(0).normal(size=(2, size, size)).astype(np.float32)
    path = tmp_path / "cut.tif"
    write_tif(path, data, nodata=None)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with rasterio.open(path) as dataset, pytest.raises(GacError, match=r"cut\.tif: truncated or corrupt GeoTIFF.*export the file again"):
        sample_values(dataset)


def test_real_terramesh_samples_pass(shared_samples):
    s1_files = sorted((shared_samples / "S1RTC").glob("*.tif"))
    s2_files = sorted((shared_samples / "S2L2A").glob("*.tif"))
    assert len(s1_files) == len(s2_files) >= 1
    for s1_path, s2_path in zip(s1_files, s2_files):
        with rasterio.open(s1_path) as s1, rasterio.open(s2_path) as s2:
            check_s1_band_count(s1.count, s1_path)
            s1_values, s2_values = sample_values(s1), sample_values(s2)
        check_s1_db(s1_values, s1_path)
        assert np.nanmedian(s1_values) < 0  # real dB: the median sits well below 0
        check_s2_scaled(s2_values, s2_path)


def test_the_offset_check_tells_offset_and_plain_terramesh_samples_apart(shared_samples):
    """Sources differ even within TerraMesh: 433D_629L has no value below 969 (offset kept), the others ~50% below 1000."""
    offset_kept = {}
    for path in sorted((shared_samples / "S2L2A").glob("*.tif")):
        with rasterio.open(path) as dataset:
            values = sample_values(dataset)
        try:
            remove_s2_offset(values, 1000, path)
            offset_kept[path.stem] = True
        except GacError as error:
            assert "set data.s2_offset: 0" in str(error)
            offset_kept[path.stem] = False
    assert offset_kept == {"282D_485L_3_3": False, "433D_629L_3_1": True, "637U_59R_1_3": False}
