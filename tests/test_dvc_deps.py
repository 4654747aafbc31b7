"""dvc.yaml knows every input: each stage depends on exactly the project modules its entry point imports.

A stage's code is `stages/<name>.py` and every project module it imports, transitively, including imports
inside functions. A `foreach` stage (extract@<name>) is checked through its `do` template: its module gets
the item as an argument, so every item lists the code of all of them. A module missing from the deps lets DVC call a stale output up to date; a listed
module the stage never imports re-runs it for nothing.
"""
from __future__ import annotations

import ast
import os

import pytest
import yaml

from conftest import REPO, run

with open(os.path.join(REPO, "dvc.yaml")) as f:
    # a foreach stage as its `do` template (its cmd passes the item to the module)
    STAGES = {name: stage.get("do", stage) for name, stage in yaml.safe_load(f)["stages"].items()}
FOREACH_ARGUMENT = " ${item}"
PACKAGES = ("avfusion", "stages")            # the project's own code; everything else is third-party


def module_path(module: str, root: str = REPO) -> str | None:
    """Repository-relative path of a project module, or None when `module` is not one."""
    parts = module.split(".")
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None


def imported_modules(path: str, root: str = REPO) -> set[str]:
    """Project modules named by the import statements anywhere in `path` (module level or in functions)."""
    package = os.path.dirname(path).replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse(open(os.path.join(root, path)).read(), path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                          # relative: from the importing module's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from avfusion import openl3` imports a module; `from avfusion.x import f`, a name in x
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES and module_path(name, root)}
    return found


def stage_code(stage: str, root: str = REPO) -> set[str]:
    """Paths of `stages/<stage>.py` and every project module it imports, transitively."""
    seen, todo = set(), [f"stages/{stage}.py"]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [module_path(m, root) for m in imported_modules(path, root)]
    return seen


def is_code(path: str) -> bool:
    return path.split("/")[0] in PACKAGES


def outputs() -> set[str]:
    return {next(iter(out)) if isinstance(out, dict) else out
            for stage in STAGES.values() for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])}


def test_every_stage_module_is_a_stage():
    modules = {name[:-3] for name in os.listdir(os.path.join(REPO, "stages"))
               if name.endswith(".py") and name != "__init__.py"}
    assert modules == set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_runs_its_own_module(stage):
    assert STAGES[stage]["cmd"].removesuffix(FOREACH_ARGUMENT) == f"python -m stages.{stage}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_deps_list_exactly_the_code_the_stage_imports(stage):
    code = {path for path in stage_code(stage) if not path.endswith("__init__.py")}
    listed = {dep for dep in STAGES[stage]["deps"] if is_code(dep)}
    assert not code - listed, f"dvc.yaml: stage {stage} imports {sorted(code - listed)} but does not depend on it"
    assert not listed - code, f"dvc.yaml: stage {stage} depends on {sorted(listed - code)} but never imports it"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_dep_is_committed_or_an_output(stage):
    """Code and other inputs are git-tracked; data deps may instead be another stage's outputs, or the
    directory holding some (featureset's data/features: DVC orders the stage after theirs). (An input that
    exists only as an ignored local file breaks a fresh clone and `dvc exp run --queue`, which runs in
    a copy of the git tree.)"""
    tracked = set(run(["git", "ls-files"], cwd=REPO).stdout.split())
    made = outputs()
    for dep in STAGES[stage]["deps"]:
        committed = dep in tracked or any(path.startswith(dep.rstrip("/") + "/") for path in tracked)
        produced = any(dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")
                       for out in made)
        assert committed or (produced and not is_code(dep)), \
            f"dvc.yaml: stage {stage} lists {dep}, which is neither committed nor a stage's output"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_module_imports_another(stage):
    own = f"stages/{stage}.py"
    others = {path for path in stage_code(stage) if path.startswith("stages/")} - {own, "stages/__init__.py"}
    assert not others, f"{own} imports {sorted(others)}: code that stages share belongs in avfusion/"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_inits_hold_no_code(package):
    """Importing any module runs its package's __init__.py, which dvc.yaml does not list: it must
    hold only a docstring, so no code can hide there."""
    path = f"{package}/__init__.py"
    body = ast.parse(open(os.path.join(REPO, path)).read()).body
    assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body), \
        f"{path} holds code; move it to a module the stages import (then dvc.yaml lists it)"


def test_imports_are_followed_through_functions_from_lists_and_relative_imports(tmp_path):
    """The derivation itself, on a stage that hides its imports in a function, a from-list and `from .`."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""docstring"""\n')
    (tmp_path / "stages" / "demo.py").write_text(
        "import numpy\nfrom avfusion import a\n\ndef main():\n    from avfusion.b import f\n    return f\n")
    (tmp_path / "avfusion" / "a.py").write_text("import avfusion.c as c\n")
    (tmp_path / "avfusion" / "b.py").write_text("from . import c\nf = 1\n")
    (tmp_path / "avfusion" / "c.py").write_text("")
    (tmp_path / "avfusion" / "unused.py").write_text("")
    assert stage_code("demo", str(tmp_path)) == {"stages/demo.py", "avfusion/__init__.py", "avfusion/a.py",
                                                 "avfusion/b.py", "avfusion/c.py"}
