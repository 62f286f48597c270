"""The house rules of the package, checked on its source: the layer order of docs/DESIGN.md
(a lower layer never imports a higher one), no import cycles, a short top level and modules
that fit in a head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cnnkit"

# lowest first; a module may import its own layer and those before it. `cnnkit` itself is the
# face: it holds only the version and lazy attributes, so any layer may read __version__.
LAYERS = (
    ("cnnkit", "cnnkit.errors"),
    ("cnnkit.config", "cnnkit.schema", "cnnkit.validate"),
    ("cnnkit.atomic", "cnnkit.checkpoint"),
    ("cnnkit.geometry",),
    ("cnnkit.data",),
    ("cnnkit.models",),
    ("cnnkit.tasks",),
    ("cnnkit.training",),
    ("cnnkit.experiments",),  # many runs of one config: sweeps and searches call train()
    ("cnnkit.infer",),
    ("cnnkit.inspect",),
    ("cnnkit.cli", "cnnkit.__main__"),
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


def imports(module: str, *, runtime_only: bool = False) -> set[str]:
    """The cnnkit modules `module` imports. runtime_only: just those run at import time (not in
    functions, not under TYPE_CHECKING), the ones that can make a cycle."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if runtime_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if runtime_only and isinstance(child, ast.If) and _is_type_checking(child):
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
                found.add(base)
                # `from cnnkit.data import mnist_sample` names a module, not an attribute
                found.update(f"{base}.{a.name}" for a in child.names
                             if f"{base}.{a.name}" in MODULES)
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
    graph = {m: {_owner(n) for n in imports(m, runtime_only=True)} - {m} for m in MODULES}
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
