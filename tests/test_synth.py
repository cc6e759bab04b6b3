import numpy as np
import rasterio

from gac.data.store import S1_BANDS, S2_BANDS
from gac.data.synth import CLASS_NAMES, make_scene, write_demo


def test_demo_scene_is_deterministic_from_the_seed():
    a, b, c = make_scene(7, 1, 96), make_scene(7, 1, 96), make_scene(8, 1, 96)
    assert np.array_equal(a.s2, b.s2) and np.array_equal(a.s1_db, b.s1_db)
    assert not np.array_equal(a.s1_db, c.s1_db)


def test_demo_values_are_in_realistic_ranges_and_classes_differ():
    scene = make_scene(0, 1, 192)
    assert scene.s2.dtype == np.int16 and scene.s2.shape == (12, 192, 192)
    assert 1 <= scene.s2.min() and scene.s2.max() <= 10_000
    assert -40 < scene.s1_db.min() and scene.s1_db.max() < 10
    nir, red = S2_BANDS.index("B08"), S2_BANDS.index("B04")
    water = scene.landcover == CLASS_NAMES.index("water")
    forest = scene.landcover == CLASS_NAMES.index("forest")
    assert water.any() and forest.any()
    # water is dark in NIR and in radar; forest bright in NIR with strong VH volume scattering
    assert scene.s2[nir][water].mean() < 400 < 2000 < scene.s2[nir][forest].mean()
    assert scene.s1_db[1][water].mean() < scene.s1_db[1][forest].mean() - 10
    assert scene.s2[nir][forest].mean() > 3 * scene.s2[red][forest].mean()


def test_radar_and_optical_share_structure_so_the_mapping_is_learnable():
    from scipy.ndimage import uniform_filter

    scene = make_scene(0, 1, 192)
    vh = uniform_filter(scene.s1_db[1].astype(np.float64), 5)  # average out speckle
    nir = scene.s2[S2_BANDS.index("B08")].astype(np.float64)
    for name in ("forest", "cropland", "grassland"):  # within a class, radar and NIR follow the same vigour
        inside = scene.landcover == CLASS_NAMES.index(name)
        assert np.corrcoef(vh[inside], nir[inside])[0, 1] > 0.6, name


def test_demo_geotiffs_carry_utm_grid_bands_and_month(tmp_path):
    write_demo(tmp_path, seed=3, n_scenes=2, size=64)
    with (
        rasterio.open(tmp_path / "S2L2A" / "demo_01.tif") as s2,
        rasterio.open(tmp_path / "S1RTC" / "demo_01.tif") as s1,
    ):
        assert s2.crs == s1.crs and s2.crs.to_epsg() in range(32601, 32661)
        assert s2.res == (10.0, 10.0) and s2.transform == s1.transform
        assert s2.descriptions == S2_BANDS and s1.descriptions == S1_BANDS
        assert s2.count == 12 and s2.dtypes[0] == "int16" and s1.dtypes[0] == "float32"
        assert s2.tags()["ACQUISITION_DATE"] == "2024-04-15"
