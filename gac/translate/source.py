"""The scenes `gac translate` reads: an S1 scene on a 10 m grid, and the optional S2 scene + cloud mask it gap-fills.

Everything is read in windows, so a full 10980 x 10980 px scene never sits in
memory, through the readers training pairs use (gac.data.readers: S1 as one
2-band file or VV and VH files, in dB, linear power or amplitude; S2 as a stack
or per-band files; nodata as NaN; the L2A offset per scene). Every check that
can fail on a user's file runs in `open_*`, before any model is built or any
output written.

A 10 m grid means 10 m on the ground: a metric CRS whose pixels are 10 map
units but not 10 m at the scene (Web Mercator away from the equator) is off
the grid. Reprojection (`translate.reproject`) goes to 10 m in the scene's own
CRS when that one is 10 m on the ground, else in its UTM zone. Backscatter is
averaged in linear power and converted back to dB: averaging dB values would
bias dark pixels (a log of a mean is not a mean of logs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from gac.data.readers import (
    RESOLUTION,
    Inputs,
    S1Files,
    S1Reader,
    S2Reader,
    describe_grid,
    ground_pixel_size,
    is_10m_grid,
    open_raster,
    s1_scene_of,
    s2_files,
    scan_s1_folder,
    source_window,
    warp_array,
)
from gac.data.sanity import mask_kind, read_values, sample_values
from gac.data.scenes import acquisition_month
from gac.data.store import S2_BANDS
from gac.errors import GacError

log = logging.getLogger(__name__)

_S1_HELP = "Sentinel-1 GeoTIFFs (VV, VH in one file, or <name>_VV.tif + <name>_VH.tif)"


def find_s1_inputs(inputs: list) -> list[S1Files]:
    """The S1 scenes named by `inputs`: files (a VV or VH file brings its partner), directories (every scene in them,
    by name), or S1Files as they are (`--vv/--vh`)."""
    found: list[S1Files] = []
    for item in inputs:
        if isinstance(item, S1Files):
            found.append(item)
            continue
        item = Path(item)
        if item.is_dir():
            scenes = scan_s1_folder(item)
            if not scenes:
                raise GacError(f"{item}: directory holds no .tif files; pass {_S1_HELP}")
            found.extend(scenes)
        elif item.is_file():
            found.append(s1_scene_of(item))
        else:
            raise GacError(f"{item}: no such file or directory; pass {_S1_HELP} or a directory of them")
    stems = [s.stem for s in found]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise GacError(f"{twice[0]}: two inputs share this name and would write the same output; rename one")
    if not found:
        raise GacError("no input scenes: pass S1 GeoTIFFs on the command line or list them in translate.scenes")
    return found


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

    source: S1Files
    crs: object  # rasterio CRS of the output grid
    transform: object  # Affine of the output grid
    width: int
    height: int
    month: int  # 1-12; 0 = unknown (as undated training tiles are encoded)
    reprojected: bool = False
    _reader: S1Reader | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        """The file messages and tags name (the stack, or the VV file)."""
        return self.source.label

    @property
    def files(self) -> tuple[Path, ...]:
        return self.source.files

    @property
    def stem(self) -> str:
        return self.source.name

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(2, height, width) dB for the window at (row, col) of the output grid; NaN outside the scene and at
        nodata."""
        from rasterio.transform import Affine
        from rasterio.windows import Window

        out = np.full((2, height, width), np.nan, dtype=np.float32)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.height), min(col + width, self.width)
        if r1 <= r0 or c1 <= c0:
            return out
        if self.reprojected:
            part = self._reader.read_onto(self.transform * Affine.translation(c0, r0), self.crs, (r1 - r0, c1 - c0))
        else:
            part = self._reader.read(Window(c0, r0, c1 - c0, r1 - r0))
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = part
        return out


