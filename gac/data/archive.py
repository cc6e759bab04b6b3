"""Datasets read where they lie, in their own layout: a catalogue under data/scenes instead of a copy.

`data.source: <kind>:<root>` names an archive (today `bigearthnet:<root>`, v1 or
v2). `gac synth` scans it into data/scenes/catalogue.json: one small entry per
patch pair (name, S1 partner, month, the archive's split and labels), not the
rasters, so an archive of 550,000 pairs is not copied into millions of files,
and DVC hashes one file to know whether the data changed. `gac tile` reads each
pair from the archive through the catalogue's reader and tiles it as any other
scene (gac.data.tiling: nodata rule, map-block splits or `data.split:
official`, land cover from the archive's reference maps where it has them).

A reader is one class (see `Reader`): `scan()` lists the entries, `read(entry)`
gives the pair on the 10 m grid, plus per-pixel land cover when the archive has
it. TerraMesh's shards, for example, would be one more class registered in
READERS, not one more pipeline. gac.data.archive_tiles tiles an archive in
worker processes, two streaming passes, resumable.

DVC sees the archive through the catalogue, not its files: the catalogue records
the reader's fingerprint (v2: metadata.parquet's size, modification time and
MD5; the top folders' entry counts and latest modification times) rather than
hashes of tens of GB of rasters. DVC does not watch the archive itself: after
changing it, `dvc repro -f -s synth` re-scans it (seconds), and the tile stage
re-runs on the next `dvc repro` only if the catalogue changed. A raster
rewritten in place changes no fingerprint: `dvc repro -f -s tile` then.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gac.data.scenes import Scene
from gac.errors import GacError

log = logging.getLogger(__name__)
CATALOGUE = "catalogue.json"
# kind -> "module:class" of its reader; imported only when that kind is used
READERS = {"bigearthnet": "gac.data.bigearthnet:BigEarthNet"}
OFFICIAL_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


@dataclass(frozen=True)
class Entry:
    """One pair of an archive: what tiling needs to know before reading its pixels."""

    name: str  # the optical patch (its files and tiles are named after it)
    s1: str  # the radar partner's name
    month: int  # 1-12 from the acquisition date, 0 unknown
    split: str | None = None  # the archive's own split (train / val / test), None where it has none
    labels: tuple[int, ...] = ()  # indices into the reader's label names
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. country


class Reader(Protocol):
    """An archive in its own layout. `label_names`: the multi-label nomenclature `Entry.labels` index into."""

    kind: str
    root: Path
    version: str
    label_names: tuple[str, ...]
    landcover_classes: dict[int, str]  # names of the per-pixel land-cover codes `read` returns ({} without)

    def scan(self) -> list[Entry]: ...

    def read(self, entry: Entry, s2_offset: int | str) -> tuple[Scene, np.ndarray | None]: ...

    def fingerprint(self) -> dict[str, Any]: ...


def parse_source(source: str) -> tuple[str, Path] | None:
    """(kind, root) for `<kind>:<root>` with a known kind; None for 'demo' and plain directories."""
    kind, sep, root = source.partition(":")
    if not sep or kind not in READERS:
        return None
    return kind, Path(root)


def open_reader(kind: str, root: Path, **options) -> Reader:
    module, name = READERS[kind].split(":")
    return getattr(importlib.import_module(module), name)(Path(root), **options)


def write_catalogue(params, tmp: Path, kind: str, root: Path) -> tuple[list[str], str]:
    """Scan the archive named by data.source into tmp/catalogue.json; returns (pair names, source description)."""
    if params.data.landcover:
        raise GacError(
            f"data.landcover: {kind} archives bring their own land cover (reference maps); set data.landcover: null"
        )
    reader = open_reader(kind, root)
    entries = reader.scan()
    if not entries:
        raise GacError(f"{root}: no {kind} patch pair found; point data.source at the archive's root folder")
    official = params.data.split == "official"
    if official:
        lacking = [e.name for e in entries if e.split is None]
        if lacking:
            raise GacError(
                f"{root}: data.split is official but {kind} {reader.version} gives no split for "
                f"{len(lacking)} patch(es) (e.g. {lacking[0]}); use data.split: blocks or the v2 archive"
            )
    catalogue = {
        "kind": kind,
        "root": str(Path(root).resolve()),
        "version": reader.version,
        "official_split": official,
        "label_names": list(reader.label_names),
        "landcover_classes": {str(k): v for k, v in sorted(reader.landcover_classes.items())},
        "fingerprint": reader.fingerprint(),
        "entries": [asdict(e) for e in entries],
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / CATALOGUE).write_text(json.dumps(catalogue, separators=(",", ":")) + "\n")
    return [e.name for e in entries], f"{kind} {reader.version} at {catalogue['root']}"


def read_catalogue(scene_dir: Path) -> dict[str, Any] | None:
    path = Path(scene_dir) / CATALOGUE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def catalogue_entries(catalogue: dict[str, Any]) -> list[Entry]:
    return [Entry(**{**e, "labels": tuple(e["labels"])}) for e in catalogue["entries"]]
