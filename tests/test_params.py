import re

import pytest
import yaml

from gac.digest import params_hash
from gac.errors import GacError
from gac.params import load_params, validate_params
from tests.conftest import REPO, run_gac


def test_project_params_file_is_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) <= {
        "seed",
        "deterministic",
        "data",
        "tile",
        "stage1",
        "stage1_finetune",
        "stage2",
        "stage3",
        "baseline",
        "evaluate",
        "translate",
    }
    assert params.tile.size % 16 == 0


def test_translate_params_refuse_what_cannot_tile():
    with pytest.raises(GacError, match=r"translate\.tile_size: .*not a multiple of 16.*try 48"):
        validate_params({"translate": {"tile_size": 50}})
    with pytest.raises(GacError, match="overlap 40 is more than half of tile_size 64"):
        validate_params({"translate": {"tile_size": 64, "overlap": 40}})
    with pytest.raises(GacError, match=r"translate\.until"):
        validate_params({"translate": {"until": "v4"}})


def test_misspelled_key_names_key_suggestion_and_allowed_keys():
    with pytest.raises(GacError) as err:
        validate_params({"stage2": {"lora_rnak": 16}})
    message = str(err.value)
    assert "'stage2.lora_rnak'" in message and "did you mean 'lora_rank'" in message
    assert "lora_alpha" in message and "\n" not in message


def test_unknown_section_and_wrong_type_are_rejected():
    with pytest.raises(GacError, match="unknown key 'stage4'"):
        validate_params({"stage4": {}})
    with pytest.raises(GacError, match=r"tile\.stride: .*integer"):
        validate_params({"tile": {"stride": "wide"}})
    with pytest.raises(GacError, match="not a multiple of 16.*try 48"):
        validate_params({"tile": {"size": 50}})


def test_params_hash_is_stable_and_tracks_values():
    a = validate_params({"tile": {"size": 32}})
    assert params_hash(a) == params_hash(validate_params({"tile": {"size": 32}}))
    assert params_hash(a) != params_hash(validate_params({"tile": {"size": 48}}))
    # a change outside the hashed sections leaves a section hash alone
    b = validate_params({"tile": {"size": 32}, "stage2": {"lora_rank": 4}})
    assert params_hash(a, ["tile"]) == params_hash(b, ["tile"])


