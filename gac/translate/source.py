"""The scenes `gac translate` reads: an S1 scene on a 10 m grid, and the optional S2 scene + cloud mask it gap-fills.

Everything is read in windows, so a full 10980 x 10980 px scene never sits in
memory. Every check that can fail on a user's file runs in `open_*`, before
any model is built or any output written.

Reprojection (`translate.reproject`) goes to 10 m in the scene's own UTM zone
(or its own projected CRS when that is metric). Backscatter is averaged in
linear power and converted back to dB: averaging dB values would bias dark
pixels (a log of a mean is not a mean of logs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from gac.data.sanity import check_s1_band_count, check_s1_db, check_s2_scaled, read_values, remove_s2_offset, sample_values
from gac.data.scenes import acquisition_month, open_raster, warp_db
from gac.data.store import S2_BANDS
from gac.errors import GacError

log = logging.getLogger(__name__)

RESOLUTION = 10.0  # m: the grid every GAC model was trained on (Sentinel-2's 10 m bands)
_RES_TOLERANCE = 0.01  # relative: 10.0 and 9.9999999 are the same grid
S1_SUFFIXES = (".tif", ".tiff")
# Read windows are widened by this many source px when reprojecting, so bilinear resampling has its neighbours.
_WARP_MARGIN = 2


def find_s1_inputs(inputs: list[Path]) -> list[Path]:
    """The S1 GeoTIFFs named by `inputs` (files, or directories whose *.tif are taken in name order)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.suffix.lower() in S1_SUFFIXES and not p.name.startswith("."))
            if not files:
                raise GacError(f"{item}: directory holds no .tif files; pass Sentinel-1 GeoTIFFs (VV, VH in dB)")
            found.extend(files)
        elif item.is_file():
            found.append(item)
        else:
            raise GacError(f"{item}: no such file or directory; pass Sentinel-1 GeoTIFFs (VV, VH in dB) or a directory of them")
    stems = [p.stem for p in found]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise GacError(f"{twice[0]}: two inputs share this name and would write the same output; rename one")
    if not found:
        raise GacError("no input scenes: pass S1 GeoTIFFs on the command line or list them in translate.scenes")
    return found


def is_10m_grid(crs, transform) -> bool:
    """A north-up grid of 10 m pixels in a metric CRS."""
    if crs is None or not crs.is_projected or (crs.linear_units or "").lower() not in ("metre", "meter", "m"):
        return False
    a, b, _, d, e, _ = tuple(transform)[:6]
    return b == 0 and d == 0 and math.isclose(abs(a), RESOLUTION, rel_tol=_RES_TOLERANCE) and math.isclose(abs(e), RESOLUTION, rel_tol=_RES_TOLERANCE)


