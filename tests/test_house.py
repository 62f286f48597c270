"""The house rules of the package, checked on its source: the layer order of docs/DESIGN.md
(a lower layer never imports a higher one), no import cycles (imports inside functions
included: lazy is fine, cyclic is not), every `from cnnkit.X import name` naming something
cnnkit.X has, no task chosen by its name outside tasks/, a short top level and modules that
fit in a head."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cnnkit"

# lowest first; a module may import its own layer and those before it. `cnnkit` itself is the
# face, on top: it holds only lazy attributes, and nothing inside the package imports it.
LAYERS = (
    ("cnnkit.errors", "cnnkit.version", "cnnkit.userfiles"),
    ("cnnkit.config", "cnnkit.schema", "cnnkit.validate"),
    ("cnnkit.atomic", "cnnkit.checkpoint", "cnnkit.rundir"),
    ("cnnkit.geometry",),
    ("cnnkit.data",),
    ("cnnkit.models",),
    ("cnnkit.tasks",),
    ("cnnkit.runtime",),
    ("cnnkit.training",),
    ("cnnkit.experiments",),  # many runs of one config: sweeps and searches call train()
    ("cnnkit.infer",),
    ("cnnkit.inspect",),
    ("cnnkit.cli", "cnnkit.__main__", "cnnkit"),
)
MAX_TOP_LEVEL = 12
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + ".") and prefix != "cnnkit":
                best = rank
    if best is None:
        raise AssertionError(f"{module}: in no layer of LAYERS (tests/test_house.py)")
    return best


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str, *, typed: bool = True) -> set[str]:
    """The cnnkit modules `module` imports, at import time or inside functions. typed=False:
    not those under `if TYPE_CHECKING:`, which never run (the ones that can make a cycle)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not typed and isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from cnnkit.data import mnist_sample` names a module, not an attribute: an
                # arrow to that module alone (its package runs first whatever imports it)
                modules = {f"{base}.{a.name}" for a in child.names} & set(MODULES)
                found.update(modules)
                if len(modules) < len(child.names):
                    found.add(base)
            visit(child)

    visit(tree)
    return {name for name in found if name == "cnnkit" or name.startswith("cnnkit.")}


def _owner(name: str) -> str:
    """The module an imported name lives in: `cnnkit.data.tensors.Split` -> cnnkit.data.tensors."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


@pytest.mark.parametrize("module", [m for m in MODULES if m != "cnnkit"])
def test_no_import_against_the_layer_order(module):
    mine = layer_of(module)
    higher = sorted(name for name in imports(module) if layer_of(_owner(name)) > mine)
    assert not higher, (f"{module} (layer {mine}) imports {', '.join(higher)} from a higher "
                        f"layer; the order is in docs/DESIGN.md")


def test_no_import_cycles():
    """Imports inside functions count: they run later, but a circle of them is still a circle
    (infer/'s model, predict and locate were one). TYPE_CHECKING imports never run."""
    graph = {m: {_owner(n) for n in imports(m, typed=False)} - {m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "cnnkit"])
def test_nothing_inside_imports_the_face(module):
    """`cnnkit/__init__.py` is the face for users; code inside reads the version from
    cnnkit.version and each name from the module that defines it."""
    assert "cnnkit" not in imports(module), f"{module} imports the face `cnnkit`"


def test_the_run_directory_names_its_files_once():
    """last.pt, metrics.csv, ... are names in cnnkit/rundir/__init__.py; a bare string of one
    anywhere else in the package is a second definition of the layout."""
    from cnnkit import rundir

    names = {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)}
    assert {"last.pt", "best.pt", "metrics.csv", "config.yaml", "run.json"} <= names
    found = [f"{MODULES[m].relative_to(ROOT)}:{node.lineno} {node.value!r}"
             for m in MODULES if m != "cnnkit.rundir"
             for node in ast.walk(ast.parse(MODULES[m].read_text()))
             if isinstance(node, ast.Constant) and node.value in names]
    assert not found, "use cnnkit.rundir's names: " + ", ".join(found)


def test_the_layer_order_is_the_one_documented():
    arrows = " → ".join("/".join(p.removeprefix("cnnkit.") for p in layer
                                 if p not in ("cnnkit", "cnnkit.__main__")) for layer in LAYERS)
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    assert arrows in design, f"docs/DESIGN.md should state the layer order: {arrows}"


def test_a_short_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, f"cnnkit/ has {len(top)} modules: {', '.join(top)}"
    packages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert len(packages) >= 4


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_fit_in_a_head(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)}: {lines} lines"


def test_the_checker_sees_an_import_against_the_order(tmp_path, monkeypatch):
    """The checks above can fail: a data module importing training is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from cnnkit.training.trainer import train\n")
    monkeypatch.setitem(MODULES, "cnnkit.data.bad", bad)
    with pytest.raises(AssertionError, match="imports cnnkit.training.trainer from"):
        test_no_import_against_the_layer_order("cnnkit.data.bad")
    cyclic = tmp_path / "cyclic.py"
    cyclic.write_text("import cnnkit.data.bad2\n")
    other = tmp_path / "other.py"
    other.write_text("from cnnkit.data import cyclic\n")
    monkeypatch.setitem(MODULES, "cnnkit.data.cyclic", cyclic)
    monkeypatch.setitem(MODULES, "cnnkit.data.bad2", other)
    monkeypatch.delitem(MODULES, "cnnkit.data.bad")
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycles()
    face = tmp_path / "face.py"
    face.write_text("from cnnkit import __version__\n")
    monkeypatch.setitem(MODULES, "cnnkit.data.face", face)
    with pytest.raises(AssertionError, match="imports the face"):
        test_nothing_inside_imports_the_face("cnnkit.data.face")
    # a circle closed only by an import inside a function is a circle too
    other.write_text("def later():\n    from cnnkit.data.cyclic import x\n")
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycles()
    other.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from cnnkit.data.cyclic import x\n")
    test_no_import_cycles()  # what only a type checker reads never runs


SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"),
                  *(ROOT / "scripts").glob("*.py")])


def defined_names(module: str) -> set[str] | None:
    """What `from MODULE import name` can find in a cnnkit module: names defined, assigned or
    imported at its top level (also under if/try), and its submodules. None where the module
    answers any name (a module __getattr__ other than the package face's)."""
    tree = ast.parse(MODULES[module].read_text())
    names = {m.rpartition(".")[2] for m in MODULES if m.rpartition(".")[0] == module}
    lazy = False

    def visit(body: list[ast.stmt]) -> None:
        nonlocal lazy
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                lazy |= node.name == "__getattr__"
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).partition(".")[0] for a in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
    visit(tree.body)
    if lazy and module == "cnnkit":  # the face: its lazy names are listed in __all__
        return names | set(_all_of(tree))
    return None if lazy else names


def _all_of(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def missing_names(path: Path) -> list[str]:
    """`from cnnkit.X import name` lines of `path` (anywhere: in functions too) whose name
    cnnkit.X does not have: the import fails only when that line runs."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in MODULES:
            have = defined_names(node.module)
            found += [f"{path.name}:{node.lineno}: {node.module} has no {a.name}"
                      for a in node.names if have is not None and a.name not in have]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_imported_name_exists(path):
    missing = missing_names(path)
    assert not missing, "; ".join(missing)


# a task chosen by its name: `task == "localization"`, `cfg.task.name != ...`, `.task in (...)`
TASK_NAMES = ("classification", "localization")
_NAME = "[\"'](" + "|".join(TASK_NAMES) + ")[\"']"
TASK_COMPARE = re.compile(r"(==|!=|\bin\b)\s*[\(\[{]?\s*" + _NAME + "|" + _NAME
                          + r"\s*(==|!=|\bin\b)|\btask(\.name)?\s*(==|!=)")


def task_name_compares(path: Path) -> list[str]:
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return [f"{where}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), start=1)
            if TASK_COMPARE.search(line)]


def test_only_tasks_compare_the_task_name():
    """What a task does with its output is the task's (tasks/): elsewhere code asks the task
    (task.read, task.class_targets, task.extra_outputs), never its name."""
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             if "tasks" not in path.relative_to(PACKAGE).parts[:1]
             for hit in task_name_compares(path)]
    assert not found, "the task chosen by its name outside tasks/:\n" + "\n".join(found)


def test_the_name_and_task_checkers_can_fail(tmp_path, monkeypatch):
    """The crash of `cnnkit eval --print-config` (a removed name imported inside a function)
    and a task picked by its name are both caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def run():\n    from cnnkit.infer.model import config_of_checkpoint\n"
                   "    from cnnkit.data import mnist_sample, Data\n"
                   "    if predictor.task == 'localization':\n        pass\n")
    assert missing_names(bad) == ["bad.py:2: cnnkit.infer.model has no config_of_checkpoint"]
    assert task_name_compares(bad) == ["bad.py:4: if predictor.task == 'localization':"]
    for line in ('if cfg.task.name != "classification":', "task in ('localization',)",
                 '"localization" == kind'):
        assert TASK_COMPARE.search(line), line
    assert not TASK_COMPARE.search('name = "classification"  # classification or localization')
