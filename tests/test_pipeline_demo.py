"""The user's story on tiny settings, in a temporary git repo: `dvc repro`, an experiment on stage 2,
`dvc metrics diff` and `dvc plots diff`. Real stages, real models (random weights), real DVC.

Every stage is a process that imports torch and terratorch and builds its model (tens of seconds on a
busy 2-core machine), so the story runs each stage as few times as it can: one reference `dvc repro`
(module fixture), one forced re-run of the stages that train or sample, one experiment (module
fixture); what a params change would re-run is read from `dvc status`, which is how `dvc repro` decides.
Adding a stage: add it to ALL_STAGES, to STAGE2_ONWARD if an experiment on stage 2 must re-run it, and
to RANDOM_STAGES if it trains or samples.
"""

import json
import os
import shlex
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.test_pipeline_tiles import copy_project, ran, sh

# 2 scenes of 96 px -> 15 tiles of 32 px (9 train, 3 val, 3 test); one diffusion step everywhere.
TINY = {
    "seed": 3,
    "data": {"demo_scenes": 2, "demo_size": 96},
    "tile": {"size": 32, "stride": 32, "split_block": 32, "shard_tiles": 8},
    "stage1": {"infer": {"batch_size": 8}, "timesteps": 1},
    "stage2": {"max_epochs": 1, "batch_size": 4},
    "stage3": {"max_epochs": 1, "batch_size": 4, "infer": {"timesteps": 1}},
    "stage1_finetune": {"enabled": True, "max_epochs": 1, "batch_size": 4},
    "baseline": {"max_epochs": 1, "batch_size": 4, "depth": 2},
    "evaluate": {"quicklooks": 1},
    "translate": {"timesteps": 1, "overlap": 8, "infer": {"batch_size": 8}},
}
ALL_STAGES = {
    "check-params",
    "synth",
    "tile",
    "finetune-stage1",
    "generate",
    "train-stage2",
    "refine",
    "train-stage3",
    "ground",
    "ground-on-v1",
    "train-baseline",
    "predict-baseline",
    "evaluate",
    "translate",
}
# What `dvc exp run -S stage2.lora_rank=16` re-runs: stage 2 and everything downstream of it, nothing before.
STAGE2_ONWARD = {
    "check-params",
    "train-stage2",
    "refine",
    "train-stage3",
    "ground",
    "ground-on-v1",
    "evaluate",
    "translate",
}
STAGE2_EXPERIMENT = "stage2.lora_rank=16"
# The stages that train or sample (ground-on-v1 runs ground's code; translate's bytes are compared run
# against run in tests/test_translate.py); the others are deterministic functions of these outputs.
RANDOM_STAGES = ("finetune-stage1", "generate", "train-stage2", "train-stage3", "ground", "train-baseline")

pytestmark = pytest.mark.slow


