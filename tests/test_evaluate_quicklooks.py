"""Quicklooks: one shared stretch per tile, NaN drawn black, layout S1 | variants | truth."""

from __future__ import annotations

import numpy as np
from PIL import Image

from gac.evaluate.quicklooks import GAP, LABEL_HEIGHT, contact_sheet, tile_quicklook


def _panel(pixels: np.ndarray, row: int, col: int, size: int = 64) -> np.ndarray:
    top = GAP + row * (2 * LABEL_HEIGHT + size + GAP) + 2 * LABEL_HEIGHT
    left = GAP + col * (size + GAP)
    return pixels[top : top + size, left : left + size]


def test_same_stretch_for_every_panel_and_nan_is_black(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.uniform(500, 3000, (12, 32, 32))
    truth[:, :4, :4] = np.nan
    s1 = rng.normal(-12, 3, (2, 32, 32))
    panels = {"copy": truth.copy(), "all_nan": np.full_like(truth, np.nan), "bright": truth + 5000}
    path = tile_quicklook(tmp_path / "q.png", "t0", s1, panels, truth, scale=2)
    pixels = np.asarray(Image.open(path).convert("RGB"))
    # Two rows (true, false colour) of S1 + 3 variants + truth, 64 px panels.
    assert pixels.shape[1] == GAP + 5 * (64 + GAP)
    assert pixels.shape[0] == GAP + 2 * (2 * LABEL_HEIGHT + 64 + GAP)
    for row in (0, 1):
        np.testing.assert_array_equal(
            _panel(pixels, row, 1), _panel(pixels, row, 4)
        )  # a copy looks exactly like the truth
        assert _panel(pixels, row, 2).max() == 0  # no data: black
        assert _panel(pixels, row, 3)[8:, 8:].min() == 255  # 5000 brighter than the truth's 98th percentile: saturated
        assert _panel(pixels, row, 4)[:8, :8].max() == 0  # the truth's NaN corner
    assert not list(tmp_path.glob("*.partial*"))


def test_contact_sheet_has_a_colour_row_and_an_error_row_per_tile(tmp_path):
    from matplotlib import colormaps

    from gac.evaluate.quicklooks import ERROR_CMAP, ERROR_RANGE

    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 3000, (3, 12, 32, 32))
    tiles = [
        (f"t{i}", rng.normal(-12, 3, (2, 32, 32)), {"copy": truth[i].copy(), "off": truth[i] + 500.0}, truth[i])
        for i in range(3)
    ]
    tiles[0][2]["off"][:, :4, :4] = np.nan
    image = Image.open(contact_sheet(tmp_path / "sheet.png", tiles, scale=1))
    assert image.size == (GAP + 4 * (32 + GAP), GAP + 6 * (2 * LABEL_HEIGHT + 32 + GAP))
    pixels = np.asarray(image.convert("RGB"))
    colour = lambda x: (np.array(colormaps[ERROR_CMAP](x)[:3]) * 255).round()  # noqa: E731
    for tile in range(3):
        error_row = 2 * tile + 1
        assert (_panel(pixels, error_row, 1, 32) == colour(0.0)).all()  # a perfect copy: zero error everywhere
        off = _panel(pixels, error_row, 2, 32)
        assert (
            np.abs(off[4:, 4:] - colour(0.05 / ERROR_RANGE)).max() <= 3
        )  # 500 x 10^-4 = 0.05 reflectance, half the fixed scale
    assert (_panel(pixels, 1, 2, 32)[:4, :4] == 255).all()  # no data: white


def test_scene_quicklook_shows_a_flat_translation_in_its_colour_not_black(tmp_path):
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    from gac.evaluate.quicklooks import FLAT_DISPLAY_MAX, scene_quicklook

    flat = np.zeros((12, 40, 50), np.uint16)
    flat[3], flat[2], flat[1] = 1500, 1200, 900  # B04, B03, B02
    ramp = flat.copy()
    ramp[3] = np.linspace(500, 2500, 50, dtype=np.uint16)[None, :]  # contrast in red only
    for name, values in (("flat", flat), ("ramp", ramp)):
        with rasterio.open(
            tmp_path / f"{name}.tif",
            "w",
            driver="GTiff",
            width=50,
            height=40,
            count=12,
            dtype="uint16",
            crs="EPSG:32633",
            transform=from_origin(0, 0, 10, 10),
        ) as dst:
            dst.write(values)
        scene_quicklook(tmp_path / f"{name}.tif", tmp_path / f"{name}.png")
    rgb = np.asarray(Image.open(tmp_path / "flat.png"))
    expected = np.round(np.array([1500, 1200, 900]) / FLAT_DISPLAY_MAX * 255)
    assert (rgb == expected.astype(np.uint8)).all()
    red = np.asarray(Image.open(tmp_path / "ramp.png"))[..., 0]
    assert red[:, 0].max() <= 10 and red[:, -1].min() >= 245  # a band with contrast keeps its 2-98 % stretch
