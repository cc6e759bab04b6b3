"""Is this really S1 backscatter in dB, and S2 reflectance x 10^4? Checks on the values themselves.

A wrong unit does not crash anything: a Sentinel-1 scene in linear power, an
S2 exported as 0-1 floats or an S2 passed where S1 belongs all tile, train and
translate "fine" and give garbage. The file's band count and metadata rarely
say which unit it holds, but the values do, so these checks measure them and
raise one GacError line naming the file, the figure measured and the fix.

Every function here takes arrays (float, NaN = nodata) so `read_pair` (training
pairs, full arrays) and `gac translate` (new scenes, a cheap decimated sample
from `sample_values`) share them. numpy only; rasterio is imported where a file
is read.
"""

from __future__ import annotations

import math
import numpy as np

from gac.errors import GacError

# A scene sampled for checks: 1 Mpx per band is plenty for medians and percentiles,
# and decimating a full 10980 x 10980 px scene to it reads ~1/120 of the pixels.
SAMPLE_PIXELS = 1_000_000

# S1 backscatter in dB lies roughly between -30 and +5 (VV median ~ -11, VH ~ -18).
# The same pixels in linear power are 0.001-3 with a median near 0.05, as amplitude
# (its square root) near 0.25: a median far below 1 (= 0 dB) and never below 0. A median
# in [0, this) is linear power or amplitude whatever the minimum (thermal-noise removal
# leaves a few slightly negative powers); dB data always has a median well below 0.
S1_LINEAR_MEDIAN_MAX = 0.5
# No dB backscatter has a median above +5; S2 reflectance x 10^4 has medians in the
# hundreds to thousands, and so do raw GRD digital numbers. Above this it is not backscatter.
S1_DB_MEDIAN_MAX = 50.0
S1_BAND_COUNT = 2  # VV, VH
S2_BAND_COUNTS = (12, 13)  # L2A without B10 (GAC's order), and the L1C/L2A stacks that keep B10

# S2 L2A reflectance x 10^4 has its 99th percentile in the thousands (vegetation NIR
# ~3000-4000, bright soil/cloud higher); as 0-1 floats the same pixels are at most ~1,
# up to ~1.6 over snow and specular glints. A 99th percentile at or under 2 is 0-1 floats.
S2_UNIT_P99_MAX = 2.0
# The L2A offset (processing baseline 04.00 on): DN = reflectance x 10^4 + 1000.
L2A_OFFSET = 1000
# Whether a scene carries it is judged where reflectance is never near 0, so that a value
# below the offset means a scene without it: the visible bands (B02 B03 B04) of land
# pixels. Land is where SWIR (B11) exceeds green (B03): true of vegetation, soil, rock and
# towns, false of water and snow (which absorb SWIR). The test is a difference of two
# bands, so it does not depend on the offset it is judging. With the offset, land's visible
# values sit above it (vegetation's darkest blue is ~0.01 = 1100 DN); without it, 60-100%
# of them are below 1000 on the real scenes at hand (TerraMesh, BigEarthNet), and a
# desert's blue band still puts a share of them there. Water is left out because its
# near-zero NIR/SWIR legitimately dips below the offset (an 80% ocean scene carrying the
# offset has ~23% of all its values below 1000).
S2_LAND_VISIBLE_BELOW_MAX = 0.10
VISIBLE = (1, 2, 3)  # B02 B03 B04 in S2_BANDS order
GREEN, SWIR = 2, 10  # B03, B11
# A scene with little land (snow, water) is judged by how far below the offset its values
# go: no L2A product stores a reflectance under -0.05 (the offset exists for small negative
# values over dark water), but snow's SWIR (~0.01-0.03) and water's NIR sit there when the
# scene has no offset. B01 and B09 (60 m atmospheric bands) are left out.
S2_FAR_BELOW = 500
S2_FAR_BELOW_MAX = 0.01
RELIABLE = (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)  # every band but B01 and B09


