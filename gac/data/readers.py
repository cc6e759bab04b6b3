"""One reader for Sentinel-1 and one for Sentinel-2, in the forms users get them, for training pairs and translate.

Sentinel-1 (`S1Reader`): one 2-band GeoTIFF (VV, VH), or one file per
polarisation on one grid (`<name>_VV.tif` + `<name>_VH.tif`, or `VV.tif` +
`VH.tif` in a folder named after the scene). Units `db`, `linear` (power) or
`amplitude` (`data.s1_units`, `--s1-units`), converted here to dB:
dB = 10*log10(power) = 20*log10(amplitude). Nodata becomes NaN as the file is
read, so -inf (the zero-filled border of a GRD in dB) and undeclared fill values
never reach a model: every non-finite value, the file's declared nodata, and
`data.s1_nodata` when set; with `auto` (the default) also 0 in linear power or
amplitude (its log is -inf) and pixels that are exactly 0 dB in both bands (a
zero-filled border written without a nodata tag). A negative power or amplitude
(thermal-noise removal can subtract more than was there) is no measurement of
anything brighter than the noise: it becomes S1_FLOOR_DB rather than a hole.

Sentinel-2 L2A (`S2Reader`): a 12-band stack (B01..B12 without B10) or a
folder with one file per band at its native resolution (10, 20, 60 m; names
ending `_B02`, `_B8A` ... or `B02.tif`; other files such as SCL, AOT, TCI are
ignored). Bands off the 10 m grid are resampled onto it bilinearly: it keeps a
band's local mean, and nearest would print the 20/60 m pixel blocks into the
ground truth as edges no 10 m radar pixel shows. 0 (the L2A fill value) and
declared nodata are left out of the interpolation, so a swath edge never
darkens the pixels beside it; where no valid neighbour is left the nearest
value stays (a clipped 0 over dark water stays 0). A pixel that is 0 (or
nodata) in every band read at 10 m is NaN in all bands. The L2A offset is
found per scene (`resolve_s2_offset`) and removed.

Both readers give windows of their own grid (`read`) or resample onto another
grid (`read_onto`, S1 only: bilinear in linear power, as averaging dB would
bias dark pixels), reading only the source window the grid needs plus a margin
that follows the resolution ratio, so a window's values never depend on where
the window lies.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gac.data.sanity import (
    L2A_OFFSET,
    check_s1_band_count,
    check_s1_units,
    check_s2_scaled,
    no_offset_evidence,
    read_values,
    remove_s2_offset,
    sample_shape,
)
from gac.data.store import S2_BANDS
from gac.errors import GacError

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
S2_BAND_SUFFIXES = (".tif", ".tiff", ".jp2")  # SAFE products ship their bands as JPEG 2000
S1_FLOOR_DB = -35.0  # below what S1 IW measures (its noise-equivalent sigma0 is about -22 to -26 dB)
RESOLUTION = 10.0  # m: the grid every GAC model was trained on (Sentinel-2's 10 m bands)
# A grid counts as 10 m when its pixels are 10 m on the ground within this share. UTM is
# within 0.1% across a zone and national conformal grids within ~0.3%; Web Mercator
# (EPSG:3857) at 60 degrees has 5 m pixels for its 10 map units.
GROUND_TOLERANCE = 0.02
_POLARISATION = re.compile(r"^(?:(?P<prefix>.*)[_.-])?(?P<pol>vv|vh)$", re.IGNORECASE)
_S2_BAND = re.compile(r"(?:^|[_.-])B(?P<band>0?[1-9]|1[0-2]|8A)(?:[_.-]|$)", re.IGNORECASE)
_PRODUCT_BASELINE = re.compile(r"_N(\d{4})(?:[_.]|$)")


def _rasters(folder: Path, suffixes=RASTER_SUFFIXES) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


# ----------------------------------------------------------------------------- where a scene's files are


@dataclass(frozen=True)
class S1Files:
    """One S1 scene's files: a 2-band stack (VV, VH), or the VV file and the VH file."""

    name: str
    files: tuple[Path, ...]

    @property
    def stem(self) -> str:
        return self.name

    @property
    def label(self) -> Path:
        """The path messages name: the stack, or the VV file."""
        return self.files[0]