def utm_crs(lon: float, lat: float):
    """The UTM zone (WGS 84) holding a point."""
    from rasterio.crs import CRS

    zone = min(60, int((lon + 180) // 6) + 1)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def parse_date(text: str) -> int:
    """'YYYY-MM-DD' -> month 1-12 (the `--date` option)."""
    try:
        return date.fromisoformat(text).month
    except ValueError:
        raise GacError(f"--date {text!r}: not a date; use YYYY-MM-DD, e.g. 2024-06-15") from None


@dataclass
class S1Scene:
    """One S1 scene as the models see it: a 10 m grid (the file's own, or a reprojection), dB, NaN for nodata."""

    path: Path
    crs: object  # rasterio CRS of the output grid
    transform: object  # Affine of the output grid
    width: int
    height: int
    month: int  # 1-12; 0 = unknown (as undated training tiles are encoded)
    reprojected: bool = False
    src_crs: object = None
    src_transform: object = None
    _dataset: object = field(default=None, repr=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(2, height, width) dB for the window at (row, col) of the output grid; NaN outside the scene and at nodata."""
        from rasterio.windows import Window

        out = np.full((2, height, width), np.nan, dtype=np.float32)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.height), min(col + width, self.width)
        if r1 <= r0 or c1 <= c0:
            return out
        if self.reprojected:
            part = self._read_reprojected(r0, c0, r1 - r0, c1 - c0)
        else:
            part = read_values(self._dataset, window=Window(c0, r0, c1 - c0, r1 - r0))
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
        return out

    def _read_reprojected(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        from rasterio.transform import Affine
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, from_bounds

        dst_transform = self.transform * Affine.translation(col, row)
        left, top = dst_transform * (0, 0)
        right, bottom = dst_transform * (width, height)
        bounds = transform_bounds(self.crs, self.src_crs, min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        src = from_bounds(*bounds, transform=self.src_transform)
        c0 = max(int(math.floor(src.col_off)) - _WARP_MARGIN, 0)
        r0 = max(int(math.floor(src.row_off)) - _WARP_MARGIN, 0)
        c1 = min(int(math.ceil(src.col_off + src.width)) + _WARP_MARGIN, self._dataset.width)
        r1 = min(int(math.ceil(src.row_off + src.height)) + _WARP_MARGIN, self._dataset.height)
        if r1 <= r0 or c1 <= c0:
            return np.full((2, height, width), np.nan, dtype=np.float32)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        source = read_values(self._dataset, window=window)
        return warp_db(source, self._dataset.window_transform(window), self.src_crs, (height, width), dst_transform, self.crs)


def _target_grid(dataset, path: Path):
    """(crs, transform, width, height) of the 10 m grid a scene off that grid is reprojected to."""
    from rasterio.warp import calculate_default_transform, transform as warp_points

    crs = dataset.crs
    if not (crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m")):
        cx, cy = dataset.xy(dataset.height // 2, dataset.width // 2)
        (lon,), (lat,) = warp_points(crs, "EPSG:4326", [cx], [cy])
        crs = utm_crs(lon, lat)
    transform, width, height = calculate_default_transform(
        dataset.crs, crs, dataset.width, dataset.height, *dataset.bounds, resolution=RESOLUTION
    )
    return crs, transform, width, height


def open_s1(path: Path, reproject: bool, date_override: int | None = None) -> S1Scene:
    """Open and check an S1 scene (bands, CRS, grid, values); everything a user can get wrong fails here in one line."""
    path = Path(path)
    dataset = open_raster(path)
    try:
        check_s1_band_count(dataset.count, path)
        if dataset.crs is None:
            raise GacError(f"{path}: has no CRS; write the GeoTIFF with its projection (e.g. its UTM EPSG code)")
        check_s1_db(sample_values(dataset), path)
        month = date_override or acquisition_month(dataset)
        if is_10m_grid(dataset.crs, dataset.transform):
            return S1Scene(path, dataset.crs, dataset.transform, dataset.width, dataset.height, month, _dataset=dataset)
        if not reproject:
            res = f"{abs(dataset.transform.a):g} x {abs(dataset.transform.e):g} {dataset.crs.linear_units or 'units'}"
            raise GacError(f"{path}: pixels are {res}, not a 10 m grid in a metric CRS; set translate.reproject: true "
                           "(10 m in the scene's UTM zone) or resample the scene to 10 m")
        crs, transform, width, height = _target_grid(dataset, path)
        return S1Scene(path, crs, transform, width, height, month, True, dataset.crs, dataset.transform, _dataset=dataset)
    except BaseException:
        dataset.close()
        raise


@dataclass
class GapFill:
    """An S2 L2A scene on the output grid and its cloud mask: clear pixels are kept, masked ones translated."""

    s2_path: Path
    mask_path: Path
    s2_offset: int
    cloud_classes: tuple[int, ...]
    feather: int
    _s2: object = field(default=None, repr=False)
    _mask: object = field(default=None, repr=False)
    binary: bool = False

    def close(self) -> None:
        for dataset in (self._s2, self._mask):
            if dataset is not None:
                dataset.close()

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """S2 reflectance x 10^4 (offset removed; NaN at nodata, where L2A stores 0) and the boolean cloud mask, for a window.

        Outside the scene the S2 is NaN and the mask False.
        """
        from rasterio.windows import Window

        s2 = np.full((len(S2_BANDS), height, width), np.nan, dtype=np.float32)
        mask = np.zeros((height, width), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self._s2.height), min(col + width, self._s2.width)
        if r1 > r0 and c1 > c0:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            values = read_values(self._s2, window=window)
            values[values == 0] = np.nan  # L2A nodata
            if self.s2_offset:
                values = values - np.float32(self.s2_offset)
            s2[:, r0 - row : r1 - row, c0 - col : c1 - col] = values
            classes = read_values(self._mask, window=window)[0]
            cloud = classes == 1 if self.binary else np.isin(classes, self.cloud_classes)
            mask[r0 - row : r1 - row, c0 - col : c1 - col] = cloud
        return s2, mask


def _same_grid(dataset, scene: S1Scene) -> bool:
    return dataset.crs == scene.crs and dataset.width == scene.width and dataset.height == scene.height and all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(tuple(dataset.transform)[:6], tuple(scene.transform)[:6])
    )


def open_gap_fill(s2_path: Path, mask_path: Path, scene: S1Scene, s2_offset: int, cloud_classes, feather: int) -> GapFill:
    """Open and check the gap-filling inputs against the S1 output grid."""
    s2_path, mask_path = Path(s2_path), Path(mask_path)
    s2 = open_raster(s2_path)
    mask = None
    try:
        if s2.count != len(S2_BANDS):
            raise GacError(f"{s2_path}: {s2.count} band(s), but --fill-s2 takes a Sentinel-2 L2A scene with {len(S2_BANDS)} "
                           f"({' '.join(S2_BANDS)}); export it with exactly those bands in that order")
        if not _same_grid(s2, scene):
            raise GacError(f"{s2_path}: not on the S1 scene's grid ({scene.crs}, {scene.width} x {scene.height} px at 10 m); "
                           f"resample the S2 scene onto {scene.path.name}'s grid")
        sample = sample_values(s2)
        sample[sample == 0] = np.nan
        check_s2_scaled(sample, s2_path)
        remove_s2_offset(sample, s2_offset, s2_path)  # refuses an offset the scene does not carry
        mask = open_raster(mask_path)
        if mask.count != 1:
            raise GacError(f"{mask_path}: {mask.count} bands; --cloud-mask takes one band (an SCL layer or a 0/1 mask)")
        if not _same_grid(mask, scene):
            raise GacError(f"{mask_path}: not on the S1 scene's grid ({scene.width} x {scene.height} px at 10 m); "
                           "resample the mask (nearest) onto the S1 grid (SCL is 20 m: upsample it)")
        values = sample_values(mask)
        finite = values[np.isfinite(values)]
        binary = bool(finite.size) and float(finite.max()) <= 1
        return GapFill(s2_path, mask_path, s2_offset, tuple(cloud_classes), feather, s2, mask, binary)
    except BaseException:
        s2.close()
        if mask is not None:
            mask.close()
        raise
