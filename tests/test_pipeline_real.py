"""A user's own data through the DAG: `dvc repro translate` on a folder of real TerraMesh pairs, in a temporary repo.

The pairs are copied as a user would point data.source at them; tiny settings (a few tiles, one training step, one
diffusion step) keep it to a few minutes. What it shows: every stage up to `translate` runs on real data, the L2A offset
is decided per scene (the samples mix harmonised and offset scenes), and `translate.scenes: null` translates the
scenes holding test-split tiles, never a demo path.
"""

import shutil

import pytest
import rasterio

from tests.test_pipeline_tiles import copy_project, ran, sh

pytestmark = pytest.mark.slow


def test_dvc_repro_runs_a_folder_of_real_pairs_through_translate(shared_samples, tmp_path):
    source = tmp_path / "my-scenes"
    shutil.copytree(shared_samples, source)
    tiny = {
        "seed": 1,
        "data": {"source": str(source), "max_tiles": 6},
        "tile": {"size": 32, "stride": 32, "split_block": 64, "shard_tiles": 8},
        "stage1": {"timesteps": 1, "infer": {"batch_size": 8}},
        "stage2": {"max_epochs": 1, "max_steps": 1, "batch_size": 2},
        "stage3": {"max_epochs": 1, "max_steps": 1, "batch_size": 2, "loss": {"pixel_every": 100}},
        "baseline": {"max_epochs": 1, "max_steps": 1, "batch_size": 2, "depth": 2},
        "translate": {"timesteps": 1, "overlap": 0, "block_size": 256, "infer": {"batch_size": 16}},
    }
    project = copy_project(tmp_path / "project", tiny)
    output = sh("dvc", "repro", "translate", cwd=project)
    stages = {"synth", "tile", "generate", "train-stage2", "refine", "train-stage3", "train-baseline", "translate"}
    assert stages <= ran(output)

    from gac.data.store import open_store

    tiles = open_store(project / "data" / "tiles.zarr", need=("s2",))
    assert tiles.attrs["s2_offsets"] == {"282D_485L_3_3": 0, "433D_629L_3_1": 1000, "637U_59R_1_3": 0}
    held_out = sorted(set(tiles.scene.values.astype(str)[tiles.split.values.astype(str) == "test"]))
    assert held_out
    assert f"translating the {len(held_out)} scene(s) holding test-split tiles: {', '.join(held_out)}" in output
    written = sorted(p.stem for p in (project / "data" / "translate").glob("*.tif"))
    assert written == held_out
    for name in held_out:
        translated = project / "data" / "translate" / f"{name}.tif"
        with rasterio.open(source / "S1RTC" / f"{name}.tif") as s1, rasterio.open(translated) as out:
            assert (out.crs, out.transform, out.shape) == (s1.crs, s1.transform, s1.shape)
            assert out.tags()["STAGES"] == "stage1 stage2 stage3" and out.count == 12
            assert (out.read() > 0).all()  # TerraMesh S1 has no nodata: every pixel translated
