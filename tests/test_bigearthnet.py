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
