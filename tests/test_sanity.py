"""Checks on input values: S1 in the units said, S2 reflectance x 10^4, the L2A offset removed only where it is."""

import numpy as np
import pytest
import rasterio
from affine import Affine

from gac.data.sanity import (
    SAMPLE_PIXELS,
    check_s1_band_count,
    check_s1_units,
    check_s2_scaled,
    mask_kind,
    no_offset_evidence,
    remove_s2_offset,
    sample_values,
)
from gac.data.synth import make_scene
from gac.errors import GacError
from tests.conftest import SHARED_SAMPLES

SHARED_BEN = SHARED_SAMPLES.parent / "bigearthnet-v1-samples"


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
    check_s1_units(values, "s1.tif")


def test_linear_power_is_detected_with_the_measured_median_even_with_negative_values():
    linear = 10.0 ** (s1_db() / 10.0)
    linear[:, :4] = np.nan
    linear[:, 10, :20] = -0.002  # thermal-noise removal: a few slightly negative powers
    median = float(np.nanmedian(linear))
    assert 0.01 < median < 0.1  # the same pixels as dB -11 / -18, in linear power
    with pytest.raises(GacError) as excinfo:
        check_s1_units(linear, "scenes/S1RTC/a.tif")
    message = one_line(excinfo)
    assert message.startswith(f"scenes/S1RTC/a.tif: looks like linear power or amplitude, not dB (median {median:.3g};")
    assert "set data.s1_units: linear (gac translate: --s1-units linear)" in message
    check_s1_units(linear, "a.tif", "linear")  # told: accepted
    check_s1_units(np.sqrt(np.abs(linear)), "a.tif", "amplitude")


def test_db_told_linear_is_refused():
    values = s1_db()
    with pytest.raises(GacError) as excinfo:
        check_s1_units(values, "vv.tif", "amplitude")
    assert one_line(excinfo) == (
        f"vv.tif: looks like dB, not amplitude (median {np.median(values):.3g}; amplitude "
        "backscatter is never negative); set data.s1_units: db (gac translate: --s1-units db)"
    )


def test_optical_values_passed_as_s1_are_detected():
    scene = make_scene(seed=0, index=1, size=64)
    optical = scene.s2[:2].astype(np.float32)  # two bands of reflectance x 10^4: a band-count check alone misses this
    median = float(np.median(optical))
    with pytest.raises(GacError) as excinfo:
        check_s1_units(optical, "s1.tif")
    message = one_line(excinfo)
    assert f"values look like optical reflectance (median {median:.0f}), not radar backscatter" in message
    assert "pass the Sentinel-1 (VV, VH) GeoTIFF" in message


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_empty_s1_and_s2_are_refused(fill):
    with pytest.raises(GacError, match=r"^s1\.tif: every pixel is nodata"):
        check_s1_units(np.full((2, 16, 16), fill, np.float32), "s1.tif")
    with pytest.raises(GacError, match=r"^s2\.tif: every pixel is nodata"):
        check_s2_scaled(np.full((12, 16, 16), fill, np.float32), "s2.tif")


def test_band_count_messages():
    check_s1_band_count(2, "s1.tif")
    for count in (12, 13):
        with pytest.raises(GacError) as excinfo:
            check_s1_band_count(count, "x/S1RTC/a.tif")
        assert one_line(excinfo) == (
            f"x/S1RTC/a.tif: {count} bands, which looks like a Sentinel-2 file passed as Sentinel-1; "
            "pass the Sentinel-1 GeoTIFF (2 bands: VV, VH)"
        )
    with pytest.raises(GacError) as excinfo:
        check_s1_band_count(3, "a.tif")
    assert (
        one_line(excinfo)
        == "a.tif: 3 band(s), but Sentinel-1 needs 2 (VV VH); export the file with exactly VV, VH in that order"
    )


