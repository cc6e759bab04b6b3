"""The user's story on tiny settings, in a temporary git repo: `dvc repro`, an experiment on stage 2,
`dvc metrics diff` and `dvc plots diff`. Real stages, real models (random weights), real DVC."""

import json

import pytest

from tests.test_pipeline_tiles import copy_project, ran, sh

TINY = {
    "seed": 3,
    "data": {"demo_scenes": 2, "demo_size": 128},
    "tile": {"size": 32, "stride": 32, "split_block": 64, "shard_tiles": 8},
    "stage1": {"batch_size": 8},
    "stage2": {"max_epochs": 1, "batch_size": 4},
    "stage3": {"max_epochs": 1, "batch_size": 4},
    "baseline": {"max_epochs": 1, "batch_size": 4, "depth": 2},
    "evaluate": {"quicklooks": 2},
}
ALL_STAGES = {"check-params", "synth", "tile", "finetune-stage1", "generate", "train-stage2", "refine",
              "train-stage3", "ground", "ground-on-v1", "train-baseline", "predict-baseline", "evaluate"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("demo"), TINY)


@pytest.mark.slow
def test_repro_experiment_metrics_and_plots(project):
    first = sh("dvc", "repro", cwd=project)
    assert ran(first) == ALL_STAGES
    assert "RANDOM WEIGHTS" in first
    metrics = json.loads((project / "data" / "eval" / "metrics.json").read_text())
    assert metrics["random_weights"] is True
    assert {"opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "tokenizer_ceiling"} <= set(metrics)
    provenance = json.loads((project / "data" / "eval" / "provenance.json").read_text())["provenance"]
    assert all(provenance[v]["weights"] == "random" for v in ("opt_v1", "opt_v2", "opt_v3"))
    assert provenance["baseline"]["random_weights"] is False and "paired" in metrics
    assert ran(sh("dvc", "repro", cwd=project)) == set()

    # Same params and seed, same bytes: every model and store from generation on, recomputed, hashes the same.
    lock = (project / "dvc.lock").read_text()
    again = sh("dvc", "repro", "--force", "--no-run-cache", "--downstream", "generate", cwd=project)
    assert {"generate", "train-stage2", "train-stage3", "evaluate"} <= ran(again)
    assert (project / "dvc.lock").read_text() == lock

    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=project)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "reference run", cwd=project)
    exp = sh("dvc", "exp", "run", "-S", "stage2.lora_rank=16", cwd=project)
    assert ran(exp) == {"check-params", "train-stage2", "refine", "train-stage3", "ground", "ground-on-v1", "evaluate"}
    record = json.loads((project / "data" / "stage2" / "stage2.json").read_text())
    assert record["config"]["lora_rank"] == 16

    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=project).splitlines()[-1])
    changed = diff["data/eval/metrics.json"]
    assert "opt_v2.psnr" in changed and changed["opt_v2.psnr"]["diff"] != 0
    assert "opt_v1.psnr" not in changed  # stage 1 did not re-run, so its scores stand

    out = project / "plots-diff"
    sh("dvc", "plots", "diff", "-o", str(out), cwd=project)
    html = (out / "index.html").read_text()
    assert "PSNR per test tile" in html and "opt_v2_psnr" in html
