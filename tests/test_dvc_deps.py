"""dvc.yaml's code deps are exactly the code each stage runs, so `dvc repro` never calls a stale artifact up to date.

A stage's code is the import closure of the module its command runs (stages/cli.py maps `gac <command>` to it):
every gac and stages module it imports, at module level or inside a function (this project imports inside
functions everywhere to keep start-up cheap), and what those import in turn. Importing `gac.a.b` also runs
`gac/__init__.py` and `gac/a/__init__.py`, so those count, unless they hold nothing but a docstring.

- Counted: stages/common.py, and with it gac/params.py, gac/schema.py, gac/device.py, gac/errors.py, gac/__init__.py.
  Every command runs it: it loads and validates params and switches torch's deterministic mode, both of which
  change results, and gac/__init__.py's version is written into every output.
- Not counted: stages/cli.py. It only maps command names to functions and imports every stage module; counting
  it would make each stage depend on all the others' code, so editing one stage would re-run all of them.
- The params schemas: every stage validates the whole params.yaml, so gac/params.py imports every section's
  schema (gac/<stage>/params.py). Those edges are not followed; instead a stage counts the schema of each section
  it reads (its `params:` entries, or every section when it depends on params.yaml as a whole), because defaults
  and validators shape the values it gets. Otherwise a typo fix in the translate schema would retrain stage 2.
- Not followed: imports under `if TYPE_CHECKING:` (they never run).
- Non-Python files: gac/ and stages/ hold Python only (a test below keeps it so); stages read params.yaml
  (tracked through `params:`) and data/ (declared by hand). profiles/ is read by `gac profile`, not by any stage.

The deps must equal that closure: a missing module fails naming the stage, the module and who imports it; a dep
the stage never runs fails too (it re-runs the stage for nothing). A directory dep is for a subpackage the stage
uses whole: every module under it must be in the closure (else list the files), which keeps deps readable without
re-running training when an unrelated module of the package changes.

A test rather than a generator: dvc.yaml stays hand-written (comments, the params lists, the order of deps), and
rewriting YAML with its comments would need a round-trip parser; on failure the message prints the stage's
complete code deps, ready to paste.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.conftest import REPO

PACKAGES = ("gac", "stages")
CLI = "stages/cli.py"


def module_path(name: str) -> str | None:
    """The file a dotted module name runs (repo-relative), or None when it is not a gac/stages module."""
    base = REPO.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path.relative_to(REPO).as_posix()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def imported_modules(path: str) -> list[str]:
    """The gac/stages files one module imports, anywhere in it but under `if TYPE_CHECKING:`."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]))
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from gac.a import b`: b is a module (gac/a/b.py) or a name in gac/a; both run gac/a.
                names.extend(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse((REPO / path).read_text()))
    files = []
    for name in names:
        parts = name.split(".")
        if parts[0] not in PACKAGES:
            continue
        # every package on the way runs its __init__.py; the last file found is what the import is for
        files.extend(f for f in (module_path(".".join(parts[:i])) for i in range(1, len(parts) + 1)) if f)
    return files


def runs_code(path: str) -> bool:
    body = ast.parse((REPO / path).read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def section_schemas() -> dict[str, str]:
    """params section -> the file defining its schema (data and tile live in gac/params.py itself)."""
    import sys

    from gac.params import params_schema

    out = {}
    for section, field in params_schema().model_fields.items():
        model = field.annotation
        if isinstance(model, type) and model.__module__.split(".")[0] == "gac":
            out[section] = Path(sys.modules[model.__module__].__file__).resolve().relative_to(REPO).as_posix()
    return out


def whole_file_schemas() -> set[str]:
    """The section schemas gac/params.py imports only to validate the whole params file: edges not followed."""
    return set(section_schemas().values()) - {"gac/params.py"}


def stage_closure(start: dict[str, str], schemas: set[str]) -> dict[str, str]:
    """{file: what first brought it in} for all that `start` ({file: why}) runs; the module docstring has the rules."""
    seen: dict[str, str] = {}
    todo = list(start.items())
    while todo:
        path, by = todo.pop(0)
        if path in seen:
            continue
        seen[path] = by
        for imported in imported_modules(path):
            if path == "gac/params.py" and imported in schemas:
                continue  # the whole-file validation; the sections a stage reads are started from
            todo.append((imported, path))
    return {path: by for path, by in seen.items() if runs_code(path)}


def command_modules() -> dict[str, str]:
    """`gac <command>` -> the stage module stages/cli.py maps it to (`app.command("tile")(tile.main)`)."""
    out = {}
    for node in ast.walk(ast.parse((REPO / CLI).read_text())):
        registers = isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
        if registers and getattr(node.func.func, "attr", "") == "command":
            out[node.func.args[0].value] = f"stages/{node.args[0].value.id}.py"
    return out


def code_files(dep: str) -> set[str]:
    """The code files a dep covers: the file itself, or every module under a directory that runs code."""
    path = REPO / dep
    if path.is_dir():
        files = (p.relative_to(REPO).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        return {f for f in files if runs_code(f)}
    return {dep}


def plumbing() -> set[str]:
    """What every command runs through stages/common.py: listed last in each stage's deps."""
    return set(stage_closure({"stages/common.py": "every command"}, whole_file_schemas()))


def suggested_deps(closure: set[str]) -> list[str]:
    """The closure as deps: a subpackage the stage uses whole as its directory, other modules as files.

    Ordered as dvc.yaml lists them: the stage's command, its own code, then the plumbing every command shares.
    """
    deps, covered = [], set()
    for package in sorted({str(Path(f).parent) for f in closure if f.count("/") >= 2}):
        if code_files(package) <= closure:
            deps.append(package)
            covered |= code_files(package)
    deps += [f for f in closure if f not in covered]
    shared = plumbing()
    return sorted(deps, key=lambda d: (d in shared, not d.startswith("stages/"), d))


def stage_code_deps():
    """(stage name, its code deps in dvc.yaml, the closure of what it runs) for every stage."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = command_modules()
    schemas = section_schemas()
    for name, spec in stages.items():
        words = spec["cmd"].split()
        assert words[0] == "gac" and words[1] in commands, f"dvc.yaml: stage {name} runs `{spec['cmd']}`, not in {CLI}"
        deps = spec.get("deps", [])
        sections = {entry.split(".")[0] for entry in spec.get("params", []) if isinstance(entry, str)}
        if "params.yaml" in deps:
            sections = set(schemas)
        start = {schemas[s]: f"its params section {s}" for s in sorted(sections, reverse=True) if s in schemas}
        start = {commands[words[1]]: f"`gac {words[1]}`", **start}
        closure = stage_closure(start, whole_file_schemas())
        code = [d for d in deps if d.split("/")[0] in PACKAGES]
        yield name, code, closure


def deps_problems(code: list[str], closure: dict[str, str]) -> list[str]:
    """What is wrong with a stage's code deps against the closure of what it runs (empty: nothing)."""
    runs = set(closure)
    covered = set().union(*(code_files(d) for d in code)) if code else set()
    found = [f"{path} is missing (imported by {closure[path]})" for path in sorted(runs - covered)]
    for dep in code:
        unused = code_files(dep) - runs
        if unused == code_files(dep):
            found.append(f"{dep} is never imported by the stage")
        elif unused:
            found.append(
                f"{dep} covers {', '.join(sorted(unused))}, which the stage never imports (list the files it uses)"
            )
    return found


def test_every_stage_lists_exactly_the_code_it_runs():
    problems = []
    for stage, code, closure in stage_code_deps():
        found = deps_problems(code, closure)
        if found:
            paste = "\n".join(f"      - {d}" for d in suggested_deps(set(closure)))
            problems.append(f"stage {stage}: " + "; ".join(found) + f". Its code deps should be:\n{paste}")
    assert not problems, "dvc.yaml's code deps differ from the code the stages run:\n" + "\n".join(problems)


def test_the_check_names_what_drifted_as_dvc_yaml_had_it():
    # translate's deps before this check existed: no gac/data/tiling.py (gac.translate.run imports it) and gac/refine
    # whole, though translate never trains stage 2
    closure = dict(next(c for s, _, c in stage_code_deps() if s == "translate"))
    code = [d for d in suggested_deps(set(closure)) if d != "gac/data/tiling.py" and not d.startswith("gac/refine/")]
    found = deps_problems(code + ["gac/refine", "gac/metrics.py", "gac/nothing.py"], closure)
    assert found[0] == "gac/data/tiling.py is missing (imported by gac/translate/run.py)"
    assert found[1].startswith("gac/refine covers gac/refine/module.py, gac/refine/train.py, ")
    assert found[2] == "gac/nothing.py is never imported by the stage"
    assert len(found) == 3  # the duplicate gac/metrics.py is covered and used: fine


def test_the_closure_follows_imports_inside_functions_and_counts_the_cli_plumbing():
    # hand-checked: stages/tile.py imports gac.data.tiling inside main(); tiling imports gac.data.sanity, which
    # imports gac.data.landcover; stages/common.py imports gac.device inside load_torch_params
    closure = stage_closure({"stages/tile.py": "gac tile"}, whole_file_schemas())
    hand_checked = {
        "gac/data/tiling.py",
        "gac/data/sanity.py",
        "gac/data/landcover.py",
        "gac/device.py",
        "stages/common.py",
    }
    assert hand_checked <= set(closure)
    assert closure["gac/data/tiling.py"] == "stages/tile.py"
    assert "gac/__init__.py" in closure and "stages/__init__.py" not in closure  # a docstring alone runs nothing
    assert CLI not in closure and "gac/refine/params.py" not in closure  # tile reads no stage2 key
    assert "gac/refine/params.py" in stage_closure({"stages/tile.py": "gac tile"}, set())  # the edge that is cut


def test_deps_use_a_directory_for_a_subpackage_used_whole_and_list_the_shared_plumbing_last():
    closure = next(c for s, _, c in stage_code_deps() if s == "translate")
    deps = suggested_deps(set(closure))
    assert deps[0] == "stages/translate.py" and set(deps[-6:]) == plumbing()
    assert plumbing() == {
        "stages/common.py",
        "gac/__init__.py",
        "gac/device.py",
        "gac/errors.py",
        "gac/params.py",
        "gac/schema.py",
    }
    assert "gac/translate" in deps and "gac/tuning" in deps  # used whole: a directory
    assert "gac/refine" not in deps and "gac/refine/build.py" in deps  # translate never trains stage 2: files


def test_gac_and_stages_hold_only_python():
    # The closure sees Python imports only; a data file under gac/ or stages/ would be read without being a dep.
    other = [
        p.relative_to(REPO).as_posix()
        for package in PACKAGES
        for p in (REPO / package).rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert not other, f"{', '.join(other)}: not Python, so no import names it; make it a dep of the stages reading it"
