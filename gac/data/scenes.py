"""Finding and reading paired S1/S2 scenes, with a clear error for every way a pair can be wrong.

Layout of a scene directory (the TerraMesh layout; the demo writes the same):

    <root>/S1RTC/<name>.tif   (or S1GRD/)  2 bands, VV and VH backscatter in dB
    <root>/S2L2A/<name>.tif                12 bands B01..B12 (no B10), reflectance x 10^4

Files are paired by name. S1 is read onto the S2 grid: same CRS, resolution
and extent, or reprojected when `tile.reproject` is on. The values' units are
checked too (gac.data.sanity): S1 in dB, S2 as reflectance x 10^4, less
`data.s2_offset` where the product carries the L2A offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gac.data.sanity import check_s1_band_count, check_s1_db, check_s2_scaled, read_values, remove_s2_offset
from gac.data.store import S2_BANDS
from gac.errors import GacError

S1_FOLDERS = ("S1RTC", "S1GRD")
S2_FOLDER = "S2L2A"
_DATE = re.compile(r"(\d{4})[-:](\d{2})[-:](\d{2})")
_DATE_TAGS = ("ACQUISITION_DATE", "datetime", "TIFFTAG_DATETIME", "DATE_ACQUIRED")


@dataclass(frozen=True)
class ScenePair:
    name: str
    s1: Path
    s2: Path
    s1_product: str  # S1RTC or S1GRD


@dataclass
class Scene:
    """One pair on the S2 grid: NaN marks nodata in both arrays."""

    name: str
    s1: np.ndarray  # (2, H, W) float32 dB
    s2: np.ndarray  # (12, H, W) float32 reflectance x 1e4
    crs: str
    transform: tuple[float, ...]  # GDAL order a b c d e f
    month: int  # 1-12, 0 when unknown


def find_pairs(root: Path) -> list[ScenePair]:
    """Match S1 and S2 files by name; a file without its partner is an error, not a skip."""
    root = Path(root)
    if not root.is_dir():
        raise GacError(f"{root}: scene directory not found; set data.source to a directory with S1RTC/ (or S1GRD/) and S2L2A/ inside")
    s1_dirs = [root / name for name in S1_FOLDERS if (root / name).is_dir()]
    s2_dir = root / S2_FOLDER
    if len(s1_dirs) != 1 or not s2_dir.is_dir():
        found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no folders"
        raise GacError(f"{root}: expected exactly one of {'/'.join(S1_FOLDERS)} and one {S2_FOLDER} folder, found {found}; arrange the GeoTIFFs in that layout")
    s1_dir = s1_dirs[0]
    s1_files = {p.stem: p for p in sorted(s1_dir.glob("*.tif*"))}
    s2_files = {p.stem: p for p in sorted(s2_dir.glob("*.tif*"))}
    for stem, path in s1_files.items():
        if stem not in s2_files:
            raise GacError(f"{path}: no S2 partner (expected {s2_dir / path.name}); add the S2L2A scene or remove this file")
    for stem, path in s2_files.items():
        if stem not in s1_files:
            raise GacError(f"{path}: no S1 partner (expected {s1_dir / path.name}); add the {s1_dir.name} scene or remove this file")
    if not s1_files:
        raise GacError(f"{root}: no GeoTIFFs in {s1_dir.name}/ and {S2_FOLDER}/; add scene pairs or use data.source: demo")
    return [ScenePair(stem, s1_files[stem], s2_files[stem], s1_dir.name) for stem in sorted(s1_files)]


def open_raster(path: Path):
    """rasterio.open, with an unreadable file as a one-line GacError naming it."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError:
        raise GacError(f"{path}: unreadable or not a GeoTIFF; copy or export the file again") from None


def acquisition_month(*datasets) -> int:
    """The month (1-12) of the first date found in the datasets' tags; 0 when none says (the 'unknown month' encoding)."""
    for dataset in datasets:
        tags = dataset.tags()
        for key in _DATE_TAGS:
            match = _DATE.search(tags.get(key, ""))
            if match:
                return int(match.group(2))
    return 0


