"""BigEarthNet read in its own layout: the real v1 samples, and a miniature v2 (reBEN) archive built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from gac.data.bigearthnet import LABELS_19, BigEarthNet, month_of
from gac.data.store import S2_BANDS, open_store
from gac.errors import GacError
from tests.conftest import small_tile_params
from tests.reben_fixture import V1_SAMPLES, build_reben


@pytest.fixture(scope="session")
def v1_root():
    if not (V1_SAMPLES / "BigEarthNet-S1").is_dir():
        pytest.skip(
            f"BigEarthNet v1 samples not found at {V1_SAMPLES} (../shared is absent outside the team's machines)"
        )
    return V1_SAMPLES


@pytest.fixture(scope="session")
def reben(v1_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("reben")
    return root, build_reben(root)


def names(indices) -> list[str]:
    return [LABELS_19[i] for i in indices]


def test_the_v1_samples_read_with_their_labels_and_dates(v1_root):
    reader = BigEarthNet(v1_root)
    entries = {e.name: e for e in reader.scan()}
    assert reader.version == "v1" and len(entries) == 6
    first = entries["S2A_MSIL2A_20170613T101031_87_48"]
    assert first.s1 == "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48" and first.split is None
    # 43 -> 19 classes: 'Non-irrigated arable land' is Arable land; 'Peatbogs' Inland wetlands,
    # 'Water bodies' Inland waters
    mosaic = "Land principally occupied by agriculture, with significant areas of natural vegetation"
    assert names(first.labels) == ["Arable land", mosaic]
    assert names(entries["S2B_MSIL2A_20170924T93020_69_24"].labels) == [
        "Coniferous forest",
        "Mixed forest",
        "Transitional woodland, shrub",
        "Inland wetlands",
        "Inland waters",
    ]
    # months from the S2 acquisition dates (2017-06-13, 06-17, 06-17, 12-21, 09-24, 2018-02-04)
    assert sorted(e.month for e in entries.values()) == [2, 6, 6, 6, 9, 12]
    assert month_of("S2A_MSIL2A_20170924T093020_N9999_R136_T35VPK_69_24") == 9

    scene, landcover = reader.read(first)
    folder = v1_root / "BigEarthNet-S2" / first.name
    assert scene.s2.shape == (12, 120, 120) and scene.s1.shape == (2, 120, 120) and landcover is None
    assert scene.crs == "EPSG:32633" and scene.transform == (10.0, 0.0, 404400.0, 0.0, -10.0, 5342400.0)
    with rasterio.open(folder / f"{first.name}_B04.tif") as b04, rasterio.open(folder / f"{first.name}_B05.tif") as b05:
        assert np.array_equal(scene.s2[S2_BANDS.index("B04")], b04.read(1).astype(np.float32))  # 10 m: as stored
        src = b05.read(1).astype(np.float64)
    b05_10m = scene.s2[S2_BANDS.index("B05")]
    # hand-checked bilinear: 10 m pixel (1, 1) has its centre 15 m from the corner, a quarter of a 20 m pixel past
    # the centre of 20 m pixel (0, 0) towards (1, 1): weights 0.75 x 0.75, 0.75 x 0.25, 0.25 x 0.25
    expected = 0.5625 * src[0, 0] + 0.1875 * (src[0, 1] + src[1, 0]) + 0.0625 * src[1, 1]
    assert b05_10m[1, 1] == pytest.approx(expected, rel=1e-4)
    assert b05_10m.mean() == pytest.approx(src.mean(), rel=0.01)  # the band's mean is kept
    with rasterio.open(v1_root / "BigEarthNet-S1" / first.s1 / f"{first.s1}_VH.tif") as vh:
        assert np.array_equal(scene.s1[1], vh.read(1))  # dB on the S2 grid already: read as is


def test_the_v2_layout_reads_metadata_split_and_reference_maps(v1_root, reben):
    root, rows = reben
    reader = BigEarthNet(root)
    entries = reader.scan()
    assert reader.version == "v2" and [e.name for e in entries] == sorted(r["patch_id"] for r in rows)
    by_id = {r["patch_id"]: r for r in rows}
    for entry in entries:
        row = by_id[entry.name]
        assert entry.split == row["split"] and entry.extra == {"country": row["country"]}
        assert names(entry.labels) == [n for n in LABELS_19 if n in row["labels"]] and entry.s1 == row["s1_name"]
    v1 = {e.name: e for e in BigEarthNet(v1_root).scan()}
    entry = next(e for e in entries if e.name.endswith("_T33UUP_87_48"))
    assert entry.month == 6 and entry.name == "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_87_48"
    scene, landcover = reader.read(entry)
    same, _ = BigEarthNet(v1_root).read(v1[by_id[entry.name]["v1_s2"]])
    assert np.array_equal(scene.s2, same.s2, equal_nan=True) and np.array_equal(scene.s1, same.s1)
    # reference map: rows 0-59 CLC 211 -> Arable land (3), rows 60-119 CLC 312 -> Coniferous forest (10),
    # column 0 CLC 122 (roads: no 19-class counterpart) -> unknown (-1)
    assert landcover[5, 5] == 3 and landcover[100, 5] == 10 and (landcover[:, 0] == -1).all()
    assert reader.landcover_classes[3] == "Arable land" and reader.landcover_classes[10] == "Coniferous forest"


def synth_and_tile(root, tmp_path, split="official", **tile):
    from gac.data.ingest import prepare_scenes
    from gac.data.tiling import make_tiles
    from gac.params import validate_params

    params = validate_params({"data": {"source": f"bigearthnet:{root}", "split": split}})
    scenes = tmp_path / "scenes"
    summary = prepare_scenes(params, scenes)
    out = tmp_path / "tiles.zarr"
    make_tiles(scenes, out, small_tile_params(**{"size": 64, "stride": 56, **tile}), seed=0, attrs={})
    return summary, scenes, open_store(out, need=("s1", "s2"))


def test_an_archive_is_catalogued_not_copied_and_tiled_with_its_official_split(reben, tmp_path):
    root, rows = reben
    summary, scenes, ds = synth_and_tile(root, tmp_path)
    assert summary == {"scenes": 6, "source": f"bigearthnet v2 at {root.resolve()}"}
    assert sorted(p.name for p in scenes.iterdir()) == ["catalogue.json", "manifest.json"]  # no raster copied
    catalogue = json.loads((scenes / "catalogue.json").read_text())
    assert catalogue["official_split"] is True and catalogue["fingerprint"]["file"] == "metadata.parquet"
    # 120 px patches, 64 px tiles at offsets 0 and 56: 4 tiles a patch
    assert ds.sizes["tile"] == 24 and ds.attrs["s1_product"] == "S1GRD" and ds.attrs["split_rule"] == "official"
    official = {r["patch_id"]: {"validation": "val"}.get(r["split"], r["split"]) for r in rows}
    assert [str(s) for s in ds.split.values] == [official[str(n)] for n in ds.scene.values]
    assert ds.attrs["dropped_official_shared_blocks"] == 0
    # labels travel with every tile; land cover where the patch has a reference map, -1 (unknown) elsewhere
    assert [str(n) for n in ds.label.values] == list(LABELS_19)
    labels_of = {r["patch_id"]: r["labels"] for r in rows}
    for i, scene in enumerate(ds.scene.values.astype(str)):
        carried = [n for n, on in zip(LABELS_19, ds.labels.values[i]) if on]
        assert carried == [n for n in LABELS_19 if n in labels_of[scene]]
    mapped = {r["patch_id"] for r in rows[:3]}
    has_map = [(ds.landcover.values[i] >= 0).any() for i in range(24)]
    assert has_map == [str(s) in mapped for s in ds.scene.values]
    assert ds.attrs["landcover_classes"]["3"] == "Arable land"
    assert sorted(set(ds.month.values.tolist())) == [2, 6, 9, 12]


def test_map_blocks_on_an_archive_and_the_errors_that_say_what_to_do(v1_root, tmp_path):
    from gac.data.ingest import prepare_scenes
    from gac.params import validate_params

    _, _, ds = synth_and_tile(v1_root, tmp_path, split="blocks", split_block=120, val_fraction=0.2, test_fraction=0.2)
    assert ds.attrs["split_rule"] == "map blocks" and set(ds.split.values.astype(str)) == {"train", "val", "test"}
    assert ds.sizes["tile"] == 24 and all(str(b).startswith("EPSG:326") for b in ds.block.values)  # 1 block a patch
    with pytest.raises(GacError, match="v1 gives no split for 6 patch"):
        prepare_scenes(
            validate_params({"data": {"source": f"bigearthnet:{v1_root}", "split": "official"}}), tmp_path / "again"
        )
    with pytest.raises(GacError, match="split: official needs an archive|official needs an archive"):
        validate_params({"data": {"source": "demo", "split": "official"}})
    with pytest.raises(GacError, match="not a BigEarthNet archive"):
        prepare_scenes(validate_params({"data": {"source": f"bigearthnet:{tmp_path}"}}), tmp_path / "none")


def test_per_label_metrics_pool_the_pixels_of_the_tiles_that_carry_each_label():
    from gac.evaluate.landcover import per_label
    from gac.evaluate.report import landcover_tables

    truth = np.full((3, 12, 16, 16), 1000.0, dtype=np.float32)
    pred = truth + np.array([100.0, 100.0, 200.0], dtype=np.float32)[:, None, None, None]  # 0.01, 0.01, 0.02 off
    hot = np.array([[True, False, False], [True, True, False], [False, True, False]])
    result = per_label({"opt_v1": pred}, truth, hot, ["Arable land", "Pastures", "Marine waters"])
    assert list(result) == ["Arable land", "Pastures"]  # a label no tile carries gets no column
    assert result["Arable land"]["tiles"] == 2 and result["Arable land"]["opt_v1"]["pixels"] == 2 * 256
    assert result["Arable land"]["opt_v1"]["rmse"] == pytest.approx(0.01, rel=1e-4)
    assert result["Pastures"]["opt_v1"]["rmse"] == pytest.approx(np.sqrt((0.01**2 + 0.02**2) / 2), rel=1e-4)
    assert result["Pastures"]["opt_v1"]["psnr"] == pytest.approx(-10 * np.log10((0.01**2 + 0.02**2) / 2), rel=1e-4)
    table = "\n".join(landcover_tables({"labels": result}, "labels"))
    assert "| count | 512 | 512 |" in table and "| opt_v1 | 0.0100 | 0.0158 |" in table


# --------------------------------------------------------------- ingest at archive scale (gac.data.archive_tiles)


def in_memory_store(catalogue, out, tile, seed):
    """The oracle: the archive tiled as before ingest streamed, every pair in memory, planned and written at once."""
    from gac.data.archive import OFFICIAL_SPLITS, catalogue_entries, open_reader
    from gac.data.store import write_store
    from gac.data.tiling import plan_tiles, tiles_dataset

    reader = open_reader(catalogue["kind"], catalogue["root"])
    entries = catalogue_entries(catalogue)
    scenes, landcover = [], {}
    for entry in entries:
        scene, codes = reader.read(entry)
        scenes.append(scene)
        if codes is not None:
            landcover[scene.name] = codes
    splits = {e.name: OFFICIAL_SPLITS[e.split] for e in entries} if catalogue["official_split"] else None
    records, _ = plan_tiles(scenes, tile, seed, splits)
    ds = tiles_dataset(scenes, records, tile, {}, landcover or None)
    labels = {e.name: e.labels for e in entries}
    hot = np.zeros((len(records), len(catalogue["label_names"])), dtype=bool)
    for i, record in enumerate(records):
        hot[i, list(labels[record["scene"]])] = True
    ds["labels"] = (("tile", "label"), hot)
    ds = ds.assign_coords(label=np.array(catalogue["label_names"], dtype=object))
    ds["labels"].attrs.update(
        long_name=f"the archive's multi-label land cover of the tile's patch ({len(LABELS_19)} classes)"
    )
    write_store(ds, out, tile.shard_tiles)


def store_files(store) -> dict[str, bytes]:
    """Every file of a store but the group's own metadata (its attributes) and the consolidated copy of it."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and str(p.relative_to(store)) != "zarr.json"
    }


