"""Per-pixel land cover beside each scene, so evaluation can say where (water, forest, towns) a variant wins or fails.

A scene directory may hold `LANDCOVER/<name>.tif`: one band of integer class
codes on the scene's S2 grid, `nodata` for unknown pixels, and a
`LANDCOVER_CLASSES` tag (JSON {code: name}). The demo writes its procedural
classes there; for real data `gac synth` resamples the raster named by
`data.landcover` (any CRS, e.g. ESA WorldCover) onto each S2 scene with
nearest-neighbour resampling (classes must not be averaged). Without either,
tiles carry no land cover and evaluation says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from gac.errors import GacError

FOLDER = "LANDCOVER"
TAG = "LANDCOVER_CLASSES"
NODATA = 255  # in the GeoTIFFs (uint8 codes)
UNKNOWN = -1  # in tiles.zarr's `landcover` (int16)


def scene_path(scene_dir: Path, name: str) -> Path:
    return Path(scene_dir) / FOLDER / f"{name}.tif"


def write_landcover(path: Path, codes: np.ndarray, crs: str, transform, classes: Mapping[int, str]) -> Path:
    """One uint8 band of class codes (NODATA = unknown) with the class names as a tag."""
    import rasterio
    from affine import Affine

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    with rasterio.open(path, "w", driver="GTiff", height=codes.shape[0], width=codes.shape[1], count=1, dtype="uint8",
                       crs=crs, transform=affine, nodata=NODATA, compress="deflate") as dst:
        dst.write(codes.astype(np.uint8), 1)
        dst.update_tags(**{TAG: json.dumps({str(int(k)): v for k, v in classes.items()})})
    return path


def resample_onto(raster: Path, s2_path: Path, out: Path, classes: Mapping[int, str]) -> Path:
    """`raster` (any CRS) resampled nearest onto the grid of the S2 scene `s2_path`, written to `out`."""
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import Resampling, reproject

    raster = Path(raster)
    if not raster.is_file():
        raise GacError(f"{raster}: data.landcover raster not found; fix the path or remove data.landcover")
    try:
        src = rasterio.open(raster)
    except RasterioIOError:
        raise GacError(f"{raster}: data.landcover is not a readable raster; give a GeoTIFF of integer class codes") from None
    with src, rasterio.open(s2_path) as s2:
        if src.crs is None:
            raise GacError(f"{raster}: data.landcover raster has no CRS; write it with its projection")
        if src.count != 1 or np.dtype(src.dtypes[0]).kind not in "iu":
            raise GacError(f"{raster}: data.landcover needs one band of integer class codes, found {src.count} band(s) of {src.dtypes[0]}")
        out_codes = np.full((s2.height, s2.width), NODATA, dtype=np.uint8)
        source = src.read(1)
        if source.max(initial=0) > 254 or source.min(initial=0) < 0:
            raise GacError(f"{raster}: class codes must lie in 0..254 (255 is nodata); recode the raster")
        reproject(source.astype(np.uint8), out_codes, src_transform=src.transform, src_crs=src.crs, src_nodata=src.nodata,
                  dst_transform=s2.transform, dst_crs=s2.crs, dst_nodata=NODATA, resampling=Resampling.nearest)
        named = dict(classes) or {int(c): f"class_{int(c)}" for c in np.unique(out_codes) if c != NODATA}
        return write_landcover(out, out_codes, s2.crs.to_string(), s2.transform, named)


def read_scene_landcover(scene_dir: Path, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, dict[int, str]] | None:
    """(H, W) int16 codes (UNKNOWN where unknown) and {code: name} for one scene, or None when it has no layer."""
    import rasterio

    path = scene_path(scene_dir, name)
    if not path.is_file():
        return None
    with rasterio.open(path) as src:
        if (src.height, src.width) != tuple(shape):
            raise GacError(f"{path}: land cover is {src.height}x{src.width} px but its S2 scene is {shape[0]}x{shape[1]}; "
                           f"re-run `gac synth` (it resamples data.landcover onto every scene)")
        codes = src.read(1).astype(np.int16)
        nodata = src.nodata
        names = {int(k): str(v) for k, v in json.loads(src.tags().get(TAG, "{}")).items()}
    if nodata is not None:
        codes[codes == int(nodata)] = UNKNOWN
    return codes, names
