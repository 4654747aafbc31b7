"""dvc.yaml knows every input: each stage depends on exactly the project modules its entry point imports.

A stage's code is its module in stages/ and every project module it imports, transitively, including
imports inside functions. The extraction stages run `python -m stages.extract <name>`, which imports
`avfusion/extractors/<name>.py` by name (the registry), so that module and its imports count too:
- `facenet` and `openl3` list their code exactly;
- a foreach family (extract@<name>, faces@<name>) gives every item the same deps: its own module
  (`avfusion/extractors/${item}.py`) and a shared set, which must be exactly the union of what the
  family's extractors import besides their own module. So an extractor's private code lives in its
  own module, and editing it re-runs only its stage.
A module missing from the deps lets DVC call a stale output up to date; a listed module the stage
never imports re-runs it for nothing.
"""
from __future__ import annotations

import ast
import os

import pytest
import yaml

from conftest import REPO, run

with open(os.path.join(REPO, "dvc.yaml")) as f:
    RAW = yaml.safe_load(f)["stages"]
STAGES = {name: stage.get("do", stage) for name, stage in RAW.items()}
FOREACH = {name: stage["foreach"] for name, stage in RAW.items() if "foreach" in stage}   # extract, faces
ITEM = "${item}"
OWN_MODULE = f"avfusion/extractors/{ITEM}.py"
PACKAGES = ("avfusion", "stages")            # the project's own code; everything else is third-party
FAMILY_LIST = {"extract": "features.extractors", "faces": "features.faces"}


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
            # `from avfusion import paths` imports a module; `from avfusion.x import f`, a name in x
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES and module_path(name, root)}
    return found


def code_of(*paths: str, root: str = REPO) -> set[str]:
    """`paths` and every project module they import, transitively (package inits left out: they hold no code)."""
    seen, todo = set(), list(paths)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [module_path(m, root) for m in imported_modules(path, root)]
    return {p for p in seen if not p.endswith("__init__.py")}


def stage_module(stage: str) -> tuple[str, str | None]:
    """(stages/<module>.py, the extractor it is given or None) from a stage's cmd."""
    words = STAGES[stage]["cmd"].split()
    assert words[:3] == ["python", "-m", words[2]] and words[2].startswith("stages."), STAGES[stage]["cmd"]
    return f"stages/{words[2].removeprefix('stages.')}.py", (words[3] if len(words) > 3 else None)


def stage_code(stage: str, item: str | None = None) -> set[str]:
    module, extractor = stage_module(stage)
    extractor = item if extractor == ITEM else extractor
    return code_of(module, *([f"avfusion/extractors/{extractor}.py"] if extractor else []))


def extractor_kind(name: str) -> str:
    """Which stage an extractor gets: its own (a backbone), or the family that lists it."""
    from avfusion.extraction.registry import get
    cls = get(name)
    return "backbone" if cls.backbone else "faces" if cls.reads_faces else "extract"


def is_code(path: str) -> bool:
    return path.split("/")[0] in PACKAGES


def listed_code(stage: str) -> set[str]:
    return {dep for dep in STAGES[stage]["deps"] if is_code(dep)}


def outputs() -> set[str]:
    return {next(iter(out)) if isinstance(out, dict) else out
            for stage in STAGES.values() for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])}


SINGLE = sorted(set(STAGES) - set(FOREACH))


def test_every_stage_module_runs_a_stage():
    modules = {name[:-3] for name in os.listdir(os.path.join(REPO, "stages"))
               if name.endswith(".py") and name != "__init__.py"}
    assert modules == {stage_module(s)[0][len("stages/"):-3] for s in STAGES}


@pytest.mark.parametrize("stage", SINGLE)
def test_deps_list_exactly_the_code_the_stage_imports(stage):
    code, listed = stage_code(stage), listed_code(stage)
    assert not code - listed, f"dvc.yaml: stage {stage} imports {sorted(code - listed)} but does not depend on it"
    assert not listed - code, f"dvc.yaml: stage {stage} depends on {sorted(listed - code)} but never imports it"


def test_every_extractor_has_its_stage():
    """The backbones have stages of their own; every other extractor belongs to one foreach family."""
    from avfusion.extraction.registry import names
    for name in names():
        kind = extractor_kind(name)
        assert (name in STAGES) == (kind == "backbone"), f"{name}: a {kind} extractor"
        if kind == "backbone":
            assert stage_module(name) == ("stages/extract.py", name)


@pytest.mark.parametrize("family", sorted(FOREACH))
def test_a_family_depends_on_each_items_module_and_exactly_what_its_items_share(family):
    from avfusion.extraction.registry import names
    assert FOREACH[family] == "${" + FAMILY_LIST[family] + "}"
    listed = listed_code(family)
    assert OWN_MODULE in listed, f"dvc.yaml: {family}@<name> must depend on its own module {OWN_MODULE}"
    shared = listed - {OWN_MODULE}
    members = [n for n in names() if extractor_kind(n) == family]
    assert members, f"no extractor belongs to {family}"
    needed = set()
    for name in members:
        own = f"avfusion/extractors/{name}.py"
        code = stage_code(family, name) - {own}
        private = code - shared
        assert not private, (f"dvc.yaml: {family}@{name} imports {sorted(private)}, which its family does not "
                             f"list: move that code into {own}, or add it to the family's shared deps")
        needed |= code
    assert not shared - needed, f"dvc.yaml: {family} depends on {sorted(shared - needed)}, which no item imports"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_dep_is_committed_or_an_output(stage):
    """Code and other inputs are git-tracked; data deps may instead be another stage's outputs, or the
    directory holding some (featureset's data/features: DVC orders the stage after theirs). (An input that
    exists only as an ignored local file breaks a fresh clone and `dvc exp run --queue`, which runs in
    a copy of the git tree.)"""
    tracked = set(run(["git", "ls-files"], cwd=REPO).stdout.split())
    made = outputs()
    for dep in STAGES[stage]["deps"]:
        if ITEM in dep:
            continue                                 # checked per extractor above
        committed = dep in tracked or any(path.startswith(dep.rstrip("/") + "/") for path in tracked)
        produced = any(dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")
                       for out in made)
        assert committed or (produced and not is_code(dep)), \
            f"dvc.yaml: stage {stage} lists {dep}, which is neither committed nor a stage's output"


def test_only_face_extractors_depend_on_the_face_store():
    facenet_store = "data/features/facenet"
    for stage, spec in STAGES.items():
        reads_faces = stage == "faces" or stage == "featureset"
        assert (facenet_store in spec["deps"]) == (stage == "faces"), stage
        if not reads_faces:
            assert "data/features" not in spec["deps"], stage


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_module_imports_another(stage):
    own = stage_module(stage)[0]
    others = {path for path in stage_code(stage, "vad") if path.startswith("stages/")} - {own}
    assert not others, f"{own} imports {sorted(others)}: code that stages share belongs in avfusion/"


@pytest.mark.parametrize("package", sorted({os.path.dirname(p) for p in
                                            [*(f"avfusion/{d}/x" for d in os.listdir(os.path.join(REPO, "avfusion"))
                                               if os.path.isdir(os.path.join(REPO, "avfusion", d)) and d != "__pycache__"),
                                             "avfusion/x", "stages/x"]}))
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
    assert code_of("stages/demo.py", root=str(tmp_path)) == {"stages/demo.py", "avfusion/a.py", "avfusion/b.py",
                                                              "avfusion/c.py"}
