"""A miniature BigEarthNet v2 (reBEN) archive in its exact layout, built from the six real v1 sample pairs.

    <root>/metadata.parquet   patch_id, labels (19 classes), split, country, s1_name, s2v1_name,
                              contains_seasonal_snow, contains_cloud_or_shadow
    <root>/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif
    <root>/BigEarthNet-S1/<tile>/<s1_name>/<s1_name>_<VV|VH>.tif
    <root>/Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif   (for the first three patches)

The rasters are the v1 samples' own files under reBEN's names (so a v2 read can be compared with a v1 read);
the processing baseline and orbit in the names (N9999, R022) and the splits are illustrative.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
V1_SAMPLES = REPO.parent / "shared" / "data" / "bigearthnet-v1-samples"
COUNTRIES = {"33UUP": "Austria", "29UPU": "Ireland", "29SND": "Portugal", "35VPK": "Finland"}
SPLITS = ("train", "validation", "test", "train", "train", "test")  # per v1 pair, in sorted S1 name order
# reference map of the first three patches: rows 0-59 non-irrigated arable land (211 -> Arable land), rows 60-119
# coniferous forest (312), column 0 a road (122, no 19-class counterpart -> unknown)
MAP_ROWS = ((slice(0, 60), 211), (slice(60, 120), 312))


def v2_names(s1_name: str, s2_name: str) -> tuple[str, str]:
    """(patch_id, s1_name) in reBEN's form for a v1 pair: S2 name with baseline, orbit and tile; S1 name as is."""
    tile, h, v = s1_name.split("_")[-3:]
    sensor, level, stamp = s2_name.split("_")[:3]
    day, time = stamp.split("T")
    return f"{sensor}_{level}_{day}T{int(time):06d}_N9999_R022_T{tile}_{h}_{v}", s1_name


