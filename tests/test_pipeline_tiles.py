"""The foundation's DVC story in a temporary git repo: repro, no-op repro, and exp run -S re-running exactly what
depends on it."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

TINY = {
    "seed": 1,
    "data": {"source": "demo", "demo_scenes": 2, "demo_size": 128},
    "tile": {"size": 32, "stride": 32, "split_block": 64, "shard_tiles": 16},
}


def sh(*args, cwd):
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=1800
    )  # a whole `dvc repro` on a busy machine
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(root, overrides: dict):
    """A fresh git repo holding this project's files (not its artifacts) with params overridden section by section."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        artifact = name.startswith("data/") and name != "data/.gitignore"
        if artifact or name.startswith(("tests/", "bench/")) or name == "dvc.lock" or not (REPO / name).is_file():
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section] = {**params[section], **values} if isinstance(values, dict) else values
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=root)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "project", cwd=root)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"), TINY)


def test_repro_then_noop_then_exp_run_reruns_only_dependents(project):
    first = sh("dvc", "repro", "tile", cwd=project)
    assert ran(first) == {"synth", "tile"}
    assert (project / "data" / "tiles.zarr" / "zarr.json").is_file()
    assert "/tiles.zarr" in (project / "data" / ".gitignore").read_text().split()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["tile"]["params"]["params.yaml"]["tile.stride"] == 32
    assert "tile.workers" not in lock["stages"]["tile"]["params"]["params.yaml"]  # speed only: the same store

    again = sh("dvc", "repro", "tile", cwd=project)
    assert ran(again) == set()

    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=project)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock", cwd=project)
    workers = sh("dvc", "exp", "run", "-S", "tile.workers=1", "tile", cwd=project)
    assert ran(workers) == set()  # how many processes read the scenes re-runs nothing
    exp = sh("dvc", "exp", "run", "-S", "tile.stride=16", "tile", cwd=project)
    assert ran(exp) == {"tile"}  # the scenes do not depend on tile.*, so synth is not re-run

    # DVC's own override refuses a key params.yaml lacks; appending one with '+' gets past DVC, not past GAC's
    # check-params stage (the tile stage lists its keys one by one, so a run of `tile` alone does not see a new key)
    for setting in ("tile.strde=16", "+tile.strde=16"):
        typo = subprocess.run(["dvc", "exp", "run", "-S", setting], cwd=project, capture_output=True, text=True)
        assert typo.returncode != 0
    assert "unknown key 'tile.strde'; did you mean 'stride'?" in typo.stdout + typo.stderr
    assert "Traceback" not in typo.stdout + typo.stderr
