"""COG export: georeference, values, layout and provenance survive the round trip; bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from gac.data.store import S2_BANDS
from gac.errors import GacError
from gac.export import safe_name, write_cog

UTM = "EPSG:32632"
TRANSFORM = (10.0, 0.0, 549892.7, 0.0, -10.0, 6344077.6)


def test_write_cog_round_trip(tmp_path):
    values = np.random.default_rng(0).uniform(0, 8000, (12, 32, 32)).astype(np.float32)
    values[:, 0, 0] = np.nan
    path = write_cog(
        tmp_path / "a" / "t.tif", values, UTM, TRANSFORM, S2_BANDS, {"weights": "random", "random_weights": True}
    )
    assert not list(tmp_path.rglob("*.partial"))
    with rasterio.open(path) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.crs.to_epsg() == 32632
        assert tuple(cog.transform)[:6] == pytest.approx(TRANSFORM)
        # The tile's top-left corner is where the transform puts it: 10 m pixels from the origin.
        assert cog.xy(0, 0, offset="ul") == pytest.approx((549892.7, 6344077.6))
        assert cog.bounds.right - cog.bounds.left == pytest.approx(320.0)
        read = cog.read()
        assert np.isnan(read[:, 0, 0]).all() and np.isnan(cog.nodata)
        np.testing.assert_array_equal(read[:, 1:, 1:], values[:, 1:, 1:])
        assert cog.descriptions == S2_BANDS
        assert cog.tags()["random_weights"] == "True"


def test_bad_crs_and_shape_fail_clearly(tmp_path):
    with pytest.raises(GacError, match="not one rasterio understands"):
        write_cog(tmp_path / "t.tif", np.zeros((12, 16, 16)), "EPSG:not-a-code", TRANSFORM, S2_BANDS)
    with pytest.raises(ValueError, match=r"expected \(12, H, W\)"):
        write_cog(tmp_path / "t.tif", np.zeros((3, 16, 16)), UTM, TRANSFORM, S2_BANDS)
    assert not list(tmp_path.iterdir())


def test_safe_name_keeps_ids_readable():
    assert safe_name("demo_01_r00064_c00000") == "demo_01_r00064_c00000"
    assert safe_name("S2A/T32 UMA:r0") == "S2A_T32_UMA_r0"