@pytest.fixture(scope="module")
def catalogued(reben, tmp_path_factory):
    from gac.data.archive import read_catalogue
    from gac.data.ingest import prepare_scenes
    from gac.params import validate_params

    root, rows = reben
    scenes = tmp_path_factory.mktemp("catalogue") / "scenes"
    prepare_scenes(validate_params({"data": {"source": f"bigearthnet:{root}", "split": "official"}}), scenes)
    return scenes, read_catalogue(scenes)


def ingest(scenes, out, seed=0, max_tiles=None, **tile):
    from gac.data.tiling import make_tiles

    params = small_tile_params(**{"size": 64, "stride": 56, "shard_tiles": 5, "workers": 1, **tile})
    return make_tiles(scenes, out, params, seed=seed, attrs={"stage": "tile"}, max_tiles=max_tiles)


def test_streamed_ingest_equals_the_in_memory_store_for_any_worker_count(catalogued, tmp_path):
    scenes, catalogue = catalogued
    in_memory_store(catalogue, tmp_path / "memory.zarr", small_tile_params(size=64, stride=56, shard_tiles=5), 0)
    one = ingest(scenes, tmp_path / "one.zarr", workers=1)
    two = ingest(scenes, tmp_path / "two.zarr", workers=2)
    assert (
        one
        == two
        == {
            "tiles": 24,
            "train": 12,
            "val": 4,
            "test": 8,
            "dropped_nodata": 0,
            "dropped_split_border": 0,
            "dropped_split_gap": 0,
            "dropped_official_shared_blocks": 0,
        }
    )
    memory, streamed = (open_store(tmp_path / n, need=("s1", "s2", "landcover")) for n in ("memory.zarr", "one.zarr"))
    assert set(memory.variables) == set(streamed.variables)
    for name in memory.variables:  # pixels, labels and every coordinate, in the same order
        assert np.array_equal(memory[name].values, streamed[name].values, equal_nan=memory[name].dtype.kind == "f")
    # the same arrays byte for byte (metadata, 5 shards of 5 tiles a file), whichever path or worker count wrote them
    files = store_files(tmp_path / "one.zarr")
    assert sum(name.startswith("s2/c/") for name in files) == 5
    assert store_files(tmp_path / "memory.zarr") == files == store_files(tmp_path / "two.zarr")
    assert streamed.attrs["split_rule"] == "official" and len(streamed.attrs["scenes"]) == 6
    assert len(streamed.attrs["plan_digest"]) == 16