def _target_grid(reader: S1Reader):
    """(crs, transform, width, height) of the 10 m grid a scene off that grid is reprojected to: its own CRS where
    10 map units are 10 m on the ground at the scene, else its UTM zone."""
    from rasterio.transform import Affine, array_bounds
    from rasterio.warp import calculate_default_transform
    from rasterio.warp import transform as warp_points

    crs = reader.crs
    cx, cy = reader.transform * (reader.width / 2, reader.height / 2)
    keep = False
    if crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m"):
        probe = Affine(RESOLUTION, 0, cx, 0, -RESOLUTION, cy)
        keep = all(math.isclose(v, RESOLUTION, rel_tol=0.01) for v in ground_pixel_size(crs, probe, 0, 0))
    if not keep:
        (lon,), (lat,) = warp_points(crs, "EPSG:4326", [cx], [cy])
        crs = utm_crs(lon, lat)
    west, south, east, north = array_bounds(reader.height, reader.width, reader.transform)
    transform, width, height = calculate_default_transform(
        reader.crs, crs, reader.width, reader.height, west, south, east, north, resolution=RESOLUTION
    )
    return crs, transform, width, height


def open_s1(source, reproject: bool, date_override: int | None = None, inputs: Inputs = Inputs()) -> S1Scene:
    """Open and check an S1 scene (a path or S1Files: bands, CRS, grid, units); everything a user can get wrong fails
    here in one line."""
    source = source if isinstance(source, S1Files) else s1_scene_of(Path(source))
    reader = S1Reader(source, inputs.s1_units, inputs.s1_nodata)
    try:
        reader.check()
        month = date_override or acquisition_month(*reader.datasets)
        if is_10m_grid(reader.crs, reader.transform, reader.width, reader.height):
            return S1Scene(source, reader.crs, reader.transform, reader.width, reader.height, month, _reader=reader)
        if not reproject:
            grid = describe_grid(reader.crs, reader.transform, reader.width, reader.height)
            raise GacError(
                f"{source.label}: pixels are {grid}, not a 10 m grid in a metric CRS; set "
                "translate.reproject: true (10 m in the scene's UTM zone) or resample the scene to 10 m"
            )
        crs, transform, width, height = _target_grid(reader)
        return S1Scene(source, crs, transform, width, height, month, True, _reader=reader)
    except BaseException:
        reader.close()
        raise


def _same_grid(dataset, scene: S1Scene) -> bool:
    return (
        dataset.crs == scene.crs
        and dataset.width == scene.width
        and dataset.height == scene.height
        and all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(tuple(dataset.transform)[:6], tuple(scene.transform)[:6])
        )
    )


@dataclass
class CloudMask:
    """A cloud mask on the scene's grid: an SCL layer (any of `cloud_classes` is masked) or a 0/1 or 0/255 mask.

    A mask on a coarser grid over the same ground (SCL is 20 m) is resampled nearest onto the
    scene's grid, window by window: classes must not be blended.
    """

    path: Path
    kind: str  # 'scl' or 'binary'
    cloud_classes: tuple[int, ...]
    scene: S1Scene
    _dataset: object = field(default=None, repr=False)

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(height, width) bool: True where the mask says cloud; the window must lie inside the scene."""
        from rasterio.transform import Affine
        from rasterio.windows import Window

        if _same_grid(self._dataset, self.scene):
            values = read_values(self._dataset, window=Window(col, row, width, height))[0]
        else:
            dst = self.scene.transform * Affine.translation(col, row)
            window = source_window(self._dataset, dst, self.scene.crs, (height, width))
            if window is None:
                return np.zeros((height, width), dtype=bool)
            source = read_values(self._dataset, window=window)
            values = warp_array(
                source,
                self._dataset.window_transform(window),
                self._dataset.crs,
                dst,
                self.scene.crs,
                (height, width),
                "nearest",
            )[0]
        if self.kind == "binary":
            return np.isin(values, (1, 255))
        return np.isin(values, self.cloud_classes)


def open_cloud_mask(path: Path, scene: S1Scene, cloud_classes) -> CloudMask:
    """Open and check a cloud mask against the scene's grid: one band, the same ground, values a mask or SCL classes."""
    path = Path(path)
    dataset = open_raster(path)
    try:
        if dataset.count != 1:
            raise GacError(
                f"{path}: {dataset.count} bands; --cloud-mask takes one band (an SCL layer, or a 0/1 or 0/255 mask)"
            )
        same_ground = dataset.crs == scene.crs and all(
            math.isclose(a, b, abs_tol=abs(dataset.transform.a) / 2) for a, b in zip(dataset.bounds, _bounds(scene))
        )
        if not same_ground:
            raise GacError(
                f"{path}: does not cover the S1 scene's ground on its grid ({scene.crs}, {scene.width} x "
                f"{scene.height} px at 10 m); resample the mask (nearest) onto the S1 grid, or pass the SCL "
                "of the same product"
            )
        kind = mask_kind(sample_values(dataset), path)
        return CloudMask(path, kind, tuple(cloud_classes), scene, dataset)
    except BaseException:
        dataset.close()
        raise


