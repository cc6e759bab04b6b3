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
# The same pixels in linear power are 0.001-3 with a median near 0.05: never negative,
# and a median far below 1 (= 0 dB). A field with no negative value and a median under
# this is linear power; dB data always has a median well below 0.
S1_LINEAR_MEDIAN_MAX = 0.5
# No dB backscatter has a median above +5; S2 reflectance x 10^4 has medians in the
# hundreds to thousands, and so do raw GRD digital numbers. Above this it is not dB.
S1_DB_MEDIAN_MAX = 50.0
S1_BAND_COUNT = 2  # VV, VH
S2_BAND_COUNTS = (12, 13)  # L2A without B10 (GAC's order), and the L1C/L2A stacks that keep B10

# S2 L2A reflectance x 10^4 has its 99th percentile in the thousands (vegetation NIR
# ~3000-4000, bright soil/cloud higher); as 0-1 floats the same pixels are at most ~1,
# up to ~1.6 over snow and specular glints. A 99th percentile at or under 2 is 0-1 floats.
S2_UNIT_P99_MAX = 2.0
# With the L2A offset (DN = reflectance x 10^4 + 1000) a value below 1000 is a negative
# reflectance, which occurs only in a few dark pixels (water, shadow; typically < 1%).
# Without the offset, water, shadow and visible bands of vegetation sit far below 1000,
# usually 30-60% of a scene. More than this share below the offset: the scene has none.
S2_BELOW_OFFSET_MAX = 0.20


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


def sample_values(dataset, max_pixels: int = SAMPLE_PIXELS) -> np.ndarray:
    """The open rasterio `dataset` as float32 (bands, h, w), NaN for nodata, decimated to at most `max_pixels` per band.

    Reading through `out_shape` lets GDAL skip rows and columns (or use overviews),
    so checking a full 10980 x 10980 px scene costs a fraction of reading it.
    """
    height, width = dataset.height, dataset.width
    if height * width <= max_pixels:
        return read_values(dataset)
    scale = math.sqrt(height * width / max_pixels)
    out_h, out_w = max(1, int(height / scale)), max(1, int(width / scale))
    while out_h * out_w > max_pixels:  # int() rounding can leave one row too many
        out_h, out_w = max(1, out_h - 1), max(1, out_w - 1)
    return read_values(dataset, (dataset.count, out_h, out_w))


def _nodata_error(path, what: str) -> GacError:
    return GacError(f"{path}: every pixel is nodata (all {what} NaN, nodata or 0); pass a scene with data, or fix the file's nodata value")


def check_s1_db(values: np.ndarray, path) -> None:
    """Refuse S1 values (2, h, w; NaN = nodata) that are not backscatter in dB: empty, linear power, or optical."""
    valid = _finite(values)
    if valid.size == 0 or not valid.any():
        raise _nodata_error(path, "values read are")
    median = float(np.median(valid))
    if valid.min() >= 0 and median < S1_LINEAR_MEDIAN_MAX:
        raise GacError(
            f"{path}: looks like linear power, not dB (all values >= 0, median {_figure(median)}; dB backscatter has a median "
            f"around -11 VV / -18 VH); convert with 10*log10(value) (nodata stays nodata) and pass the converted GeoTIFF"
        )
    if median > S1_DB_MEDIAN_MAX:
        raise GacError(
            f"{path}: values look like optical reflectance (median {_figure(median)}), not radar backscatter in dB "
            f"(-30..+5); pass the Sentinel-1 (VV, VH) GeoTIFF in dB"
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


def remove_s2_offset(values: np.ndarray, offset: int, path) -> np.ndarray:
    """S2 DN minus the processing-baseline offset (`data.s2_offset`), as float32; NaN stays NaN.

    Since processing baseline 04.00 (January 2022) L2A stores DN = reflectance x
    10^4 + 1000, so that slightly negative reflectance (dark water, shadow, after
    atmospheric correction) survives in an unsigned integer. Subtracting 1000 can
    therefore give values below 0, and they are kept: ESA allows negative BOA
    reflectance, and clipping them would bias the darkest pixels up.

    The offset is a param, not a guess, but a wrong one is caught: on a scene that
    carries it, values below the offset are those rare negative reflectances; when
    more than S2_BELOW_OFFSET_MAX of the valid pixels (all bands together) are below
    it, the scene has no offset and subtracting would shift it all.
    """
    values = np.asarray(values, dtype=np.float32)
    if offset == 0:
        return values
    valid = np.isfinite(values)
    count = int(np.count_nonzero(valid))
    below = int(np.count_nonzero(values < offset)) / count if count else 0.0  # NaN compares False
    if below > S2_BELOW_OFFSET_MAX:
        raise GacError(
            f"{path}: data.s2_offset is {offset} but {below:.0%} of valid pixels are below {offset}: "
            f"this scene has no L2A offset; set data.s2_offset: 0"
        )
    return values - np.float32(offset)
