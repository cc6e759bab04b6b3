"""`dvc repro` on a miniature BigEarthNet v2 archive: catalogue, official split, every stage through evaluation and
translate, on tiny settings (random weights, one epoch, one diffusion step)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from tests.reben_fixture import V1_SAMPLES, build_reben
from tests.test_pipeline_tiles import copy_project, ran, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    if not (V1_SAMPLES / "BigEarthNet-S1").is_dir():
        pytest.skip(
            f"BigEarthNet v1 samples not found at {V1_SAMPLES} (../shared is absent outside the team's machines)"
        )
    archive = tmp_path_factory.mktemp("reben")
    rows = build_reben(archive)
    # translate takes one S1 patch as a 2-band GeoTIFF (VV, VH), as a user would pass a scene
    s1_name = rows[2]["s1_name"]
    s1_dir = archive / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0] / s1_name
    with rasterio.open(s1_dir / f"{s1_name}_VV.tif") as vv, rasterio.open(s1_dir / f"{s1_name}_VH.tif") as vh:
        profile, stack = {**vv.profile, "count": 2}, np.stack([vv.read(1), vh.read(1)])
    scene = tmp_path_factory.mktemp("translate") / "patch_s1.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(stack)
    overrides = {
        "seed": 3,
        "data": {"source": f"bigearthnet:{archive}", "split": "official", "max_tiles": 12},
        "tile": {"size": 32, "stride": 32, "split_block": 32, "shard_tiles": 8},
        "stage1": {"input": "S1GRD", "infer": {"batch_size": 8}, "timesteps": 1},
        "stage2": {"max_epochs": 1, "batch_size": 4},
        "stage3": {"max_epochs": 1, "batch_size": 4, "infer": {"timesteps": 1}},
        "baseline": {"max_epochs": 1, "batch_size": 4, "depth": 2},
        "evaluate": {"quicklooks": 1},
        "translate": {"scenes": [str(scene)], "timesteps": 1, "overlap": 8, "infer": {"batch_size": 8}},
    }
    project = copy_project(tmp_path_factory.mktemp("project"), overrides)
    return project, rows, scene, sh("dvc", "repro", cwd=project)


def test_dvc_repro_runs_a_bigearthnet_archive_through_evaluation_and_translate(repro):
    from gac.data.store import open_store

    project, rows, scene, output = repro
    assert {"synth", "tile", "generate", "refine", "ground", "evaluate", "translate"} <= ran(output)
    assert sorted(p.name for p in (project / "data" / "scenes").iterdir()) == ["catalogue.json", "manifest.json"]
    tiles = open_store(project / "data" / "tiles.zarr", need=("s1", "s2", "labels"))
    official = {r["patch_id"]: {"validation": "val"}.get(r["split"], r["split"]) for r in rows}
    assert tiles.sizes["tile"] == 12 and tiles.attrs["s1_product"] == "S1GRD"  # data.max_tiles of 6 x 16 tiles
    assert [str(s) for s in tiles.split.values] == [official[str(n)] for n in tiles.scene.values]
    test_patches = {str(n) for n, s in zip(tiles.scene.values, tiles.split.values) if s == "test"}
    metrics = json.loads((project / "data" / "eval" / "metrics.json").read_text())
    assert metrics["tiles"] == int((tiles.split.values == "test").sum()) > 0
    labels = json.loads((project / "data" / "eval" / "labels.json").read_text())
    wanted = {name for r in rows if r["patch_id"] in test_patches for name in r["labels"]}
    assert set(labels) == wanted and all("opt_v3" in labels[name] for name in wanted)
    report = (project / "data" / "eval" / "report.md").read_text()
    assert "## Per archive label" in report and "resampled whole" in report
    out = project / "data" / "translate" / f"{scene.stem}.tif"
    with rasterio.open(out) as translated, rasterio.open(scene) as source:
        assert translated.count == 12 and translated.transform == source.transform and translated.crs == source.crs
