"""Quicklook PNGs: S1 | each variant | ground truth, in true and false colour, and a contact sheet.

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
FALSE_COLOUR = ("B08", "B04", "B03")  # NIR, red, green: vegetation red
LABEL_HEIGHT = 14
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


def _panel_row(s1_db: np.ndarray, panels: Mapping[str, np.ndarray], truth: np.ndarray, bands: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    lo, hi = _limits(composite(truth, bands))
    row = [("S1 VV/VH", s1_rgb(s1_db))]
    row += [(name, _to_rgb(composite(image, bands), lo, hi)) for name, image in panels.items()]
    row.append(("ground truth", _to_rgb(composite(truth, bands), lo, hi)))
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


def tile_quicklook(path: Path, tile_id: str, s1_db: np.ndarray, panels: Mapping[str, np.ndarray], truth: np.ndarray, scale: int = 2) -> Path:
    """One tile: a true-colour row and a false-colour row of S1 | variants | ground truth."""
    rows = [
        (f"{tile_id}: true colour (B04 B03 B02)", _panel_row(s1_db, panels, truth, TRUE_COLOUR)),
        (f"{tile_id}: false colour (B08 B04 B03)", _panel_row(s1_db, panels, truth, FALSE_COLOUR)),
    ]
    return _save(_grid(rows, scale), path)


def contact_sheet(path: Path, tiles: Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray], np.ndarray]], scale: int = 2) -> Path:
    """All chosen tiles, one true-colour row each: (tile id, S1, {variant: image}, truth)."""
    rows = [(f"{tile_id} (true colour)", _panel_row(s1, panels, truth, TRUE_COLOUR)) for tile_id, s1, panels, truth in tiles]
    return _save(_grid(rows, scale), path)


def _save(image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    image.save(tmp, format="PNG", optimize=True)
    tmp.replace(path)
    return path