class Interrupted(Exception):
    pass


def counting(monkeypatch, name, stop_after=None):
    """Calls of gac.data.archive_tiles.<name> (pass 1 `_scan`, pass 2 `_write`), raising after `stop_after`."""
    import gac.data.archive_tiles as archive_tiles

    calls, real = [], getattr(archive_tiles, name)

    def wrapper(job):
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupted
        calls.append(job)
        return real(job)

    monkeypatch.setattr(archive_tiles, name, wrapper)
    return calls


def interrupt_after_two_shards(scenes, out, monkeypatch) -> None:
    """An ingest stopped (as by a kill) once it has written two shards."""
    with monkeypatch.context() as patch:
        counting(patch, "_write", stop_after=2)
        with pytest.raises(Interrupted):
            ingest(scenes, out)


def test_an_interrupted_ingest_resumes_with_the_shards_it_had_written(catalogued, tmp_path, monkeypatch):
    scenes, _ = catalogued
    out = tmp_path / "tiles.zarr"
    interrupt_after_two_shards(scenes, out, monkeypatch)
    partial, progress = tmp_path / "tiles.zarr.partial", tmp_path / "tiles.zarr.progress"
    assert not out.exists() and sorted(p.name for p in progress.iterdir()) == ["000000.done", "000001.done"]
    pixels = [p for name in ("s1", "s2", "landcover") for p in (partial / name / "c").glob("[01]/**/*") if p.is_file()]
    done = {p: p.stat().st_mtime_ns for p in pixels}
    assert len(done) == 6  # shards 0 and 1 of s1, s2 and landcover
    scans, writes = counting(monkeypatch, "_scan"), counting(monkeypatch, "_write")
    summary = ingest(scenes, out)
    assert summary["tiles"] == 24 and scans == [] and [job[6] for job in writes] == [2, 3, 4]  # no pass 1 again
    assert {p: (out / p.relative_to(partial)).stat().st_mtime_ns for p in done} == done  # the done shards untouched
    assert not partial.exists() and not progress.exists()
    ingest(scenes, tmp_path / "clean.zarr")
    assert store_files(out) == store_files(tmp_path / "clean.zarr")


