"""Quicklook PNGs: S1 | each variant | ground truth, in true and false colour, and a contact sheet with error maps.

A number says how far off a prediction is; a picture says how (blur, colour
cast, missing fields, flat output from random weights). Every panel of a tile
uses the same stretch, taken from the ground truth (2nd-98th percentile per
channel), so differences between panels are differences in the data, not in
the display. S1 shows as R = VV, G = VH, B = VV - VH (dB), stretched per tile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from gac.data.store import S2_BANDS

TRUE_COLOUR = ("B04", "B03", "B02")
# Error maps: per-pixel mean |prediction - truth| over the 12 bands, in reflectance, on one fixed scale for every
# tile and variant (0 black .. ERROR_RANGE and above bright yellow, colormap ERROR_CMAP), so maps compare across the
# sheet.
ERROR_RANGE = 0.1
ERROR_CMAP = "inferno"
NODATA_RGB = (255, 255, 255)  # error maps: pixels without a prediction or truth
FALSE_COLOUR = ("B08", "B04", "B03")  # NIR, red, green: vegetation red
LABEL_HEIGHT = 14
FLAT_DISPLAY_MAX = 3000.0  # reflectance x 10^4: the usual true-colour display ceiling (0.3 reflectance)
GAP = 2


def _limits(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel 2nd and 98th percentiles of a (3, H, W) image, ignoring NaN; never a zero range."""
    flat = reference.reshape(reference.shape[0], -1)
    lo = np.nan_to_num(np.nanpercentile(flat, 2, axis=1)) if np.isfinite(flat).any() else np.zeros(reference.shape[0])
    hi = np.nan_to_num(np.nanpercentile(flat, 98, axis=1)) if np.isfinite(flat).any() else np.ones(reference.shape[0])
    return lo, np.maximum(hi, lo + 1e-6)