def test_s2_as_0_1_floats_is_detected_and_x10000_accepted():
    s2 = make_scene(seed=0, index=0, size=64).s2.astype(np.float32)
    s2[s2 == 0] = np.nan
    check_s2_scaled(s2, "s2.tif")
    unit = s2 / 10_000
    p99 = float(np.nanpercentile(unit, 99))
    with pytest.raises(GacError) as excinfo:
        check_s2_scaled(unit, "S2L2A/a.tif")
    message = one_line(excinfo)
    assert message.startswith(
        f"S2L2A/a.tif: looks like reflectance as 0-1 floats (99th percentile {p99:.3g}); GAC expects reflectance x 10^4"
    )
    assert "multiply by 10000" in message


def test_offset_is_removed_exactly_negatives_kept_nan_kept():
    dn = np.array([[[1000, 1234, 11000, np.nan, 995], [1001, 4000, 2500, 1800, 1500]]], dtype=np.float32)
    out = remove_s2_offset(dn, 1000)
    expected = np.array([[[0, 234, 10000, np.nan, -5], [1, 3000, 1500, 800, 500]]], dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)  # -5: a slightly negative reflectance, kept
    unchanged = remove_s2_offset(dn, 0)
    assert unchanged.dtype == np.float32
    np.testing.assert_array_equal(unchanged, dn)


# Surface reflectance x 10^4 per class (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12), typical figures
WATER = (300, 250, 200, 100, 40, 10, 0, 0, 0, 0, 0, 0)  # NIR/SWIR at 0 +- noise, as L2A gives
VEGETATION = (250, 300, 550, 300, 800, 2300, 2800, 3000, 3100, 1000, 1500, 700)
SAND = (900, 1000, 1350, 1900, 2300, 2600, 2800, 2900, 3100, 1100, 3800, 3200)
ROCK = (600, 650, 850, 1000, 1300, 1500, 1650, 1800, 1900, 800, 2500, 2100)
SNOW = (8800, 8700, 8600, 8400, 8100, 7800, 7600, 7400, 7200, 5000, 600, 400)