def test_a_partial_store_planned_otherwise_is_started_over(catalogued, tmp_path, monkeypatch, caplog):
    scenes, _ = catalogued
    out = tmp_path / "tiles.zarr"
    interrupt_after_two_shards(scenes, out, monkeypatch)
    scans, writes = counting(monkeypatch, "_scan"), counting(monkeypatch, "_write")
    with caplog.at_level("INFO", logger="gac.data.archive_tiles"):
        summary = ingest(scenes, out, max_tiles=12)  # another plan: data.max_tiles
    assert "planned from another catalogue or params; starting over" in caplog.text
    assert summary["tiles"] == 12 and len(scans) == 1 and [job[6] for job in writes] == [0, 1, 2]
    ingest(scenes, tmp_path / "clean.zarr", max_tiles=12)
    assert store_files(out) == store_files(tmp_path / "clean.zarr")


def test_the_catalogue_changes_when_the_archive_does(reben, tmp_path):
    import os
    import shutil

    root, rows = reben
    archive = tmp_path / "archive"
    shutil.copytree(root, archive)
    reader = BigEarthNet(archive)
    first = reader.fingerprint()
    tile_folders = {r["patch_id"].rsplit("_", 2)[0] for r in rows}  # one per S2 tile and date: 5 for 6 patches
    assert first["folders"]["BigEarthNet-S2"]["entries"] == len(tile_folders) == 5 and first["bytes"] > 0
    assert reader.fingerprint() == first  # nothing changed, nothing to re-run
    metadata = archive / "metadata.parquet"
    os.utime(metadata, ns=(metadata.stat().st_atime_ns, metadata.stat().st_mtime_ns + 10**9))
    touched = reader.fingerprint()
    assert touched["mtime_ns"] != first["mtime_ns"] and touched["md5"] == first["md5"]
    tile_folder = next((archive / "BigEarthNet-S2").iterdir())
    (tile_folder / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99").mkdir()  # a patch added
    os.utime(tile_folder, ns=(0, tile_folder.stat().st_mtime_ns + 10**9))  # file systems with coarse times
    assert reader.fingerprint()["folders"] != touched["folders"]


def test_generated_archives_for_benchmarks_read_as_reben(tmp_path):
    """tests/reben_fixture.generate_reben (bench/bench_ingest.py's archives): every file distinct, where it says."""
    from tests.reben_fixture import generate_reben

    rows = generate_reben(tmp_path, 3)
    reader = BigEarthNet(tmp_path)
    entries = reader.scan()
    assert reader.version == "v2" and [e.name for e in entries] == sorted(r["patch_id"] for r in rows)
    entry = next(e for e in entries if e.name.endswith("_2_0"))  # the third patch: 2 x 1.2 km east of the first
    scene, landcover = reader.read(entry)
    assert scene.transform == (10.0, 0.0, 402400.0, 0.0, -10.0, 5400000.0) and scene.crs == "EPSG:32633"
    folder = tmp_path / "BigEarthNet-S2" / entry.name.rsplit("_", 2)[0] / entry.name
    with rasterio.open(folder / f"{entry.name}_B02.tif") as b02:
        assert np.array_equal(scene.s2[S2_BANDS.index("B02")], b02.read(1).astype(np.float32))
    assert 100 <= np.nanmin(scene.s2) and np.nanmax(scene.s2) < 4000 and -25 <= scene.s1.min() < scene.s1.max() < -5
    other, _ = reader.read(entries[0])
    assert not np.array_equal(other.s2, scene.s2)  # distinct pixels, not copies
    assert set(np.unique(landcover)) <= set(range(1, 20)) and names(entry.labels) == rows[2]["labels"]
