"""Finding and reading paired S1/S2 scenes, with a clear error for every way a pair can be wrong.

Layout of a scene directory (the TerraMesh layout; the demo writes the same), paired by name:

    <root>/S1RTC/<name>.tif             (or S1GRD/) 2 bands, VV and VH backscatter
    <root>/S1RTC/<name>_VV.tif + <name>_VH.tif      or one file per polarisation
    <root>/S1RTC/<name>/ with VV and VH files       or a folder per scene
    <root>/S2L2A/<name>.tif             12 bands B01..B12 (no B10), reflectance x 10^4
    <root>/S2L2A/<name>/ with one file per band     at native resolution (10, 20, 60 m)

Files are read by gac.data.readers (units, nodata, the L2A offset per scene).
S1 is read onto the S2 grid: same CRS, resolution and extent, or reprojected
when `tile.reproject` is on. The values' units are checked too (gac.data.sanity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gac.data.readers import Inputs, S1Files, S1Reader, S2Files, S2Reader, scan_s1_folder, scan_s2_folder
from gac.errors import GacError

S1_FOLDERS = ("S1RTC", "S1GRD")
S2_FOLDER = "S2L2A"
_DATE = re.compile(r"(\d{4})[-:](\d{2})[-:](\d{2})")
_PRODUCT_DATE = re.compile(r"(?:^|_)(\d{4})(\d{2})(\d{2})T\d{6}(?:_|\.|$)")
_DATE_TAGS = ("ACQUISITION_DATE", "datetime", "TIFFTAG_DATETIME", "DATE_ACQUIRED")


@dataclass(frozen=True)
class ScenePair:
    name: str
    s1: S1Files
    s2: S2Files
    s1_product: str  # S1RTC or S1GRD

    @property
    def files(self) -> tuple[Path, ...]:
        return (*self.s1.files, *self.s2.files)


@dataclass
class Scene:
    """One pair on the S2 grid: NaN marks nodata in both arrays."""

    name: str
    s1: np.ndarray  # (2, H, W) float32 dB
    s2: np.ndarray  # (12, H, W) float32 reflectance x 1e4, the scene's L2A offset removed
    crs: str
    transform: tuple[float, ...]  # GDAL order a b c d e f
    month: int  # 1-12, 0 when unknown
    s2_offset: int = 0  # the L2A offset removed from this scene's S2


def find_pairs(root: Path) -> list[ScenePair]:
    """Match S1 and S2 scenes by name; a scene without its partner is an error, not a skip."""
    root = Path(root)
    if not root.is_dir():
        raise GacError(f"{root}: scene directory not found; set data.source to a directory with S1RTC/ (or S1GRD/) and S2L2A/ inside")
    s1_dirs = [root / name for name in S1_FOLDERS if (root / name).is_dir()]
    s2_dir = root / S2_FOLDER
    if len(s1_dirs) != 1 or not s2_dir.is_dir():
        found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no folders"
        raise GacError(f"{root}: expected exactly one of {'/'.join(S1_FOLDERS)} and one {S2_FOLDER} folder, found {found}; arrange the GeoTIFFs in that layout")
    s1_dir = s1_dirs[0]
    s1_scenes = {scene.name: scene for scene in scan_s1_folder(s1_dir)}
    s2_scenes = scan_s2_folder(s2_dir)
    for name, scene in s1_scenes.items():
        if name not in s2_scenes:
            raise GacError(f"{scene.label}: no S2 partner (expected {s2_dir / name}.tif or a folder {s2_dir / name}/ "
                           "of band files); add the S2L2A scene or remove this file")
    for name, scene in s2_scenes.items():
        if name not in s1_scenes:
            raise GacError(f"{scene.label}: no S1 partner (expected {s1_dir / name}.tif, {name}_VV.tif + "
                           f"{name}_VH.tif, "
                           f"or a folder {s1_dir / name}/); add the {s1_dir.name} scene or remove this file")
    if not s1_scenes:
        raise GacError(f"{root}: no GeoTIFFs in {s1_dir.name}/ and {S2_FOLDER}/; add scene pairs or use data.source: demo")
    return [ScenePair(name, s1_scenes[name], s2_scenes[name], s1_dir.name) for name in sorted(s1_scenes)]


def acquisition_month(*datasets) -> int:
    """The month (1-12) of the first date found in the datasets' tags, else in their product names
    (`..._20170613T101031_...`, as Sentinel products and BigEarthNet patches are named); 0 when none says (the
    'unknown month' encoding)."""
    for dataset in datasets:
        tags = dataset.tags()
        for key in _DATE_TAGS:
            match = _DATE.search(tags.get(key, ""))
            if match:
                return int(match.group(2))
    for dataset in datasets:
        path = Path(dataset.name)
        for part in (path.name, *(p.name for p in path.parents)):
            match = _PRODUCT_DATE.search(part)
            if match and 1 <= int(match.group(2)) <= 12:
                return int(match.group(2))
    return 0


def _same_grid(s1: S1Reader, s2: S2Reader, path: Path, reproject: bool) -> bool:
    """True when S1 already lies on the S2 grid; a different grid is an error unless `reproject`."""
    if s1.crs == s2.crs and s1.transform == s2.transform and s1.shape == s2.shape:
        return True
    if not reproject:
        if s1.crs != s2.crs:
            problem = f"CRS {s1.crs.to_string()} differs from its S2 partner's {s2.crs.to_string()}"
        elif (abs(s1.transform.a), abs(s1.transform.e)) != (abs(s2.transform.a), abs(s2.transform.e)):
            ours, theirs = (abs(s1.transform.a), abs(s1.transform.e)), (abs(s2.transform.a), abs(s2.transform.e))
            problem = f"resolution {ours} differs from its S2 partner's {theirs}"
        else:
            problem = "grid (extent or alignment) differs from its S2 partner's"
        raise GacError(f"{path}: {problem}; set tile.reproject: true to reproject S1 onto the S2 grid")
    return False


def read_pair(pair: ScenePair, reproject: bool, inputs: Inputs = Inputs()) -> Scene:
    """Read one pair onto the S2 grid, checking bands, CRS, grid, the values' units and the S2 offset.

    S1 is checked as the file holds it, before any conversion or reprojection: a
    file in other units than `data.s1_units` is an error, never silently
    converted into nonsense. The S2 offset is decided per scene (gac.data.readers.resolve_s2_offset).
    """
    with S1Reader(pair.s1, inputs.s1_units, inputs.s1_nodata) as s1, S2Reader(pair.s2, inputs.s2_offset) as s2:
        s2.check_grid()
        same = _same_grid(s1, s2, pair.s1.label, reproject)
        offset = s2.check()
        s2_data = s2.read()
        s1.check()
        s1_data = s1.read() if same else s1.read_onto(s2.transform, s2.crs, s2.shape)
        month = acquisition_month(*s2.datasets, *s1.datasets)
        crs = s2.crs.to_string()
        transform = tuple(s2.transform)[:6]
    if np.isnan(s1_data).all():  # valid in its own file, yet nothing of it falls on the S2 grid
        raise GacError(f"{pair.s1.label}: no valid pixel overlaps its S2 partner after reprojection; "
                       "pair scenes that cover the same ground")
    return Scene(pair.name, s1_data, s2_data, crs, transform, month, offset)