def test_cli_reports_a_params_typo_in_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nstage2:\n  lora_rnak: 16\n")
    result = run_gac("check-params", "--params", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(bad) in lines[0] and "lora_rnak" in lines[0]


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from stages.cli import app; print('torch' in sys.modules, 'terratorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False"]


def _stage_params(stage: str) -> set[str]:
    return set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["params"])


def test_training_stages_list_every_training_key_and_no_inference_key():
    """train-stage2/3 name their keys one by one: a new training key missing here would not retrain; `infer` must
    never."""
    params = load_params(REPO / "params.yaml")
    for stage, section in (("train-stage2", params.stage2), ("train-stage3", params.stage3)):
        listed = {key.split(".", 1)[1] for key in _stage_params(stage) if key.startswith(stage[-6:] + ".")}
        # dvc.yaml says why each unlisted key cannot change the trained model (activation checkpointing: memory only)
        unlisted = {"train-stage2": {"activation_checkpointing"}}.get(stage, set())
        assert listed == set(section.training_dict()) - unlisted, stage
        assert not any("infer" in key for key in _stage_params(stage))
    for stage in ("ground", "ground-on-v1"):
        assert {"stage3.infer", "stage3.model", "stage3.weights"} <= _stage_params(stage)
        assert "stage3" not in _stage_params(stage) and "stage3.lr" not in _stage_params(stage)
    assert "stage2.infer" in _stage_params("refine")
    # stage 1's fine-tuning reads its own section, never stage 3's; generate only whether it is on
    assert "stage1_finetune" in _stage_params("finetune-stage1")
    assert not any(key.startswith("stage3") for key in _stage_params("finetune-stage1"))
    assert "stage1_finetune.enabled" in _stage_params("generate")


def test_the_tile_stage_lists_every_tile_key_but_the_worker_count():
    """tile.workers only says how many processes read an archive (the store's bytes are the same): it must not
    re-run the tile stage, nor enter the params_hash the store records; every other tile key must."""
    from gac.data.params import TileParams

    listed = {key.split(".", 1)[1] for key in _stage_params("tile") if key.startswith("tile.")}
    assert listed == set(TileParams.model_fields) - {"workers"} and "tile" not in _stage_params("tile")
    from stages.tile import reads

    one, two = (validate_params({"tile": {"workers": n}}) for n in (1, 2))
    assert reads(one) == reads(two) and reads(one) != reads(validate_params({"tile": {"shard_tiles": 8}}))


def test_stage2_monitor_is_checked_with_one_line():
    from gac.errors import GacError
    from gac.params import validate_params

    assert validate_params({"stage2": {"monitor": "psnr"}}).stage2.monitor == "psnr"
    assert validate_params({}).stage2.monitor == "loss"
    assert validate_params({"stage2": {"monitor": "gac_score"}}).stage2.monitor == "gac_score"  # every stage's names
    with pytest.raises(
        GacError,
        match=r"^params\.yaml: stage2\.monitor: Input should be 'loss', 'gac_score', 'psnr', 'sar_edge', "
        r"'sam_deg', 'l1' or 'ms_ssim' \(got 'ce'\)$",
    ):
        validate_params({"stage2": {"monitor": "ce"}})
    with pytest.raises(GacError, match=r"monitor 'ms_ssim' is a loss term with weight 0"):
        validate_params({"stage2": {"monitor": "ms_ssim", "loss": {"ms_ssim": 0}}})


@pytest.mark.parametrize(
    "raw, old, new",
    [
        ({"stage1": {"batch_size": 2}}, "stage1.batch_size", "stage1.infer.batch_size"),
        ({"stage2": {"infer": {"accelerator": "cpu"}}}, "stage2.infer.accelerator", "stage2.infer.device"),
        ({"baseline": {"infer": {"accelerator": "cpu"}}}, "baseline.infer.accelerator", "baseline.infer.device"),
        ({"stage2": {"loss_sam": 0.2}}, "stage2.loss_sam", "stage2.loss.sam"),
        ({"translate": {"device": "cpu"}}, "translate.device", "translate.infer.device"),
    ],
)
def test_old_keys_are_refused_naming_the_new_one(raw, old, new):
    from gac.errors import GacError
    from gac.params import validate_params

    with pytest.raises(
        GacError, match=rf"^params\.yaml: '{re.escape(old)}' is now '{re.escape(new)}'; move its value there$"
    ):
        validate_params(raw)
    with pytest.raises(GacError, match=r"stage2\.monitor: 'sam' is now 'sam_deg'"):
        validate_params({"stage2": {"monitor": "sam"}})


def test_tuning_monitors_are_checked_with_one_line():
    from gac.errors import GacError
    from gac.params import validate_params

    p = validate_params({})
    assert (p.stage3.monitor, p.stage1_finetune.monitor) == ("gac_score", "loss")
    assert validate_params({"stage3": {"monitor": "sar_edge"}}).stage3.monitor == "sar_edge"
    with pytest.raises(
        GacError,
        match=r"^params\.yaml: stage3\.monitor: Input should be 'loss', 'gac_score', 'psnr', 'sar_edge', 'sam_deg' or "
        r"'ce' \(got 'l1'\)$",
    ):
        validate_params({"stage3": {"monitor": "l1"}})


def test_stage3_plots_show_the_sar_term_and_the_validation_gac_score():
    """The files the top-level plots name are the ones train-stage3's DVCLive directory holds (tests/test_ground.py
    checks them)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    live = dvc["stages"]["train-stage3"]["plots"][0]
    root = next(iter(live))
    named = {
        path: column
        for plot in dvc["plots"]
        if isinstance(plot, dict)
        for spec in plot.values()
        for path, column in (spec.get("y") or {}).items()
        if path.startswith(root)
    }
    assert named == {
        f"{root}/train/sar_step.tsv": "sar_step",
        f"{root}/val/gac_score.tsv": "gac_score",
        f"{root}/val/sar_edge.tsv": "sar_edge",
        f"{root}/val/psnr.tsv": "psnr",
    }


def test_data_keys_reach_the_stages_that_read_them():
    """synth checks pairs with every data key but max_tiles (its manifest hash covers the same); tile and translate
    read the keys that say how rasters are read."""
    from gac.data.params import DataParams

    synth = {key.split(".", 1)[1] for key in _stage_params("synth") if key.startswith("data.")}
    assert synth == set(DataParams.model_fields) - {"max_tiles"}
    reading = {"data.s1_units", "data.s1_nodata", "data.s2_offset"}
    assert {"data.max_tiles"} | reading <= _stage_params("tile")
    assert reading | {"data.source"} <= _stage_params("translate")
    params = load_params(REPO / "params.yaml")
    data = params.data
    assert (data.s1_units, data.s1_nodata, data.s2_offset, params.translate.scenes) == ("db", "auto", "auto", None)
    assert validate_params({"data": {"s2_offset": 1000, "s1_nodata": -9999}}).data.s1_nodata == -9999
    with pytest.raises(GacError, match=r"^params\.yaml: data\.s2_offset: Input should be 'auto', 0 or 1000 \(got"):
        validate_params({"data": {"s2_offset": -1000}})
    with pytest.raises(GacError, match=r"^params\.yaml: data\.s1_units: Input should be 'db', 'linear' or 'amplitude'"):
        validate_params({"data": {"s1_units": "power"}})


def test_every_params_key_the_docs_name_exists():
    """README and docs/ name params keys (`stage3.infer.timesteps`, `data.s2_offset`): each must be a key of
    params.yaml, or a renamed key that GAC refuses with its new name, so the docs cannot drift from the schema."""
    from gac.params import RENAMED

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sections = "|".join(sorted(k for k, v in params.items() if isinstance(v, dict)))
    key = re.compile(rf"`(?:-S \+?)?((?:{sections})(?:\.[a-z0-9_]+)+)(?:[=:][^`]*)?`")
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {(doc.name, m.group(1)) for doc in docs for m in key.finditer(doc.read_text())}
    assert len(named) > 20  # the pattern finds the docs' keys

    def exists(dotted: str) -> bool:
        node = params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = sorted((doc, k) for doc, k in named if not exists(k) and k not in RENAMED)
    assert not missing, missing