def commit(project, message: str) -> None:
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=project)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message, cwd=project)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A project after its first full `dvc repro`: (project dir, the repro's output)."""
    project = copy_project(tmp_path_factory.mktemp("demo"), TINY)
    return project, sh("dvc", "repro", cwd=project)


@pytest.fixture(scope="module")
def committed(reference):
    project, _ = reference
    commit(project, "reference run")
    return project


def stale_after(project, section: str, key: str, value) -> set[str]:
    """The stages `dvc status` lists once params.yaml's `section.key` is `value` (params.yaml put back after).

    These are the stages whose own params changed; `dvc repro` / `dvc exp run` re-run them and what is
    downstream of them in the DAG, nothing else.
    """
    text = (project / "params.yaml").read_text()
    params = yaml.safe_load(text)
    target = params
    for part in section.split("."):
        target = target[part]
    target[key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = subprocess.run(
            ["dvc", "status", "--json"], cwd=project, capture_output=True, text=True, check=True
        ).stdout
    finally:
        (project / "params.yaml").write_text(text)
    return {name.rsplit(":", 1)[-1] for name in json.loads(status)}


@pytest.fixture(scope="module")
def experiment(committed):
    """The reference run committed, then `dvc exp run -S stage2.lora_rank=16`: (project dir, the experiment's
    output)."""
    return committed, sh("dvc", "exp", "run", "-S", STAGE2_EXPERIMENT, cwd=committed)


def test_first_repro_runs_every_stage_and_says_random_weights(reference):
    project, first = reference
    assert ran(first) == ALL_STAGES
    assert "RANDOM WEIGHTS" in first
    metrics = json.loads((project / "data" / "eval" / "metrics.json").read_text())
    assert metrics["random_weights"] is True
    assert {"opt_v1", "opt_v2", "opt_v3", "opt_v3_on_v1", "tokenizer_ceiling"} <= set(metrics)
    provenance = json.loads((project / "data" / "eval" / "provenance.json").read_text())["provenance"]
    assert all(provenance[v]["weights"] == "random" for v in ("opt_v1", "opt_v2", "opt_v3"))
    assert provenance["baseline"]["random_weights"] is False and "paired" in metrics
    details = json.loads((project / "data" / "eval" / "details.json").read_text())
    assert "psnr_lo" in details["opt_v2"] and "psnr_lo" not in metrics["opt_v2"]  # intervals live in details.json


def test_second_repro_runs_nothing(reference):
    project, _ = reference
    assert ran(sh("dvc", "repro", cwd=project)) == set()


def test_forced_rerun_of_every_stage_that_draws_random_numbers_reproduces_its_hashes(reference):
    # Same params and seed, same bytes: every training and sampling stage, recomputed, hashes the same.
    project, _ = reference
    lock = (project / "dvc.lock").read_text()
    again = sh("dvc", "repro", "--force", "--no-run-cache", "--single-item", *RANDOM_STAGES, cwd=project)
    assert ran(again) == set(RANDOM_STAGES)
    assert (project / "dvc.lock").read_text() == lock


def test_stage3_inference_settings_never_retrain_and_stage3_training_never_refinetunes_stage1(committed):
    params = yaml.safe_load((committed / "params.yaml").read_text())
    assert params["stage1_finetune"]["enabled"] is True  # so the fine-tuning stage would have real work to redo
    # ground and ground-on-v1 (then evaluate, downstream): no training; translate has its own sampling settings
    assert stale_after(committed, "stage3.infer", "timesteps", 3) == {"check-params", "ground", "ground-on-v1"}
    stale = stale_after(committed, "stage3", "lr", params["stage3"]["lr"] * 2)
    assert "train-stage3" in stale and "finetune-stage1" not in stale and "generate" not in stale


def test_translate_stage_writes_the_demo_scene_and_its_params_rerun_it_alone(committed):
    import rasterio

    project = committed
    with (
        rasterio.open(project / "data" / "scenes" / "S1RTC" / "demo_00.tif") as s1,
        rasterio.open(project / "data" / "translate" / "demo_00.tif") as out,
    ):
        assert (out.crs, out.transform, out.width, out.height) == (s1.crs, s1.transform, s1.width, s1.height)
        assert (
            out.count == 12
            and out.tags()["RANDOM_WEIGHTS"] == "true"
            and out.tags()["STAGES"] == "stage1 stage2 stage3"
        )
        assert (out.read() > 0).any()
    assert (project / "data" / "translate" / "demo_00.png").is_file()
    assert stale_after(project, "translate", "overlap", 4) == {"check-params", "translate"}


def test_experiment_on_stage2_reruns_stage2_onward_only(experiment):
    project, exp = experiment
    assert ran(exp) == STAGE2_ONWARD
    record = json.loads((project / "data" / "stage2" / "stage2.json").read_text())
    assert record["config"]["lora_rank"] == 16


def test_metrics_diff_shows_stage2_change_and_stage1_unchanged(experiment):
    project, _ = experiment
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=project).splitlines()[-1])
    changed = diff["data/eval/metrics.json"]
    assert "opt_v2.psnr" in changed and changed["opt_v2.psnr"]["diff"] != 0
    assert "opt_v1.psnr" not in changed  # stage 1 did not re-run, so its scores stand
    # the headline fits a screen: 40 numbers, one row each, under 160 columns
    table = subprocess.run(
        ["dvc", "metrics", "diff", "--all", "--targets", "data/eval/metrics.json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(table) == 1 + 40 and max(map(len, table)) <= 160
    assert any(line.split()[1:2] == ["paired.v3_vs_v2.psnr.diff"] for line in table)


def readme_exp_show_commands() -> list[list[str]]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [shlex.split(line) for line in lines if line.startswith("dvc exp show ")]


def test_the_readmes_exp_show_commands_fit_a_160_column_terminal(experiment):
    project, _ = experiment
    commands = readme_exp_show_commands()
    assert len(commands) == 2
    shown = []
    for command in commands:
        result = subprocess.run(
            [*command, "--no-pager"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "COLUMNS": "160"},
        )
        lines = result.stdout.splitlines()
        assert max(map(len, lines)) <= 160 and "…" not in result.stdout, result.stdout  # nothing cut off
        shown.append(lines[1].split())
    # the means that moved, then the paired tests; the param that changed in both
    assert "opt_v2.psnr" in shown[0] and "stage2.lora_rank" in shown[0] and not any("paired" in c for c in shown[0])
    assert "paired.v3_vs_v2.psnr.diff" in shown[1] and "stage2.lora_rank" in shown[1]


def test_plots_diff_renders_per_tile_plots(experiment, tmp_path):
    project, _ = experiment
    out = tmp_path / "plots-diff"
    sh("dvc", "plots", "diff", "-o", str(out), cwd=project)
    html = (out / "index.html").read_text()
    assert "PSNR per test tile" in html and "opt_v2_psnr" in html