def landscape(shares: dict, size: int = 100, seed: int = 0, noise: float = 40) -> np.ndarray:
    """(12, size, size) reflectance x 10^4: rows of each class by share, with Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows, start = np.zeros((12, size, size)), 0
    for spectrum, share in shares.items():
        stop = size if spectrum is list(shares)[-1] else start + int(round(share * size))
        rows[:, start:stop] = np.asarray(spectrum, dtype=np.float64)[:, None, None]
        start = stop
    return (rows + rng.normal(0, noise, rows.shape)).astype(np.float32)


def test_an_ocean_scene_with_the_offset_is_not_mistaken_for_one_without():
    """80% ocean: its near-zero NIR/SWIR dips below 1000 (~23% of all values); the old all-values test refused it."""
    dn = landscape({WATER: 0.8, VEGETATION: 0.2}) + 1000
    assert 0.2 < float(np.mean(dn < 1000)) < 0.3  # more than the 20% the old test allowed
    assert no_offset_evidence(dn) is None


@pytest.mark.parametrize("scene", ["desert", "snow"])
def test_a_desert_or_snow_scene_without_the_offset_is_refused_with_1000(scene):
    """Bright scenes have few values below 1000 overall (the old test, < 20%, accepted them); the land's visible bands
    (desert) and values far below the offset (snow's SWIR) tell."""
    from gac.data.readers import resolve_s2_offset

    dn = landscape({SAND: 0.8, ROCK: 0.2}) if scene == "desert" else landscape({SNOW: 1.0})
    assert float(np.mean(dn < 1000)) < 0.2
    with pytest.raises(GacError) as excinfo:
        resolve_s2_offset(1000, dn, None, "S2L2A/x.tif")
    message = one_line(excinfo)
    assert message.startswith("S2L2A/x.tif: data.s2_offset is 1000, but ") and message.endswith(
        ": this scene has no L2A offset; set data.s2_offset: 0"
    )
    told = "visible values (B02-B04) are below 1000" if scene == "desert" else "below 500 (a reflectance under"
    assert told in message
    assert resolve_s2_offset("auto", dn, None, "x.tif") == 0
    assert resolve_s2_offset("auto", dn + 1000, None, "x.tif") == 1000
    assert resolve_s2_offset(1000, dn + 1000, None, "x.tif") == 1000


def test_offset_on_a_demo_scene_without_one_is_refused_with_the_share():
    from gac.data.readers import resolve_s2_offset

    s2 = make_scene(seed=0, index=1, size=64).s2.astype(np.float32)  # the demo has no offset
    land = s2[10] > s2[2]
    share = float(np.mean(s2[1:4][:, land] < 1000))
    assert share > 0.5
    with pytest.raises(GacError) as excinfo:
        resolve_s2_offset(1000, s2, None, "S2L2A/b.tif")
    assert one_line(excinfo) == (
        f"S2L2A/b.tif: data.s2_offset is 1000, but {share:.0%} of its land pixels' visible "
        "values (B02-B04) are below 1000: this scene has no L2A offset; set data.s2_offset: 0"
    )
    assert resolve_s2_offset(1000, s2 + 1000, None, "S2L2A/b.tif") == 1000  # the same scene with its offset
    assert resolve_s2_offset(0, s2 + 1000, None, "S2L2A/b.tif") == 0  # an explicit 0 is the user's word


def test_offset_metadata_tags_names_and_scales(tmp_path):
    from gac.data.readers import offset_from_metadata

    data = np.full((2, 8, 8), 1500, np.uint16)
    cases = {
        "tag.tif": ({"BOA_ADD_OFFSET_B2": "-1000"}, None, (1000, "its BOA_ADD_OFFSET_B2 tag (-1000)")),
        "baseline.tif": ({"PROCESSING_BASELINE": "03.01"}, None, (0, "its PROCESSING_BASELINE tag (03.01)")),
        "scaled.tif": ({}, ((1e-4, 1e-4), (-0.1, -0.1)), (1000, "its band scale/offset (0.0001, -0.1)")),
        "S2B_MSIL2A_20240601T101559_N0510_R065_T32TQM_20240601T131501.tif": (
            {},
            None,
            (1000, "processing baseline N0510 in its name"),
        ),
        "S2A_MSIL2A_20210601T101559_N0300_R065_T32TQM_20210601T131501.tif": (
            {},
            None,
            (0, "processing baseline N0300 in its name"),
        ),
        "plain.tif": ({}, None, None),
    }
    for name, (tags, scaling, expected) in cases.items():
        path = tmp_path / name
        write_tif(path, data, nodata=0)
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(**tags)
            if scaling:
                dst.scales, dst.offsets = scaling
        with rasterio.open(path) as dataset:
            assert offset_from_metadata([dataset], [path]) == expected, name
    folder = tmp_path / "S2A_MSIL2A_20230601T101559_N0509_R065_T32TQM_20230601T131501.SAFE" / "IMG_DATA"
    folder.mkdir(parents=True)
    with rasterio.open(tmp_path / "plain.tif") as dataset:  # the product name on a folder above the band file counts
        found = offset_from_metadata([dataset], [folder / "T32TQM_B02_10m.tif"])
    assert found == (1000, "processing baseline N0509 in its name")


def test_cloud_masks_binary_scl_or_refused():
    assert mask_kind(np.array([[0, 1, 1]], np.float32), "m.tif") == "binary"
    assert mask_kind(np.array([[0, 255, 255]], np.float32), "m.tif") == "binary"  # read as SCL it would fill nothing
    assert mask_kind(np.array([[4, 8, 9, np.nan]], np.float32), "scl.tif") == "scl"
    for values, shown in (([0, 1, 2, 128], "0, 1, 2, 128"), ([0.0, 0.5], "0, 0.5"), ([0, 12], "0, 12")):
        with pytest.raises(GacError) as excinfo:
            mask_kind(np.array([values], np.float32), "mask.tif")
        assert one_line(excinfo) == (
            f"mask.tif: values {shown} are neither a 0/1 (or 0/255) mask nor Sentinel-2 SCL "
            "classes 0-11; pass the scene's SCL layer or a mask with 1 (or 255) where "
            "clouds are"
        )


def test_ground_pixel_size_tells_a_10m_grid_from_web_mercator():
    from rasterio.crs import CRS

    from gac.data.readers import ground_pixel_size, is_10m_grid

    utm = Affine(10, 0, 680_000, 0, -10, 5_000_000)  # 180 km east of zone 32's central meridian, 45 N
    size = ground_pixel_size(CRS.from_epsg(32632), utm, 100, 100)
    assert all(abs(v - 10) < 0.01 for v in size) and is_10m_grid(CRS.from_epsg(32632), utm, 100, 100)
    for lat, ground in ((60.0, 5.0), (45.0, 7.07), (1.0, 10.0)):
        y = 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
        mercator = Affine(10, 0, 1_000_000, 0, -10, y + 500)
        measured = ground_pixel_size(CRS.from_epsg(3857), mercator, 100, 100)
        assert all(abs(v - ground) < 0.1 for v in measured), (lat, measured)  # x and y differ by ~0.7% on the ellipsoid
        assert is_10m_grid(CRS.from_epsg(3857), mercator, 100, 100) == (lat == 1.0)


def test_demo_scenes_pass_every_check():
    for index in range(4):
        scene = make_scene(seed=3, index=index, size=64)
        check_s1_units(scene.s1_db, "demo s1")
        s2 = scene.s2.astype(np.float32)
        s2[s2 == 0] = np.nan
        check_s2_scaled(s2, "demo s2")


def write_tif(path, data, nodata):
    profile = dict(
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs="EPSG:32632",
        transform=Affine(10, 0, 500_000, 0, -10, 5_300_000),
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
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
    with (
        rasterio.open(path) as dataset,
        pytest.raises(GacError, match=r"cut\.tif: truncated or corrupt GeoTIFF.*export the file again"),
    ):
        sample_values(dataset)


def test_real_terramesh_samples_pass(shared_samples):
    s1_files = sorted((shared_samples / "S1RTC").glob("*.tif"))
    s2_files = sorted((shared_samples / "S2L2A").glob("*.tif"))
    assert len(s1_files) == len(s2_files) >= 1
    for s1_path, s2_path in zip(s1_files, s2_files):
        with rasterio.open(s1_path) as s1, rasterio.open(s2_path) as s2:
            check_s1_band_count(s1.count, s1_path)
            s1_values, s2_values = sample_values(s1), sample_values(s2)
        check_s1_units(s1_values, s1_path)
        assert np.nanmedian(s1_values) < 0  # real dB: the median sits well below 0
        check_s2_scaled(s2_values, s2_path)


def test_the_offset_check_tells_offset_and_plain_terramesh_samples_apart(shared_samples):
    """Sources differ even within TerraMesh: 433D_629L has no value below 969 (offset kept), the others ~50% below
    1000."""
    from gac.data.readers import resolve_s2_offset

    found = {}
    for path in sorted((shared_samples / "S2L2A").glob("*.tif")):
        with rasterio.open(path) as dataset:
            values = sample_values(dataset)
        found[path.stem] = resolve_s2_offset("auto", values, None, path)
        evidence = no_offset_evidence(values)
        assert (evidence is None) == (found[path.stem] == 1000), evidence
    assert found == {"282D_485L_3_3": 0, "433D_629L_3_1": 1000, "637U_59R_1_3": 0}


def test_a_real_snow_scene_without_the_offset_is_told_by_its_swir(tmp_path):
    """BigEarthNet's Finnish February patch: snow everywhere (no land pixel), values up to 11,900, no offset."""
    folder = SHARED_BEN / "BigEarthNet-S2" / "S2B_MSIL2A_20180204T94161_57_38"
    if not folder.is_dir():
        pytest.skip(f"BigEarthNet samples not found at {SHARED_BEN}")
    from gac.data.readers import S2Reader, s2_band_files

    with S2Reader(s2_band_files(folder), 1000) as reader:
        with pytest.raises(GacError, match=r"data\.s2_offset is 1000, but \d+\.\d% of its values are below 500"):
            reader.check()
    with S2Reader(s2_band_files(folder), "auto") as reader:
        assert reader.check() == 0
