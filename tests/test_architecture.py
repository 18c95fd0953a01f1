"""The package's structure: its import graph has no cycle, no module imports another module's
private names, each layer imports only the layers below it, and what the wheel must ship is there.

The graph is read from the sources (ast), function-level imports included, so a lazy import
cannot hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seg_xai_fast"
NAME = "seg_xai_fast"

# Layers, lowest first: a module may import its own layer and those before it, never one after.
LAYERS = [
    {"_version", "_source_digest", "_core", "errors", "fileio"},
    {"kernels"},
    {"demo", "engine", "viz"},
    {"runtimes", "models", "hub", "metrics"},
    {"apps"},
    {"cli"},
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import `from <level dots><target> import ...` in `module`."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of `module`, at any depth."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith(NAME)]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module) if node.level else node.module
            if target and target.startswith(NAME):
                names = [alias.name for alias in node.names]
                # `from . import x` imports the submodule x when there is one.
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                found += [(s, [], node.lineno) for s in subs]
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if rest or not subs:
                    found.append((target, rest, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    top = module.split(".")[1] if module != NAME else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {module} is in no layer of LAYERS: add its top-level name there")


def test_the_graph_sees_the_package():
    assert len(MODULES) > 30
    assert f"{NAME}.engine.capture" in _graph()[f"{NAME}.engine.explainer"]


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_graph_has_no_cycle():
    graph = _graph()
    graph.pop(NAME)  # the package root only re-exports: every module is below it
    for deps in graph.values():
        deps.discard(NAME)
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for module in MODULES:
        for target, names, line in _imports(module):
            private = [n for n in names if n.startswith("_") and n not in ("__version__", "_core")]
            if private and target != module:
                offenders.append(f"{module}:{line} imports {private} from {target}")
    assert offenders == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != NAME))
def test_layers_import_only_layers_below(module):
    mine = _layer(module)
    above = [t for t, _, _ in _imports(module) if t in MODULES and t != NAME and _layer(t) > mine]
    assert above == [], f"{module} (layer {mine}) imports {above} from higher layers"


def test_typing_files_ship_with_the_package():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_core.pyi").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject and '"*.pyi"' in pyproject


def test_one_version_source():
    import seg_xai_fast as sx

    text = (PACKAGE / "_version.py").read_text()
    assert f'__version__ = "{sx.__version__}"' in text
    assert sx.build_info()["version"] == sx.__version__  # the core was built from the same source
    assert 'version = "' not in (ROOT / "pyproject.toml").read_text()  # dynamic, read from _version.py


def test_no_file_cites_documents_outside_the_repository():
    # The workplace's own notes, spelt so that this file does not name them itself.
    outside = tuple(name + ".md" for name in ("ALGORITHMS", "PEERS", "STYLE")) + ("shared" + "/docs",)
    offenders = []
    for path in list(ROOT.glob("*.md")) + [p for d in ("seg_xai_fast", "csrc", "docs", "tests", "benchmarks", "tools")
                                           for p in (ROOT / d).rglob("*") if p.is_file()]:
        if path.suffix not in (".py", ".md", ".cpp", ".h", ".cu", ".cuh", ".inc", ".sh", ".txt", ".pyi", ".toml"):
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)} cites {name}" for name in outside if name in text]
    assert offenders == []


# Where a method's name may be compared with a string: the registry, the built-in catalog, and the
# kernel dispatch (whose ids are the built-in CAM stages' names).
METHOD_NAME_PLACES = ("engine/methods.py", "engine/catalog.py", "kernels/")


def _method_name_comparisons(path: Path, names: set, root: Path) -> list[str]:
    """`x == "gradcam"`, `x in ("rise", "occlusion")` and the like in the file at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            hits = [i.value for i in items if isinstance(i, ast.Constant) and i.value in names]
            if hits:
                found.append(f"{path.relative_to(root)}:{node.lineno} compares with {hits}")
    return found


def test_method_name_scan_finds_comparisons(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('if method == "gradcam":\n    pass\nok = spec.name in ("rise", "other")\nx = {"rise": 1}\n')
    found = _method_name_comparisons(probe, {"gradcam", "rise"}, tmp_path)
    assert found == ["probe.py:1 compares with ['gradcam']", "probe.py:3 compares with ['rise']"]


def test_method_names_are_compared_only_in_the_registry_and_the_kernel_dispatch():
    """What a method does lives in its spec: no `method == "..."` chains elsewhere."""
    from seg_xai_fast.engine.methods import registered

    names = set(registered())
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if not any(place in path.relative_to(PACKAGE).as_posix() for place in METHOD_NAME_PLACES):
            offenders += _method_name_comparisons(path, names, ROOT)
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        offenders += _method_name_comparisons(path, names, ROOT)
    assert offenders == []