def _to_rgb(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) uint8 with the given stretch; NaN shows black."""
    scaled = (image - lo[:, None, None]) / (hi - lo)[:, None, None]
    scaled = np.nan_to_num(np.clip(scaled, 0, 1), nan=0.0)
    return (scaled.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def s1_rgb(s1_db: np.ndarray) -> np.ndarray:
    composite = np.stack([s1_db[0], s1_db[1], s1_db[0] - s1_db[1]])
    return _to_rgb(composite, *_limits(composite))


def composite(s2: np.ndarray, bands: Sequence[str], names: Sequence[str] = S2_BANDS) -> np.ndarray:
    index = [list(names).index(b) for b in bands]
    return np.asarray(s2, dtype=np.float64)[index]


def _panel_row(
    s1_db: np.ndarray, panels: Mapping[str, np.ndarray], truth: np.ndarray, bands: Sequence[str]
) -> list[tuple[str, np.ndarray]]:
    lo, hi = _limits(composite(truth, bands))
    row = [("S1 VV/VH", s1_rgb(s1_db))]
    row += [(name, _to_rgb(composite(image, bands), lo, hi)) for name, image in panels.items()]
    row.append(("ground truth", _to_rgb(composite(truth, bands), lo, hi)))
    return row


def error_rgb(image: np.ndarray, truth: np.ndarray, limit: float = ERROR_RANGE) -> np.ndarray:
    """(12, H, W) prediction and truth in store units -> (H, W, 3) uint8 map of mean |error| (reflectance) on [0,
    limit]."""
    from matplotlib import colormaps

    error = np.mean(np.abs(np.asarray(image, dtype=np.float64) - np.asarray(truth, dtype=np.float64)), axis=0) / 1e4
    rgb = (
        (colormaps[ERROR_CMAP](np.clip(np.nan_to_num(error / limit, nan=0.0), 0, 1))[..., :3] * 255)
        .round()
        .astype(np.uint8)
    )
    rgb[~np.isfinite(error)] = NODATA_RGB
    return rgb


def error_scale_bar(height: int, width: int, limit: float = ERROR_RANGE) -> np.ndarray:
    """A vertical colour bar for the error maps: 0 at the bottom, `limit` at the top."""
    from matplotlib import colormaps

    ramp = np.linspace(1, 0, height)[:, None].repeat(width, axis=1)
    return (colormaps[ERROR_CMAP](ramp)[..., :3] * 255).round().astype(np.uint8)


def _error_row(s1_db: np.ndarray, panels: Mapping[str, np.ndarray], truth: np.ndarray) -> list[tuple[str, np.ndarray]]:
    h, w = truth.shape[-2:]
    row = [(f"|err| 0-{ERROR_RANGE:g}", error_scale_bar(h, w))]
    row += [(name, error_rgb(image, truth)) for name, image in panels.items()]
    row.append(("", np.full((h, w, 3), 255, dtype=np.uint8)))
    return row


def _grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], scale: int):
    """Rows of labelled panels on one white canvas (row label on top of the row, panel labels above panels)."""
    from PIL import Image, ImageDraw

    h, w = rows[0][1][0][1].shape[:2]
    ph, pw = h * scale, w * scale
    ncols = max(len(panels) for _, panels in rows)
    row_height = LABEL_HEIGHT * 2 + ph + GAP
    canvas = Image.new("RGB", (ncols * (pw + GAP) + GAP, len(rows) * row_height + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (title, panels) in enumerate(rows):
        top = r * row_height + GAP
        draw.text((GAP, top), title, fill="black")
        for c, (label, rgb) in enumerate(panels):
            left = GAP + c * (pw + GAP)
            draw.text((left, top + LABEL_HEIGHT), label[: max(4, pw // 6)], fill="black")
            canvas.paste(Image.fromarray(rgb).resize((pw, ph), Image.NEAREST), (left, top + 2 * LABEL_HEIGHT))
    return canvas


def tile_quicklook(
    path: Path, tile_id: str, s1_db: np.ndarray, panels: Mapping[str, np.ndarray], truth: np.ndarray, scale: int = 2
) -> Path:
    """One tile: a true-colour row and a false-colour row of S1 | variants | ground truth."""
    rows = [
        (f"{tile_id}: true colour (B04 B03 B02)", _panel_row(s1_db, panels, truth, TRUE_COLOUR)),
        (f"{tile_id}: false colour (B08 B04 B03)", _panel_row(s1_db, panels, truth, FALSE_COLOUR)),
    ]
    return _save(_grid(rows, scale), path)


def contact_sheet(
    path: Path, tiles: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray], np.ndarray]], scale: int = 2
) -> Path:
    """All chosen tiles, each a true-colour row and an error-map row (fixed scale): (tile id, S1, {variant: image},
    truth)."""
    rows = []
    for tile_id, s1, panels, truth in tiles:
        rows.append((f"{tile_id} (true colour)", _panel_row(s1, panels, truth, TRUE_COLOUR)))
        rows.append(
            (f"{tile_id}: |pred - truth|, 12-band mean, 0-{ERROR_RANGE:g} refl.", _error_row(s1, panels, truth))
        )
    return _save(_grid(rows, scale), path)


def _save(image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    image.save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
    return path


def scene_quicklook(cog: Path, path: Path, max_side: int = 1024) -> Path:
    """A true-colour PNG of a translated scene, read from the COG's overviews (never the full scene), 2-98 % stretch.

    A band with no contrast (a flat translation, as random weights give) would
    stretch to black and look like a failure; it is shown on the fixed
    0-FLAT_DISPLAY_MAX reflectance x 10^4 range instead, so it shows as the
    colour it is.
    """
    import rasterio
    from PIL import Image

    with rasterio.open(cog) as src:
        scale = max(1, -(-max(src.width, src.height) // max_side))
        shape = (3, max(1, src.height // scale), max(1, src.width // scale))
        index = [S2_BANDS.index(b) + 1 for b in TRUE_COLOUR]
        rgb = src.read(index, out_shape=shape, masked=True).astype(np.float64).filled(np.nan)
    lo, hi = _limits(rgb)
    flat = hi - lo < 1  # less than 1 DN between the 2nd and 98th percentile
    lo, hi = np.where(flat, 0.0, lo), np.where(flat, FLAT_DISPLAY_MAX, hi)
    return _save(Image.fromarray(_to_rgb(rgb, lo, hi)), path)
