"""Built-in demo scenes: co-registered S1/S2 GeoTIFF pairs drawn from a procedural land-cover map.

Users have no data on day one, and the pipeline must run offline, so the demo
makes its own. What matters is that the S1 -> S2 relation is *learnable*: both
sensors see the same land cover. Each class has a Sentinel-2 L2A spectral
signature and a Sentinel-1 backscatter level, a shared smooth "vigour" field
modulates both (denser vegetation: brighter NIR and stronger VH volume
scattering), and S1 gets multiplicative speckle (gamma, `LOOKS` looks) in
linear power before conversion to dB, as real SAR does.

Values are typical figures for each class (reflectance x 10^4, backscatter in
dB), not measurements of a place. Everything is deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gac.data.store import S1_BANDS, S2_BANDS

LOOKS = 4.4  # equivalent number of looks of Sentinel-1 GRD IW (5x1 multi-looking)
S2_NODATA = 0  # L2A convention: 0 is "no data"
PIXEL_M = 10.0

# name: (S2 L2A reflectance x 1e4 in S2_BANDS order, (VV dB, VH dB))
CLASSES: dict[str, tuple[tuple[int, ...], tuple[float, float]]] = {
    "water": ((620, 560, 520, 380, 330, 280, 260, 230, 210, 120, 90, 70), (-21.0, -27.5)),
    "forest": ((260, 330, 560, 320, 820, 2350, 2850, 3050, 3150, 1050, 1450, 680), (-7.5, -13.0)),
    "cropland": ((380, 450, 780, 480, 1150, 2800, 3400, 3650, 3750, 1250, 2150, 1150), (-10.0, -16.5)),
    "grassland": ((480, 600, 880, 820, 1300, 2150, 2550, 2750, 2850, 980, 2550, 1600), (-11.5, -18.5)),
    "bare_soil": ((1150, 1400, 1800, 2200, 2400, 2600, 2700, 2800, 2900, 1100, 3500, 2900), (-13.5, -22.0)),
    "urban": ((1050, 1150, 1300, 1400, 1550, 1750, 1850, 1950, 2000, 780, 2250, 2050), (-4.0, -10.5)),
}
CLASS_NAMES = tuple(CLASSES)
VEGETATION = ("forest", "cropland", "grassland")
NIR_BANDS = [S2_BANDS.index(b) for b in ("B06", "B07", "B08", "B8A", "B09")]

# Demo scenes sit in a few UTM zones in Europe, one acquisition month each.
_SCENE_PLACES = [  # (EPSG, easting, northing, month)
    (32632, 500_000.0, 5_300_000.0, 7),
    (32633, 420_000.0, 5_800_000.0, 4),
    (32631, 610_000.0, 4_850_000.0, 10),
    (32634, 380_000.0, 6_200_000.0, 1),
]


@dataclass(frozen=True)
class DemoScene:
    name: str
    landcover: np.ndarray  # (H, W) class index into CLASS_NAMES
    s1_db: np.ndarray  # (2, H, W) float32
    s2: np.ndarray  # (12, H, W) int16
    epsg: int
    transform: tuple[float, ...]  # GDAL order
    month: int


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise smoothed over `scale` pixels (blob-like structure)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)), sigma=scale, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _landcover(rng: np.random.Generator, size: int) -> np.ndarray:
    """Class map: terrain decides water/vegetation/bare, a second field splits vegetation, blobs make towns, a river crosses."""
    terrain = _smooth_field(rng, size, size / 10)
    moisture = _smooth_field(rng, size, size / 14)
    towns = _smooth_field(rng, size, size / 25)
    lc = np.full((size, size), CLASS_NAMES.index("grassland"), dtype=np.uint8)
    lc[moisture > 0.35] = CLASS_NAMES.index("forest")
    lc[(moisture <= 0.35) & (moisture > -0.45)] = CLASS_NAMES.index("cropland")
    lc[terrain > 1.3] = CLASS_NAMES.index("bare_soil")
    lc[towns > 1.6] = CLASS_NAMES.index("urban")
    lc[terrain < -1.4] = CLASS_NAMES.index("water")
    # A meandering river, a few pixels wide, across the scene.
    cols = np.arange(size)
    centre = size * rng.uniform(0.3, 0.7) + size * 0.12 * np.sin(cols / size * 2 * np.pi * rng.uniform(0.8, 1.6))
    rows = np.arange(size)[:, None]
    lc[np.abs(rows - centre[None, :]) < max(2, size // 80)] = CLASS_NAMES.index("water")
    return lc


def _season(month: int) -> float:
    """Vegetation vigour through the year in the northern hemisphere: 1 in July, ~0.55 in January."""
    return 0.775 + 0.225 * np.cos((month - 7) / 12 * 2 * np.pi)


def make_scene(seed: int, index: int, size: int) -> DemoScene:
    rng = np.random.default_rng([seed, index])
    epsg, east, north, month = _SCENE_PLACES[index % len(_SCENE_PLACES)]
    east += 20_000.0 * (index // len(_SCENE_PLACES))
    lc = _landcover(rng, size)
    vigour = 0.12 * _smooth_field(rng, size, 3.0)  # shared by both sensors: this is what makes S1 -> S2 learnable
    season = _season(month)

    reflect = np.array([CLASSES[c][0] for c in CLASS_NAMES], dtype=np.float64)  # (C, 12)
    backscatter = np.array([CLASSES[c][1] for c in CLASS_NAMES], dtype=np.float64)  # (C, 2)
    s2 = reflect[lc].transpose(2, 0, 1).copy()  # (12, H, W)
    is_veg = np.isin(lc, [CLASS_NAMES.index(c) for c in VEGETATION])
    nir_gain = np.where(is_veg, season * (1 + vigour), 1 + 0.3 * vigour)
    s2[NIR_BANDS] *= nir_gain[None]
    s2 *= 1 + 0.03 * rng.standard_normal(s2.shape)  # sensor and sub-pixel noise
    s2 = np.clip(np.rint(s2), 1, 10_000).astype(np.int16)
    if index == 0:  # the first scene ends at the S2 swath edge: its last columns have no optical data
        s2[:, :, size - size // 6 :] = S2_NODATA

    s1_db = backscatter[lc].transpose(2, 0, 1).copy()  # (2, H, W)
    s1_db[1] += np.where(is_veg, 25.0 * vigour * season, 0.0)  # volume scattering follows vigour (VH most)
    s1_db[0] += np.where(is_veg, 10.0 * vigour, 0.0)
    speckle = rng.gamma(LOOKS, 1.0 / LOOKS, size=s1_db.shape)
    s1_db = (10.0 * np.log10(10.0 ** (s1_db / 10.0) * speckle)).astype(np.float32)

    transform = (PIXEL_M, 0.0, east, 0.0, -PIXEL_M, north)
    return DemoScene(f"demo_{index:02d}", lc, s1_db, s2, epsg, transform, month)


def write_scene(scene: DemoScene, root: Path) -> tuple[Path, Path]:
    """Write the pair in the TerraMesh layout (root/S1RTC/<name>.tif, root/S2L2A/<name>.tif) and its land cover (root/LANDCOVER/<name>.tif)."""
    import rasterio
    from affine import Affine

    date = f"2024:{scene.month:02d}:15 10:30:00"
    common = dict(driver="GTiff", height=scene.s2.shape[1], width=scene.s2.shape[2], crs=f"EPSG:{scene.epsg}",
                  transform=Affine(*scene.transform), tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    paths = []
    for folder, data, bands, nodata in (("S1RTC", scene.s1_db, S1_BANDS, None), ("S2L2A", scene.s2, S2_BANDS, S2_NODATA)):
        path = root / folder / f"{scene.name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", count=data.shape[0], dtype=data.dtype, nodata=nodata, **common) as dst:
            dst.write(data)
            dst.descriptions = bands
            dst.update_tags(TIFFTAG_DATETIME=date, ACQUISITION_DATE=f"2024-{scene.month:02d}-15")
        paths.append(path)
    from gac.data.landcover import scene_path, write_landcover

    write_landcover(scene_path(root, scene.name), scene.landcover, f"EPSG:{scene.epsg}", scene.transform, dict(enumerate(CLASS_NAMES)))
    return paths[0], paths[1]


def write_demo(root: Path, seed: int, n_scenes: int, size: int) -> list[str]:
    """Write all demo scenes under `root` (which the caller makes fresh); returns scene names."""
    names = []
    for index in range(n_scenes):
        scene = make_scene(seed, index, size)
        write_scene(scene, root)
        names.append(scene.name)
    return names