def _check_bands(dataset, path: Path, expected: tuple[str, ...], kind: str) -> None:
    if dataset.count != len(expected):
        raise GacError(f"{path}: {dataset.count} band(s), but {kind} needs {len(expected)} ({' '.join(expected)}); export the file with exactly those bands in that order")


def _same_grid(s1, s2, path: Path, reproject: bool) -> bool:
    """True when S1 already lies on the S2 grid; a different grid is an error unless `reproject`."""
    if s1.crs == s2.crs and s1.transform == s2.transform and s1.shape == s2.shape:
        return True
    if not reproject:
        if s1.crs != s2.crs:
            problem = f"CRS {s1.crs.to_string()} differs from its S2 partner's {s2.crs.to_string()}"
        elif s1.res != s2.res:
            problem = f"resolution {s1.res} differs from its S2 partner's {s2.res}"
        else:
            problem = "grid (extent or alignment) differs from its S2 partner's"
        raise GacError(f"{path}: {problem}; set tile.reproject: true to reproject S1 onto the S2 grid")
    return False


def warp_db(source: np.ndarray, src_transform, src_crs, shape: tuple[int, int], dst_transform, dst_crs) -> np.ndarray:
    """Backscatter in dB (bands, h, w; NaN = nodata) reprojected onto another grid of `shape`, bilinear in linear power, back to dB.

    Averaging dB values would bias dark pixels (the log of a mean is not the mean of the logs).
    """
    from rasterio.warp import Resampling, reproject as warp

    linear = np.where(np.isnan(source), np.nan, 10.0 ** (source / 10.0)).astype(np.float32)
    out = np.full((source.shape[0], *shape), np.nan, dtype=np.float32)
    warp(linear, out, src_transform=src_transform, src_crs=src_crs, dst_transform=dst_transform, dst_crs=dst_crs,
         src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(out > 0, 10.0 * np.log10(out), np.nan).astype(np.float32)


def read_pair(pair: ScenePair, reproject: bool, s2_offset: int = 0) -> Scene:
    """Read one pair onto the S2 grid, checking bands, CRS, grid and the values' units (gac.data.sanity).

    S1 is checked as the file holds it, before any reprojection: reprojecting
    converts dB to linear power and back, which would turn a file that is
    already linear into nonsense instead of an error. `s2_offset`
    (`data.s2_offset`) is subtracted from S2 after its check.
    """
    with open_raster(pair.s1) as s1, open_raster(pair.s2) as s2:
        check_s1_band_count(s1.count, pair.s1)
        _check_bands(s2, pair.s2, S2_BANDS, "Sentinel-2 L2A")
        for dataset, path in ((s1, pair.s1), (s2, pair.s2)):
            if dataset.crs is None:
                raise GacError(f"{path}: has no CRS; write the GeoTIFF with its projection (e.g. its UTM EPSG code)")
        same = _same_grid(s1, s2, pair.s1, reproject)
        s2_data = read_values(s2)
        check_s2_scaled(s2_data, pair.s2)
        s2_data = remove_s2_offset(s2_data, s2_offset, pair.s2)
        s1_data = read_values(s1)
        check_s1_db(s1_data, pair.s1)
        if not same:
            s1_data = warp_db(s1_data, s1.transform, s1.crs, (s2.height, s2.width), s2.transform, s2.crs)
        month = acquisition_month(s2, s1)
        crs = s2.crs.to_string()
        transform = tuple(s2.transform)[:6]
    if np.isnan(s1_data).all():  # valid in its own file, yet nothing of it falls on the S2 grid
        raise GacError(f"{pair.s1}: no valid pixel overlaps its S2 partner after reprojection; pair scenes that cover the same ground")
    return Scene(pair.name, s1_data, s2_data, crs, transform, month)
