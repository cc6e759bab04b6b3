"""BigEarthNet read in its own layout: v1 (BigEarthNet-MM, 2019/2021) and v2 (reBEN, 2024).

    v2  <root>/metadata.parquet                    patch_id, s1_name, labels (19 classes), split, country
        <root>/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_B01.tif ... _B12.tif   (or BigEarthNet-S2/<patch_id>/)
        <root>/BigEarthNet-S1/<tile>/<s1_name>/<s1_name>_VV.tif, _VH.tif          (or BigEarthNet-S1/<s1_name>/)
        <root>/Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif     optional, CLC codes per pixel
    v1  <root>/BigEarthNet-S2/<S2 patch>/<S2 patch>_B01.tif ... + _labels_metadata.json (43 labels, date)
        <root>/BigEarthNet-S1/<S1 patch>/<S1 patch>_VV.tif, _VH.tif + _labels_metadata.json
            (its `corresponding_s2_patch` names the optical partner)

A pair is one 1.2 km patch: S2 L2A as one GeoTIFF per band at its native
resolution (120 x 120 px at 10 m: B02 B03 B04 B08; 60 x 60 at 20 m: B05 B06 B07
B8A B11 B12; 20 x 20 at 60 m: B01 B09), S1 IW GRD backscatter in dB on the same
10 m grid (the tile store's `s1_product` is S1GRD: `stage1.input` must say so).

The 20 and 60 m bands are resampled onto the 10 m grid of B02 bilinearly: it
keeps each band's local mean (no new extremes, unlike cubic, which overshoots
into negative reflectance beside water), and nearest would print the 20/60 m
pixel blocks into the ground truth as edges that no 10 m radar pixel shows, edges
every model would then be scored for drawing. 0 (the L2A fill value) and a
declared nodata are left out of the interpolation.

Labels are the 19-class nomenclature of Sumbul et al. (2021), which v2 ships
and v1's 43 CORINE labels map onto (labels without a 19-class counterpart, e.g.
airports, are dropped, as BigEarthNet's own tools do). v2's reference maps
(CORINE codes per pixel) become the tile store's `landcover` layer in the same
19 classes (codes 1-19, LABELS_19's order), so the per-land-cover evaluation
speaks the nomenclature the published BigEarthNet results use. The month comes
from the S2 acquisition date; v2's official split is used with
`data.split: official` (v1 carries no split in its files).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gac.data.archive import Entry
from gac.data.scenes import Scene, ScenePair, read_pair
from gac.data.readers import Inputs, S1Files, S2Files, open_raster
from gac.data.store import S2_BANDS
from gac.errors import GacError

LABELS_19 = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)
# CORINE Land Cover level-3 codes and BigEarthNet v1's names for them -> the 19-class name (None: no counterpart)
CLC: dict[int, tuple[str, str | None]] = {
    111: ("Continuous urban fabric", "Urban fabric"),
    112: ("Discontinuous urban fabric", "Urban fabric"),
    121: ("Industrial or commercial units", "Industrial or commercial units"),
    122: ("Road and rail networks and associated land", None),
    123: ("Port areas", None),
    124: ("Airports", None),
    131: ("Mineral extraction sites", None),
    132: ("Dump sites", None),
    133: ("Construction sites", None),
    141: ("Green urban areas", None),
    142: ("Sport and leisure facilities", None),
    211: ("Non-irrigated arable land", "Arable land"),
    212: ("Permanently irrigated land", "Arable land"),
    213: ("Rice fields", "Arable land"),
    221: ("Vineyards", "Permanent crops"),
    222: ("Fruit trees and berry plantations", "Permanent crops"),
    223: ("Olive groves", "Permanent crops"),
    231: ("Pastures", "Pastures"),
    241: ("Annual crops associated with permanent crops", "Permanent crops"),
    242: ("Complex cultivation patterns", "Complex cultivation patterns"),
    243: (
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    ),
    244: ("Agro-forestry areas", "Agro-forestry areas"),
    311: ("Broad-leaved forest", "Broad-leaved forest"),
    312: ("Coniferous forest", "Coniferous forest"),
    313: ("Mixed forest", "Mixed forest"),
    321: ("Natural grassland", "Natural grassland and sparsely vegetated areas"),
    322: ("Moors and heathland", "Moors, heathland and sclerophyllous vegetation"),
    323: ("Sclerophyllous vegetation", "Moors, heathland and sclerophyllous vegetation"),
    324: ("Transitional woodland/shrub", "Transitional woodland, shrub"),
    331: ("Beaches, dunes, sands", "Beaches, dunes, sands"),
    332: ("Bare rock", None),
    333: ("Sparsely vegetated areas", "Natural grassland and sparsely vegetated areas"),
    334: ("Burnt areas", None),
    335: ("Glaciers and perpetual snow", None),
    411: ("Inland marshes", "Inland wetlands"),
    412: ("Peatbogs", "Inland wetlands"),
    421: ("Salt marshes", "Coastal wetlands"),
    422: ("Salines", "Coastal wetlands"),
    423: ("Intertidal flats", None),
    511: ("Water courses", "Inland waters"),
    512: ("Water bodies", "Inland waters"),
    521: ("Coastal lagoons", "Marine waters"),
    522: ("Estuaries", "Marine waters"),
    523: ("Sea and ocean", "Marine waters"),
}
V1_TO_19 = {old: new for old, new in CLC.values()}
S1_DIR, S2_DIR, MAPS_DIR, METADATA = "BigEarthNet-S1", "BigEarthNet-S2", "Reference_Maps", "metadata.parquet"
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_NAME_DATE = re.compile(r"_(\d{4})(\d{2})(\d{2})T\d{5,6}")


def label_indices(names, source) -> tuple[int, ...]:
    """19-class indices of labels given in the 19-class or v1's 43-class names; an unknown name is an error."""
    out = set()
    for name in names:
        if name in LABELS_19:
            out.add(LABELS_19.index(name))
        elif name in V1_TO_19:
            if V1_TO_19[name] is not None:
                out.add(LABELS_19.index(V1_TO_19[name]))
        else:
            raise GacError(
                f"{source}: unknown BigEarthNet label '{name}'; expected the 19-class or the 43-class "
                "CORINE nomenclature"
            )
    return tuple(sorted(out))