@dataclass(frozen=True)
class S2Files:
    """One S2 scene's files: a 12-band stack, or one file per band (S2_BANDS order)."""

    name: str
    files: tuple[Path, ...]

    @property
    def label(self) -> Path:
        """The path messages name: the stack, or the folder of band files."""
        return self.files[0] if len(self.files) == 1 else self.files[0].parent


def _polarisation(path: Path) -> tuple[str, str] | None:
    match = _POLARISATION.match(path.stem)
    return (match.group("prefix") or "", match.group("pol").upper()) if match else None


def group_s1_files(files: list[Path], folder_name: str | None = None) -> list[S1Files]:
    """Scenes from S1 files: a file named `<name>_VV` pairs with `<name>_VH` (`VV` with `VH`, named after
    `folder_name` or the folder); any other file is a 2-band stack named by its stem. A polarisation without its
    partner is an error."""
    stacks: list[S1Files] = []
    pairs: dict[tuple[Path, str], dict[str, Path]] = {}
    for path in files:
        pol = _polarisation(path)
        if pol is None:
            stacks.append(S1Files(path.stem, (path,)))
        else:
            pairs.setdefault((path.parent, pol[0]), {})[pol[1]] = path
    for (parent, prefix), found in pairs.items():
        for have, want in (("VV", "VH"), ("VH", "VV")):
            if have in found and want not in found:
                path = found[have]
                pol = want if path.stem[-2:].isupper() else want.lower()
                expected = path.with_name(path.stem[:-2] + pol + path.suffix)
                raise GacError(f"{path}: {have} without its {want} partner (expected {expected.name} beside it); "
                               f"add the {want} file, or pass one 2-band GeoTIFF (VV, VH)")
        stacks.append(S1Files(prefix or folder_name or parent.name, (found["VV"], found["VH"])))
    names = [s.name for s in stacks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        clash = [s.label for s in stacks if s.name == twice[0]]
        raise GacError(f"{clash[1]}: S1 scene '{twice[0]}' is also {clash[0]}; keep one file (or VV/VH pair) per scene")
    return sorted(stacks, key=lambda s: s.name)


def s1_scene_of(path: Path) -> S1Files:
    """The S1 scene a file belongs to: itself (a 2-band stack), or its VV/VH pair with the partner found beside it."""
    path = Path(path)
    pol = _polarisation(path)
    if pol is None:
        return S1Files(path.stem, (path,))
    same = [p for p in _rasters(path.parent) if _polarisation(p) is not None and _polarisation(p)[0] == pol[0]]
    return group_s1_files(same or [path], path.parent.name)[0]


def s1_pair(vv: Path, vh: Path) -> S1Files:
    """A scene given as its VV and VH files (`--vv/--vh`), named after the VV file less its polarisation."""
    vv, vh = Path(vv), Path(vh)
    pol = _polarisation(vv)
    return S1Files((pol[0] or vv.parent.name) if pol else vv.stem, (vv, vh))


def scan_s1_folder(folder: Path) -> list[S1Files]:
    """Every S1 scene in a folder: its files (grouped by group_s1_files), and each subfolder as one scene named
    after it."""
    scenes = group_s1_files(_rasters(folder), folder.name)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        inside = group_s1_files(_rasters(sub), sub.name)
        if len(inside) != 1:
            raise GacError(f"{sub}: a scene folder holds one S1 scene (VV and VH files, or one 2-band GeoTIFF), found "
                           f"{len(inside)}; keep one scene per folder")
        scenes.append(S1Files(sub.name, inside[0].files))
    return sorted(scenes, key=lambda s: s.name)


def s2_band_files(folder: Path) -> S2Files:
    """The 12 L2A band files in a folder, found by their band names (B01 ... B8A ... B12; B10 and others ignored)."""
    bands: dict[str, Path] = {}
    for path in _rasters(folder, S2_BAND_SUFFIXES):
        match = _S2_BAND.search(path.stem)
        if not match:
            continue
        code = match.group("band").upper()
        band = "B8A" if code == "8A" else f"B{int(code):02d}"
        if band not in S2_BANDS:
            continue
        if band in bands:
            raise GacError(f"{path}: a second file for band {band} (first: {bands[band].name}); keep one file per band")
        bands[band] = path
    missing = [b for b in S2_BANDS if b not in bands]
    if missing:
        raise GacError(f"{folder}: no file for band(s) {' '.join(missing)}; a per-band S2 folder needs all 12 L2A "
                       f"bands ({' '.join(S2_BANDS)}), named e.g. <scene>_B02.tif")
    return S2Files(folder.name, tuple(bands[b] for b in S2_BANDS))


def reference_file(files: S2Files) -> Path:
    """The file whose grid is the scene's 10 m grid: the stack, or the B02 band file."""
    return files.files[0] if len(files.files) == 1 else files.files[S2_BANDS.index("B02")]


def s2_files(path: Path) -> S2Files:
    """An S2 scene from a path: a stack file, or a folder of band files."""
    path = Path(path)
    if path.is_dir():
        return s2_band_files(path)
    if not path.is_file():
        raise GacError(f"{path}: no such file or folder; pass a 12-band S2 L2A GeoTIFF or a folder of its band files")
    return S2Files(path.stem, (path,))


def scan_s2_folder(folder: Path) -> dict[str, S2Files]:
    """Every S2 scene in a folder: stack files by stem, and subfolders of band files by folder name."""
    scenes = {p.stem: S2Files(p.stem, (p,)) for p in _rasters(folder)}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name in scenes:
            raise GacError(f"{sub}: S2 scene '{sub.name}' is also {scenes[sub.name].label}; keep one per scene")
        scenes[sub.name] = s2_band_files(sub)
    return scenes


# ----------------------------------------------------------------------------- grids


def _metric(crs) -> bool:
    return crs is not None and crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter", "m")


def ground_pixel_size(crs, transform, width: int, height: int) -> tuple[float, float]:
    """Metres on the ground of one pixel step along the rows and the columns, at the scene centre.

    Measured through longitude and latitude on the WGS 84 ellipsoid (meridional and prime-vertical radii),
    so a projection whose map units are not ground metres there (Web Mercator) shows its true pixel size.
    """
    from rasterio.warp import transform as warp_points

    cx, cy = width / 2, height / 2
    xs, ys = zip(*(transform * (cx + dx, cy + dy) for dx, dy in ((0, 0), (1, 0), (0, 1))))
    lons, lats = warp_points(crs, "EPSG:4326", list(xs), list(ys))
    a, e2 = 6378137.0, 0.00669437999014
    phi = math.radians(lats[0])
    w = 1 - e2 * math.sin(phi) ** 2
    prime, meridian = a / math.sqrt(w), a * (1 - e2) / w**1.5

    def step(k: int) -> float:
        east = prime * math.cos(phi) * math.radians(lons[k] - lons[0])
        north = meridian * math.radians(lats[k] - lats[0])
        return math.hypot(east, north)

    return step(1), step(2)


def is_10m_grid(crs, transform, width: int = 1, height: int = 1) -> bool:
    """A north-up grid of 10 m pixels in a metric CRS whose pixels are 10 m on the ground at the scene centre."""
    if not _metric(crs):
        return False
    a, b, _, d, e, _ = tuple(transform)[:6]
    if b != 0 or d != 0 or not all(math.isclose(abs(v), RESOLUTION, rel_tol=0.01) for v in (a, e)):
        return False
    ground = ground_pixel_size(crs, transform, width, height)
    return all(math.isclose(v, RESOLUTION, rel_tol=GROUND_TOLERANCE) for v in ground)


def describe_grid(crs, transform, width: int, height: int) -> str:
    """What a grid's pixels are, for a message: map units, and ground metres where they differ."""
    if crs is None:
        return "of unknown size"
    res = f"{abs(transform.a):g} x {abs(transform.e):g} {crs.linear_units or 'units'}"
    if _metric(crs):
        ground = ground_pixel_size(crs, transform, width, height)
        pixel = (abs(transform.a), abs(transform.e))
        if not all(math.isclose(v, m, rel_tol=GROUND_TOLERANCE) for v, m in zip(ground, pixel)):
            res += f" ({ground[0]:.3g} x {ground[1]:.3g} m on the ground at the scene centre)"
    return res


def source_window(dataset, dst_transform, dst_crs, shape: tuple[int, int]):
    """The window of `dataset` that resampling onto the grid (dst_transform, dst_crs, shape) reads; None: off the file.

    The grid's footprint plus a margin of 2 + 2 x the resolution ratio source pixels: when a finer
    source is resampled onto a coarser grid, GDAL widens the bilinear kernel by that ratio, and a
    window cut at a fixed margin would give border pixels other values than the same pixels read
    in a larger window (seams between blocks).
    """
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    west, south, east, north = array_bounds(shape[0], shape[1], dst_transform)
    bounds = (west, south, east, north)
    if dst_crs != dataset.crs:
        bounds = transform_bounds(dst_crs, dataset.crs, *bounds)
    src = from_bounds(*bounds, transform=dataset.transform)
    ratio = max(1.0, abs(src.width) / max(shape[1], 1), abs(src.height) / max(shape[0], 1))
    margin = 2 + 2 * math.ceil(ratio)
    c0 = max(int(math.floor(min(src.col_off, src.col_off + src.width))) - margin, 0)
    r0 = max(int(math.floor(min(src.row_off, src.row_off + src.height))) - margin, 0)
    c1 = min(int(math.ceil(max(src.col_off, src.col_off + src.width))) + margin, dataset.width)
    r1 = min(int(math.ceil(max(src.row_off, src.row_off + src.height))) + margin, dataset.height)
    if r1 <= r0 or c1 <= c0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def warp_array(source: np.ndarray, src_transform, src_crs, dst_transform, dst_crs, shape: tuple[int, int],
               resampling: str) -> np.ndarray:
    """float32 (bands, h, w) with NaN = nodata, resampled onto a grid of `shape` (NaN where nothing falls)."""
    from rasterio.warp import Resampling, reproject

    out = np.full((source.shape[0], *shape), np.nan, dtype=np.float32)
    reproject(np.ascontiguousarray(source, dtype=np.float32), out, src_transform=src_transform, src_crs=src_crs,
              dst_transform=dst_transform, dst_crs=dst_crs, src_nodata=np.nan, dst_nodata=np.nan,
              resampling=Resampling[resampling], tolerance=0)
    return out


def _window_grid(dataset, window) -> tuple[object, tuple[int, int]]:
    if window is None:
        return dataset.transform, (dataset.height, dataset.width)
    return dataset.window_transform(window), (int(window.height), int(window.width))


def open_raster(path: Path):
    """rasterio.open, with an unreadable file as a one-line GacError naming it."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError:
        raise GacError(f"{path}: unreadable or not a GeoTIFF; copy or export the file again") from None


def _open_all(paths) -> list:
    opened = []
    try:
        for path in paths:
            opened.append(open_raster(path))
    except BaseException:
        for dataset in opened:
            dataset.close()
        raise
    return opened


def _require_crs(dataset, path) -> None:
    if dataset.crs is None:
        raise GacError(f"{path}: has no CRS; write the GeoTIFF with its projection (e.g. its UTM EPSG code)")


def _same_grid(a, b) -> bool:
    return a.crs == b.crs and a.width == b.width and a.height == b.height and all(
        math.isclose(x, y, abs_tol=1e-6) for x, y in zip(tuple(a.transform)[:6], tuple(b.transform)[:6]))


# ----------------------------------------------------------------------------- Sentinel-1


class _Scene:
    """A scene's open rasters (closed together; a context manager) and the grid it is read on."""

    datasets: list
    height: int
    width: int

    def close(self) -> None:
        for dataset in self.datasets:
            dataset.close()
        self.datasets = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class Inputs:
    """How the user's rasters are to be read (the `data` params): S1 units and nodata, the S2 offset."""

    s1_units: str = "db"
    s1_nodata: float | str = "auto"
    s2_offset: int | str = "auto"

    @classmethod
    def from_params(cls, data) -> "Inputs":
        return cls(data.s1_units, data.s1_nodata, data.s2_offset)


class S1Reader(_Scene):
    """One S1 scene as delivered, read as (VV, VH) backscatter in dB on its own grid, NaN for nodata."""

    def __init__(self, files: S1Files, units: str = "db", nodata: float | str = "auto"):
        self.files, self.units, self.nodata = files, units, nodata
        self.datasets = _open_all(files.files)
        try:
            self._check_layout()
        except BaseException:
            self.close()
            raise
        first = self.datasets[0]
        self.crs, self.transform, self.width, self.height = first.crs, first.transform, first.width, first.height

    def _check_layout(self) -> None:
        if len(self.datasets) == 1:
            check_s1_band_count(self.datasets[0].count, self.files.label)
        else:
            for dataset, path, pol in zip(self.datasets, self.files.files, ("VV", "VH")):
                if dataset.count != 1:
                    raise GacError(f"{path}: {dataset.count} bands, but a per-polarisation file holds one ({pol}); "
                                   "pass the single-band VV and VH files, or one 2-band GeoTIFF (VV, VH)")
        for dataset, path in zip(self.datasets, self.files.files):
            _require_crs(dataset, path)
        if len(self.datasets) == 2 and not _same_grid(*self.datasets):
            raise GacError(f"{self.files.files[1]}: grid (CRS, size or transform) differs from "
                           f"{self.files.files[0].name}'s; "
                           "export VV and VH on one grid")

    def raw(self, window=None, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """(2, h, w) float32 in the file's units, NaN at every kind of nodata (module docstring)."""
        parts = [read_values(d, None if out_shape is None else (d.count, *out_shape), window) for d in self.datasets]
        values = parts[0] if len(parts) == 1 else np.concatenate(parts)
        values[~np.isfinite(values)] = np.nan
        if self.nodata != "auto":
            values[values == np.float32(self.nodata)] = np.nan
        elif self.units == "db":
            values[:, (values == 0).all(axis=0)] = np.nan
        else:
            values[values == 0] = np.nan
        return values

    def check(self) -> None:
        """The values' units, on a decimated read: a mismatch with `units` is one line naming the file (VV, VH each)."""
        values = self.raw(out_shape=sample_shape(self.height, self.width))
        parts = [values] if len(self.files.files) == 1 else [values[:1], values[1:]]
        for part, path in zip(parts, self.files.files):
            check_s1_units(part, path, self.units)

    def _to_db(self, values: np.ndarray) -> np.ndarray:
        if self.units == "db":
            return values
        with np.errstate(divide="ignore", invalid="ignore"):
            db = np.float32(10.0 if self.units == "linear" else 20.0) * np.log10(values)
        db[values == 0] = np.nan  # log of 0: no measurement
        db[values < 0] = S1_FLOOR_DB
        return db.astype(np.float32)

    def _to_power(self, values: np.ndarray) -> np.ndarray:
        if self.units == "db":
            return np.where(np.isnan(values), np.nan, 10.0 ** (values / 10.0)).astype(np.float32)
        power = values if self.units == "linear" else values * values
        power = np.where(values < 0, np.float32(10.0 ** (S1_FLOOR_DB / 10.0)), power)
        return np.where(values == 0, np.nan, power).astype(np.float32)

    def read(self, window=None) -> np.ndarray:
        """(2, h, w) float32 dB for a window of the file's own grid (default: all of it); NaN at nodata."""
        return self._to_db(self.raw(window))

    def read_onto(self, dst_transform, dst_crs, shape: tuple[int, int]) -> np.ndarray:
        """(2, h, w) float32 dB resampled bilinearly in linear power onto another grid; NaN where nothing falls."""
        window = source_window(self.datasets[0], dst_transform, dst_crs, shape)
        if window is None:
            return np.full((2, *shape), np.nan, dtype=np.float32)
        power = self._to_power(self.raw(window))
        src_transform = self.datasets[0].window_transform(window)
        out = warp_array(power, src_transform, self.crs, dst_transform, dst_crs, shape, "bilinear")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(out > 0, 10.0 * np.log10(out), np.nan).astype(np.float32)


# ----------------------------------------------------------------------------- Sentinel-2


def offset_from_metadata(datasets, paths) -> tuple[int, str] | None:
    """(offset, what said so) from a scene's own metadata, or None when it says nothing.

    In order: `BOA_ADD_OFFSET*` tags (dataset or band; -1000 means an offset of 1000), a
    `PROCESSING_BASELINE` tag, band scale/offset (reflectance = DN x 1e-4 - 0.1), and the
    processing baseline in an S2 product name (`..._N0509_...`) in a file or folder name.
    Baselines from 04.00 (N0400) on add the offset.
    """
    for dataset in datasets:
        for tags in [dataset.tags()] + [dataset.tags(i) for i in range(1, dataset.count + 1)]:
            for key, value in tags.items():
                if "BOA_ADD_OFFSET" in key.upper():
                    try:
                        return int(round(-float(value))), f"its {key} tag ({value})"
                    except ValueError:
                        continue
        baseline = dataset.tags().get("PROCESSING_BASELINE")
        if baseline:
            try:
                return (L2A_OFFSET if float(baseline) >= 4 else 0), f"its PROCESSING_BASELINE tag ({baseline})"
            except ValueError:
                pass
        scales, offsets = dataset.scales, dataset.offsets
        if any(s != 1.0 for s in scales) and all(math.isclose(s, 1e-4, rel_tol=1e-3) for s in scales):
            dn = int(round(-offsets[0] / scales[0]))
            if dn in (0, L2A_OFFSET) and all(math.isclose(o, offsets[0], abs_tol=1e-9) for o in offsets):
                return dn, f"its band scale/offset ({scales[0]:g}, {offsets[0]:g})"
    for path in paths:
        for part in (Path(path).name, *(p.name for p in Path(path).parents)):
            match = _PRODUCT_BASELINE.search(part)
            if match:
                offset = L2A_OFFSET if int(match.group(1)) >= 400 else 0
                return offset, f"processing baseline N{match.group(1)} in its name"
    return None


def resolve_s2_offset(setting: int | str, values: np.ndarray, metadata: tuple[int, str] | None, path) -> int:
    """The L2A offset of one scene: `data.s2_offset` when it is a number, else the scene's metadata, else its values.

    Every offset that is not 0 is checked against the values (sanity.no_offset_evidence): a scene
    that shows no offset is refused in one line, whoever said it had one. With `auto` and no
    metadata, a scene the values do not show to lack the offset is taken as carrying it.
    """
    if setting != "auto":
        offset, said = int(setting), f"data.s2_offset is {setting}"
    elif metadata is not None:
        offset, said = metadata[0], f"data.s2_offset is auto and {metadata[1]} says the L2A offset is {metadata[0]}"
    else:
        evidence = no_offset_evidence(values)
        offset = 0 if evidence else L2A_OFFSET
        log.debug("%s: L2A offset %d (no offset metadata; %s)", path, offset,
                 evidence or f"no land pixel's visible value lies below {L2A_OFFSET} and none far below it")
        return offset
    if offset:
        evidence = no_offset_evidence(values, offset)
        if evidence:
            raise GacError(f"{path}: {said}, but {evidence}: this scene has no L2A offset; set data.s2_offset: 0")
    return offset


class S2Reader(_Scene):
    """One S2 L2A scene as delivered, read on its 10 m grid as reflectance x 10^4 less its own offset, NaN at nodata.

    `check()` (scaling, offset) must run before `read()`: it decides the offset.
    """

    def __init__(self, files: S2Files, offset: int | str = "auto"):
        self.files, self.setting = files, offset
        self.offset: int | None = None
        self.datasets = _open_all(files.files)
        try:
            self._check_layout()
        except BaseException:
            self.close()
            raise
        ref = self.datasets[self._reference]
        self.crs, self.transform, self.width, self.height = ref.crs, ref.transform, ref.width, ref.height

    def _check_layout(self) -> None:
        label = self.files.label
        if len(self.datasets) == 1:
            count = self.datasets[0].count
            if count != len(S2_BANDS):
                raise GacError(f"{label}: {count} band(s), but Sentinel-2 L2A needs {len(S2_BANDS)} "
                               f"({' '.join(S2_BANDS)}); export the file with exactly those bands in that order, "
                               "or pass a folder of its band files")
        else:
            for dataset, path in zip(self.datasets, self.files.files):
                if dataset.count != 1:
                    raise GacError(f"{path}: {dataset.count} bands, but a per-band S2 file holds one; "
                                   "pass the band files as delivered")
        for dataset, path in zip(self.datasets, self.files.files):
            _require_crs(dataset, path)
        self._reference = 0 if len(self.datasets) == 1 else S2_BANDS.index("B02")
        ref, reference = self.datasets[self._reference], self.files.files[self._reference].name
        for dataset, path in zip(self.datasets, self.files.files):
            if dataset.crs != ref.crs:
                raise GacError(f"{path}: CRS {dataset.crs.to_string()} differs from {reference}'s "
                               f"{ref.crs.to_string()}; pass the band files of one product")
            half = abs(dataset.transform.a) / 2
            if not all(math.isclose(a, b, abs_tol=half) for a, b in zip(dataset.bounds, ref.bounds)):
                raise GacError(f"{path}: covers {tuple(round(v) for v in dataset.bounds)}, not the same ground as "
                               f"{reference} {tuple(round(v) for v in ref.bounds)}; pass the band files of one product")
        # the bands read as they are (the 10 m ones): where all of them are 0 or nodata, the pixel is nodata
        single = len(self.datasets) == 1
        on_grid = [i for i, d in enumerate(self.datasets) if _same_grid(d, ref)]
        self._native = list(range(len(S2_BANDS))) if single else on_grid

    def check_grid(self) -> None:
        """The scene defines the training grid: it must be 10 m on the ground."""
        if not is_10m_grid(self.crs, self.transform, self.width, self.height):
            grid = describe_grid(self.crs, self.transform, self.width, self.height)
            raise GacError(f"{self.files.label}: pixels are {grid}, "
                           "not a 10 m grid in a metric CRS; reproject the S2 scene to 10 m in its UTM zone "
                           "(e.g. gdalwarp -t_srs EPSG:326NN -tr 10 10)")

    def _footprint(self, values: np.ndarray, native: list[int]) -> np.ndarray:
        """NaN in every band where every band read at 10 m is 0 or nodata (the L2A fill), in place."""
        empty = np.all((values[native] == 0) | np.isnan(values[native]), axis=0)
        values[:, empty] = np.nan
        return values

    def sample(self) -> np.ndarray:
        """(12, h, w) DN decimated to at most SAMPLE_PIXELS per band (nearest, all bands one shape), NaN = nodata."""
        shape = sample_shape(self.height, self.width) or (self.height, self.width)
        values = np.concatenate([read_values(d, (d.count, *shape)) for d in self.datasets])
        return self._footprint(values, self._native)

    def check(self) -> int:
        """Reflectance x 10^4 (not 0-1 floats) and this scene's L2A offset, decided and checked; returns the offset."""
        sample = self.sample()
        check_s2_scaled(sample, self.files.label)
        metadata = offset_from_metadata(self.datasets, self.files.files)
        self.offset = resolve_s2_offset(self.setting, sample, metadata, self.files.label)
        return self.offset

    def raw(self, window=None) -> np.ndarray:
        """(12, h, w) float32 DN on the 10 m grid (a window of it, default all), NaN at nodata; others resampled."""
        if len(self.datasets) == 1:
            return self._footprint(read_values(self.datasets[0], window=window), self._native)
        ref = self.datasets[self._reference]
        dst_transform, shape = _window_grid(ref, window)
        bands = [read_values(d, window=window)[0] if i in self._native else self._band_onto(d, dst_transform, shape)
                 for i, d in enumerate(self.datasets)]
        return self._footprint(np.stack(bands), self._native)

    def _band_onto(self, dataset, dst_transform, shape: tuple[int, int]) -> np.ndarray:
        window = source_window(dataset, dst_transform, self.crs, shape)
        if window is None:
            return np.full(shape, np.nan, dtype=np.float32)
        values, src_transform = read_values(dataset, window=window), dataset.window_transform(window)
        grids = (src_transform, self.crs, dst_transform, self.crs, shape)
        smooth = warp_array(np.where(values == 0, np.nan, values), *grids, "bilinear")[0]
        hole = np.isnan(smooth)
        if hole.any():
            smooth[hole] = warp_array(values, *grids, "nearest")[0][hole]
        return smooth

    def read(self, window=None) -> np.ndarray:
        """(12, h, w) float32 reflectance x 10^4, this scene's offset removed (negatives kept), NaN at nodata."""
        if self.offset is None:
            raise RuntimeError("S2Reader.check() decides the offset and must run before read()")
        return remove_s2_offset(self.raw(window), self.offset)
