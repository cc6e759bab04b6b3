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