def _figure(value: float) -> str:
    """A measured figure for a message: three significant digits, no exponent for large values."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _thin(values: np.ndarray, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """An evenly strided view with at most `max_pixels` per band: statistics of a huge array stay cheap."""
    height, width = values.shape[-2:]
    step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    return values[..., ::step, ::step]


def _finite(values: np.ndarray) -> np.ndarray:
    sample = _thin(np.asarray(values))
    return sample[np.isfinite(sample)]


def read_values(dataset, out_shape: tuple[int, int, int] | None = None, window=None) -> np.ndarray:
    """All bands (of `window`, a rasterio Window; default the whole raster) as float32 with NaN where the file says nodata;
    a corrupt file is a GacError naming it."""
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError

    try:
        # nearest: a decimated read keeps the file's own values and never blends nodata into data
        data = dataset.read(masked=True, window=window, out_shape=out_shape, resampling=Resampling.nearest).astype(np.float32)
    except RasterioError:
        raise GacError(f"{dataset.name}: truncated or corrupt GeoTIFF (reading its pixels failed); copy or export the file again") from None
    return np.ma.filled(data, np.nan)


def sample_shape(height: int, width: int, max_pixels: int = SAMPLE_PIXELS) -> tuple[int, int] | None:
    """The (h, w) a raster is decimated to for checks (at most `max_pixels`), or None when it is small enough whole."""
    if height * width <= max_pixels:
        return None
    scale = math.sqrt(height * width / max_pixels)
    out_h, out_w = max(1, int(height / scale)), max(1, int(width / scale))
    while out_h * out_w > max_pixels:  # int() rounding can leave one row too many
        out_h, out_w = max(1, out_h - 1), max(1, out_w - 1)
    return out_h, out_w


def sample_values(dataset, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """The open rasterio `dataset` as float32 (bands, h, w), NaN for nodata, decimated to at most `max_pixels` per band.

    Reading through `out_shape` lets GDAL skip rows and columns (or use overviews),
    so checking a full 10980 x 10980 px scene costs a fraction of reading it.
    """
    shape = sample_shape(dataset.height, dataset.width, max_pixels)
    return read_values(dataset, None if shape is None else (dataset.count, *shape))


def _nodata_error(path, what: str) -> GacError:
    return GacError(f"{path}: every pixel is nodata (all {what} NaN, nodata or 0); pass a scene with data, or fix the file's nodata value")


def _units_fix(units: str) -> str:
    return f"set data.s1_units: {units} (gac translate: --s1-units {units})"


def check_s1_units(values: np.ndarray, path, units: str = "db") -> None:
    """Refuse S1 values (bands, h, w; NaN = nodata; as the file holds them): empty, optical, or not in `units`."""
    valid = _finite(values)
    if valid.size == 0 or not valid.any():
        raise _nodata_error(path, "values read are")
    median = float(np.median(valid))
    if median > S1_DB_MEDIAN_MAX:
        raise GacError(
            f"{path}: values look like optical reflectance (median {_figure(median)}), not radar backscatter "
            f"(dB -30..+5, linear power 0.001-3); pass the Sentinel-1 (VV, VH) GeoTIFF"
        )
    linear = 0 <= median < S1_LINEAR_MEDIAN_MAX
    if units == "db" and linear:
        raise GacError(
            f"{path}: looks like linear power or amplitude, not dB (median {_figure(median)}; dB backscatter has a "
            f"median around -11 VV / -18 VH); {_units_fix('linear')}, or amplitude, and GAC converts to dB"
        )
    if units != "db" and median < 0:
        raise GacError(
            f"{path}: looks like dB, not {units} (median {_figure(median)}; {units} backscatter is never negative); "
            f"{_units_fix('db')}"
        )


def check_s1_band_count(count: int, path) -> None:
    """Sentinel-1 must have exactly VV and VH; a 12/13-band file is an S2 in the wrong place."""
    if count == S1_BAND_COUNT:
        return
    if count in S2_BAND_COUNTS:
        raise GacError(f"{path}: {count} bands, which looks like a Sentinel-2 file passed as Sentinel-1; pass the Sentinel-1 GeoTIFF (2 bands: VV, VH)")
    raise GacError(f"{path}: {count} band(s), but Sentinel-1 needs 2 (VV VH); export the file with exactly VV, VH in that order")


def check_s2_scaled(values: np.ndarray, path) -> None:
    """Refuse S2 values (12, h, w; NaN = nodata) that are empty or 0-1 float reflectance instead of x 10^4."""
    valid = _finite(values)
    valid = valid[valid != 0]  # 0 is the L2A nodata value even where the file does not declare it
    if valid.size == 0:
        raise _nodata_error(path, "values read are")
    p99 = float(np.percentile(valid, 99))
    if p99 <= S2_UNIT_P99_MAX:
        raise GacError(
            f"{path}: looks like reflectance as 0-1 floats (99th percentile {_figure(p99)}); GAC expects reflectance x 10^4 "
            f"(L2A DN); multiply by 10000 and pass the scaled GeoTIFF"
        )


def no_offset_evidence(values: np.ndarray, offset: int = L2A_OFFSET) -> str | None:
    """What in S2 DN (12, h, w; NaN = nodata) shows the scene has no L2A offset of `offset`; None when nothing does.

    See S2_LAND_VISIBLE_BELOW_MAX and S2_FAR_BELOW: the visible bands of land pixels first, then
    values far below the offset in any reliable band. A scene without one dark land pixel and
    without snow or water (a pure bright-sand desert) shows nothing either way: only its
    metadata can tell.
    """
    sample = _thin(np.asarray(values, dtype=np.float32))
    valid = np.isfinite(sample).all(axis=0)
    pixels = sample[:, valid]  # (12, n)
    if pixels.shape[1] == 0:
        return None
    land = pixels[SWIR] > pixels[GREEN]
    visible = pixels[list(VISIBLE)][:, land]
    if visible.size:
        share = float(np.mean(visible < offset))
        if share > S2_LAND_VISIBLE_BELOW_MAX:
            return f"{share:.0%} of its land pixels' visible values (B02-B04) are below {offset}"
    far = float(np.mean(pixels[list(RELIABLE)] < offset - S2_FAR_BELOW))
    if far > S2_FAR_BELOW_MAX:
        below = offset - S2_FAR_BELOW
        return f"{far:.1%} of its values are below {below} (a reflectance under -0.05, which L2A never stores)"
    return None


def remove_s2_offset(values: np.ndarray, offset: int) -> np.ndarray:
    """S2 DN minus the scene's processing-baseline offset, as float32; NaN stays NaN.

    Since processing baseline 04.00 (January 2022) L2A stores DN = reflectance x
    10^4 + 1000, so that slightly negative reflectance (dark water, shadow, after
    atmospheric correction) survives in an unsigned integer. Subtracting 1000 can
    therefore give values below 0, and they are kept: ESA allows negative BOA
    reflectance, and clipping them would bias the darkest pixels up.
    """
    values = np.asarray(values, dtype=np.float32)
    return values - np.float32(offset) if offset else values


def mask_kind(values: np.ndarray, path) -> str:
    """'binary' (0/1, or 0/255: the marked value is replaced) or 'scl' (classes 0-11) for a cloud mask's values;
    anything else is one line.

    A 0/255 mask read as SCL would match no cloud class and silently fill nothing.
    """
    found = np.unique(values[np.isfinite(values)])
    if found.size == 0:
        raise _nodata_error(path, "mask values are")
    if set(found.tolist()) <= {0, 1} or set(found.tolist()) <= {0, 255}:
        return "binary"
    if np.all(found == np.round(found)) and found.min() >= 0 and found.max() <= 11:
        return "scl"
    shown = ", ".join(_figure(float(v)) for v in found[:6]) + (", ..." if found.size > 6 else "")
    raise GacError(f"{path}: values {shown} are neither a 0/1 (or 0/255) mask nor Sentinel-2 SCL classes 0-11; "
                   "pass the scene's SCL layer or a mask with 1 (or 255) where clouds are")