def _bounds(scene: S1Scene) -> tuple[float, float, float, float]:
    from rasterio.transform import array_bounds

    west, south, east, north = array_bounds(scene.height, scene.width, scene.transform)
    return west, south, east, north


@dataclass
class GapFill:
    """An S2 L2A scene on the output grid and its cloud mask: clear pixels are kept, masked ones translated."""

    s2: S2Reader
    mask: CloudMask
    feather: int

    @property
    def s2_path(self) -> Path:
        return self.s2.files.label

    @property
    def files(self) -> tuple[Path, ...]:
        return (*self.s2.files.files, self.mask.path)

    def close(self) -> None:
        self.s2.close()
        self.mask.close()

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """S2 reflectance x 10^4 (its offset removed, NaN at nodata) and what gap-filling replaces, for a window.

        Replaced: the mask's clouds, and S2 nodata inside the scene. Outside the scene the S2 is
        NaN and nothing is replaced (there is no output there, so no edge to blend).
        """
        from rasterio.windows import Window

        s2 = np.full((len(S2_BANDS), height, width), np.nan, dtype=np.float32)
        replace = np.zeros((height, width), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.s2.height), min(col + width, self.s2.width)
        if r1 > r0 and c1 > c0:
            values = self.s2.read(Window(c0, r0, c1 - c0, r1 - r0))
            s2[:, r0 - row : r1 - row, c0 - col : c1 - col] = values
            inside = self.mask.read(r0, c0, r1 - r0, c1 - c0) | ~np.isfinite(values).all(axis=0)
            replace[r0 - row : r1 - row, c0 - col : c1 - col] = inside
        return s2, replace


def open_gap_fill(s2_path: Path, mask_path: Path, scene: S1Scene, s2_offset, cloud_classes, feather: int) -> GapFill:
    """Open and check the gap-filling inputs against the S1 output grid: the S2 (a stack or a folder of band files, its
    offset decided per scene) and the cloud mask."""
    s2 = S2Reader(s2_files(s2_path), s2_offset)
    try:
        if not _same_grid(s2, scene):
            raise GacError(
                f"{s2.files.label}: not on the S1 scene's grid ({scene.crs}, {scene.width} x "
                f"{scene.height} px at 10 m); resample the S2 scene onto {scene.path.name}'s grid"
            )
        s2.check()  # reflectance x 10^4, and the scene's L2A offset (a wrong data.s2_offset is refused)
        mask = open_cloud_mask(mask_path, scene, cloud_classes)
        return GapFill(s2, mask, feather)
    except BaseException:
        s2.close()
        raise


def default_scenes(params, scene_dir: Path, tiles: Path) -> tuple[list[S1Files], str]:
    """What `translate.scenes: null` translates, and one line saying why.

    A user's data: every scene of `scene_dir` holding test-split tiles of `tiles` (ground the
    models never trained on), in name order; none when there is no test split. The demo: its
    first scene (demo_00, the one ending at a swath edge), as it always has been.
    """
    from gac.data.scenes import find_pairs
    from gac.data.store import open_store

    pairs = find_pairs(scene_dir)
    if params.data.source == "demo":
        return [pairs[0].s1], f"translate.scenes is null: translating the demo's first scene, {pairs[0].name}"
    store = open_store(tiles, need=("s1",), what="tiles store")
    split = store["split"].values.astype(str)
    held_out = set(store["scene"].values.astype(str)[split == "test"])
    chosen = [pair.s1 for pair in pairs if pair.name in held_out]
    if not chosen:
        return [], (
            f"translate.scenes is null and {tiles} has no test-split tiles: nothing to translate; "
            "list scenes in translate.scenes or set tile.test_fraction above 0"
        )
    return (
        chosen,
        f"translate.scenes is null: translating the {len(chosen)} scene(s) holding test-split tiles: "
        + ", ".join(s.name for s in chosen),
    )