def build_reben(root: Path) -> list[dict]:
    """Write the archive under root; returns its metadata rows (with `v1_s2`, the v1 S2 patch each came from)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rasterio

    from gac.data.bigearthnet import V1_TO_19

    rows = []
    for i, s1_dir in enumerate(sorted(p for p in (V1_SAMPLES / "BigEarthNet-S1").iterdir() if p.is_dir())):
        s2_name = json.loads((s1_dir / f"{s1_dir.name}_labels_metadata.json").read_text())["corresponding_s2_patch"]
        s2_dir = V1_SAMPLES / "BigEarthNet-S2" / s2_name
        patch_id, s1_name = v2_names(s1_dir.name, s2_name)
        s2_out = root / "BigEarthNet-S2" / patch_id.rsplit("_", 2)[0] / patch_id
        s1_out = root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0] / s1_name
        s2_out.mkdir(parents=True)
        s1_out.mkdir(parents=True)
        for band_file in sorted(s2_dir.glob("*_B*.tif")):
            shutil.copy(band_file, s2_out / f"{patch_id}_{band_file.stem.rsplit('_', 1)[1]}.tif")
        for pol in ("VV", "VH"):
            shutil.copy(s1_dir / f"{s1_dir.name}_{pol}.tif", s1_out / f"{s1_name}_{pol}.tif")
        if i < 3:
            with rasterio.open(s2_dir / f"{s2_name}_B02.tif") as ref:
                profile = {**ref.profile, "dtype": "uint16", "count": 1}
            codes = np.zeros((120, 120), dtype=np.uint16)
            for rows_, code in MAP_ROWS:
                codes[rows_] = code
            codes[:, 0] = 122
            out = root / "Reference_Maps" / patch_id.rsplit("_", 2)[0] / patch_id / f"{patch_id}_reference_map.tif"
            out.parent.mkdir(parents=True)
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(codes, 1)
        v1_labels = json.loads((s2_dir / f"{s2_name}_labels_metadata.json").read_text())["labels"]
        labels = sorted({V1_TO_19[name] for name in v1_labels if V1_TO_19[name] is not None})
        rows.append(
            {
                "patch_id": patch_id,
                "labels": labels,
                "split": SPLITS[i],
                "country": COUNTRIES[s1_name.split("_")[-3]],
                "s1_name": s1_name,
                "s2v1_name": s2_name,
                "contains_seasonal_snow": False,
                "contains_cloud_or_shadow": False,
            }
        )
    columns = [k for k in rows[0]]
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in columns}), root / "metadata.parquet")
    return [{**r, "v1_s2": r["s2v1_name"]} for r in rows]


class _GeoTiff:
    """One GeoTIFF layout (size, type, CRS) written once by rasterio, then reused for every file of that layout with
    only its pixels and origin replaced: a generated archive of 16,000 patches (240,000 files) is written in
    minutes, each file distinct and as rasterio writes it."""

    ORIGIN = (111111.0, 2222222.0)  # a placeholder origin, found and replaced in the template's bytes

    def __init__(self, height: int, width: int, dtype: str, pixel: float, crs: str = "EPSG:32633"):
        import struct
        from io import BytesIO

        import rasterio
        import tifffile
        from rasterio.io import MemoryFile
        from rasterio.transform import from_origin

        profile = dict(
            driver="GTiff",
            height=height,
            width=width,
            count=1,
            dtype=dtype,
            crs=crs,
            transform=from_origin(*self.ORIGIN, pixel, pixel),
            blockysize=height,
        )  # one strip
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(np.zeros((height, width), dtype=dtype), 1)
            self.template = bytes(memory.read())
        with rasterio.MemoryFile(self.template) as check, check.open() as src:
            assert src.compression is None  # plain pixels: they can be replaced in place
        page = tifffile.TiffFile(BytesIO(self.template)).pages[0]
        self.offset, self.nbytes = page.dataoffsets[0], height * width * np.dtype(dtype).itemsize
        assert tuple(page.databytecounts) == (self.nbytes,)  # one run of plain pixels
        self.tiepoint = self.template.index(struct.pack("<2d", *self.ORIGIN))
        self.shape, self.dtype = (height, width), np.dtype(dtype)

    def write(self, path: Path, values: np.ndarray, left: float, top: float) -> None:
        import struct

        data = bytearray(self.template)
        data[self.tiepoint : self.tiepoint + 16] = struct.pack("<2d", left, top)
        data[self.offset : self.offset + self.nbytes] = np.ascontiguousarray(values, dtype=self.dtype).tobytes()
        path.write_bytes(bytes(data))


def generate_reben(root: Path, n: int, seed: int = 0, per_folder: int = 500) -> list[dict]:
    """An archive of `n` generated patches in reBEN's layout (every band file, S1 VV/VH, a reference map; patches
    side by side on a 1.2 km grid in UTM 33N, `per_folder` patches per S2 tile folder, splits 8:1:1), for
    benchmarks at archive scale. Pixels are random but plausible (reflectance 100-4000, backscatter -25 to -5 dB,
    CORINE codes), different in every file. Returns the metadata rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gac.data.bigearthnet import CLC, LABELS_19

    sizes = {"B01": 20, "B09": 20, "B05": 60, "B06": 60, "B07": 60, "B8A": 60, "B11": 60, "B12": 60}
    layouts = {side: _GeoTiff(side, side, "uint16", 1200 / side) for side in (120, 60, 20)}
    s1_layout = _GeoTiff(120, 120, "float32", 10.0)
    rng = np.random.default_rng(seed)
    codes = np.array([code for code, (_, new) in CLC.items() if new is not None], dtype=np.uint16)
    splits = ("train",) * 8 + ("validation", "test")
    rows = []
    for k in range(n):
        h, v = k % 100, k // 100
        left, top = 400_000.0 + 1200 * h, 5_400_000.0 - 1200 * v
        day = f"2017{6 + (k // per_folder) % 6:02d}{1 + (k // per_folder) % 28:02d}"
        folder = f"S2A_MSIL2A_{day}T101031_N9999_R022_T33UUP"
        patch_id, s1_name = f"{folder}_{h}_{v}", f"S1A_IW_GRDH_1SDV_{day}T165043_33UUP_{h}_{v}"
        s2_dir = root / "BigEarthNet-S2" / folder / patch_id
        s1_dir = root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0] / s1_name
        map_dir = root / "Reference_Maps" / folder / patch_id
        for d in (s2_dir, s1_dir, map_dir):
            d.mkdir(parents=True, exist_ok=True)
        for band in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"):
            side = sizes.get(band, 120)
            layouts[side].write(s2_dir / f"{patch_id}_{band}.tif", rng.integers(100, 4000, (side, side)), left, top)
        for pol, (low, high) in (("VV", (-15, -5)), ("VH", (-25, -12))):
            s1_layout.write(s1_dir / f"{s1_name}_{pol}.tif", rng.uniform(low, high, (120, 120)), left, top)
        cover = codes[rng.integers(0, len(codes), 4)]
        grid = np.repeat(np.repeat(cover.reshape(2, 2), 60, 0), 60, 1)
        layouts[120].write(map_dir / f"{patch_id}_reference_map.tif", grid, left, top)
        labels = sorted({CLC[int(c)][1] for c in cover}, key=LABELS_19.index)
        rows.append(
            {
                "patch_id": patch_id,
                "labels": labels,
                "split": splits[k % 10],
                "country": "Austria",
                "s1_name": s1_name,
                "s2v1_name": "",
                "contains_seasonal_snow": False,
                "contains_cloud_or_shadow": False,
            }
        )
    pq.write_table(pa.table({key: [r[key] for r in rows] for key in rows[0]}), root / "metadata.parquet")
    return rows