def month_of(text: str) -> int:
    """The month of the first date in a name or timestamp (20170613T101031, 2017-06-13 10:10:31); 0 if none."""
    match = _NAME_DATE.search(text) or _DATE.search(text)
    return int(match.group(2)) if match and 1 <= int(match.group(2)) <= 12 else 0


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class BigEarthNet:
    """A BigEarthNet archive, v2 when <root>/metadata.parquet exists, else v1 (gac.data.archive.Reader)."""

    kind = "bigearthnet"
    s1_product = "S1GRD"
    label_names = LABELS_19
    landcover_classes = {i + 1: name for i, name in enumerate(LABELS_19)}

    def __init__(self, root: Path):
        self.root = Path(root)
        if not (self.root / S2_DIR).is_dir() or not (self.root / S1_DIR).is_dir():
            raise GacError(
                f"{self.root}: not a BigEarthNet archive (expected {S1_DIR}/ and {S2_DIR}/ inside); "
                "set data.source to bigearthnet:<the folder that holds them>"
            )
        self.version = "v2" if (self.root / METADATA).is_file() else "v1"

    # --------------------------------------------------------------- catalogue

    def scan(self) -> list[Entry]:
        return self._scan_v2() if self.version == "v2" else self._scan_v1()

    def fingerprint(self) -> dict[str, Any]:
        """What changes in the catalogue when the archive changes, without hashing its rasters: the metadata
        file's size, modification time and MD5 (v2), and for each top folder the number of its entries and their
        latest modification time (a tile or patch folder added, removed or renamed changes it). A raster rewritten
        in place changes none of these."""
        listing = {}
        for top in (S1_DIR, S2_DIR, MAPS_DIR):
            folder = self.root / top
            if folder.is_dir():
                with os.scandir(folder) as found:
                    times = [entry.stat().st_mtime_ns for entry in found]
                listing[top] = {"entries": len(times), "latest_mtime_ns": max([folder.stat().st_mtime_ns, *times])}
        if self.version == "v2":
            path = self.root / METADATA
            stat = path.stat()
            return {
                "file": METADATA,
                "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "md5": _md5(path),
                "folders": listing,
            }
        return {"folders": listing}

    def _scan_v2(self) -> list[Entry]:
        import pyarrow.parquet as pq

        path = self.root / METADATA
        wanted = ["patch_id", "s1_name", "labels", "split", "country"]
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for an unreadable file
            raise GacError(f"{path}: not a readable Parquet file ({type(exc).__name__}); download it again") from None
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise GacError(
                f"{path}: lacks column(s) {', '.join(missing)}; it has {', '.join(table.column_names)}; "
                "use reBEN's metadata.parquet"
            )
        entries = []
        for row in table.select(wanted).to_pylist():
            if row["split"] not in ("train", "validation", "test"):
                raise GacError(
                    f"{path}: patch {row['patch_id']} has split '{row['split']}'; expected train, validation or test"
                )
            entries.append(
                Entry(
                    row["patch_id"],
                    row["s1_name"],
                    month_of(row["patch_id"]),
                    row["split"],
                    label_indices(row["labels"] or [], f"{path} ({row['patch_id']})"),
                    {"country": row["country"]},
                )
            )
        return sorted(entries, key=lambda e: e.name)

    def _scan_v1(self) -> list[Entry]:
        entries = []
        for s1_dir in sorted(p for p in (self.root / S1_DIR).iterdir() if p.is_dir()):
            s1_meta = self._json(s1_dir / f"{s1_dir.name}_labels_metadata.json")
            s2_name = s1_meta.get("corresponding_s2_patch")
            if not s2_name:
                raise GacError(
                    f"{s1_dir / (s1_dir.name + '_labels_metadata.json')}: no corresponding_s2_patch; "
                    "use BigEarthNet-S1 v1.0 metadata (it names each patch's S2 partner)"
                )
            s2_dir = self.root / S2_DIR / s2_name
            s2_meta_path = s2_dir / f"{s2_name}_labels_metadata.json"
            if not s2_meta_path.is_file():
                raise GacError(
                    f"{s1_dir}: its S2 partner {s2_name} is not in {self.root / S2_DIR}; add that patch "
                    "or remove this S1 patch"
                )
            s2_meta = self._json(s2_meta_path)
            date = str(s2_meta.get("acquisition_date") or s2_name)
            entries.append(
                Entry(
                    s2_name, s1_dir.name, month_of(date), None, label_indices(s2_meta.get("labels", []), s2_meta_path)
                )
            )
        return sorted(entries, key=lambda e: e.name)

    @staticmethod
    def _json(path: Path) -> dict[str, Any]:
        try:
            return json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise GacError(
                f"{path}: missing; every BigEarthNet v1 patch folder holds its _labels_metadata.json"
            ) from None
        except json.JSONDecodeError:
            raise GacError(f"{path}: not valid JSON; download the patch again") from None

    # --------------------------------------------------------------- files

    def _folder(self, top: str, name: str, parts_after_tile: int) -> Path:
        """A patch's folder: nested under its tile (v2 as distributed) or directly under `top` (v1, flat v2)."""
        flat = self.root / top / name
        if self.version == "v1" or flat.is_dir():
            return flat
        return self.root / top / name.rsplit("_", parts_after_tile)[0] / name

    def s2_files(self, entry: Entry) -> list[Path]:
        folder = self._folder(S2_DIR, entry.name, 2)
        return [folder / f"{entry.name}_{band}.tif" for band in S2_BANDS]

    def s1_files(self, entry: Entry) -> list[Path]:
        folder = self._folder(S1_DIR, entry.s1, 3)
        return [folder / f"{entry.s1}_{pol}.tif" for pol in ("VV", "VH")]

    def reference_map(self, entry: Entry) -> Path | None:
        if self.version == "v1" or not (self.root / MAPS_DIR).is_dir():
            return None
        path = self._folder(MAPS_DIR, entry.name, 2) / f"{entry.name}_reference_map.tif"
        return path if path.is_file() else None

    # --------------------------------------------------------------- pixels

    def read(self, entry: Entry, s2_offset: int | str = "auto") -> tuple[Scene, np.ndarray | None]:
        """The pair on the 10 m grid of B02, read by the readers every source uses (gac.data.readers: S2 bands at
        20/60 m resampled bilinearly, 0 and nodata left out; S1 in dB, checked, warped in linear power when off
        the S2 grid), and the reference map as 19-class codes (1-19; -1 where the map's class has no 19-class
        counterpart), or None."""
        for path in (*self.s2_files(entry), *self.s1_files(entry)):
            if not path.is_file():
                raise GacError(
                    f"{path}: missing; a BigEarthNet patch needs every band file ({', '.join(S2_BANDS)}, VV, VH)"
                )
        s2_files = S2Files(entry.name, tuple(self.s2_files(entry)))
        s1_files = S1Files(entry.s1, tuple(self.s1_files(entry)))
        pair = ScenePair(entry.name, s1_files, s2_files, "S1GRD")
        # BigEarthNet's patches were acquired 2017-2018, before L2A processing baseline 04.00 added its offset
        offset = 0 if s2_offset == "auto" else s2_offset
        scene = read_pair(pair, reproject=True, inputs=Inputs("db", "auto", offset))
        scene.month = entry.month  # the archive's acquisition date, not the GeoTIFF tags
        path = self.reference_map(entry)
        return scene, (None if path is None else read_reference_map(path, scene.s2.shape[1:]))


def read_reference_map(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A reference map (CORINE codes per pixel) as 19-class codes 1-19, -1 where there is none."""
    from gac.data.landcover import UNKNOWN

    with open_raster(path) as src:
        if (src.height, src.width) != tuple(shape):
            raise GacError(
                f"{path}: {src.height}x{src.width} px, but its patch is {shape[0]}x{shape[1]}; "
                "download the reference map again"
            )
        codes = src.read(1).astype(np.int32)
    lookup = {code: LABELS_19.index(new) + 1 for code, (_, new) in CLC.items() if new is not None}
    out = np.full(codes.shape, UNKNOWN, dtype=np.int16)
    for code, new in lookup.items():
        out[codes == code] = new
    return out
