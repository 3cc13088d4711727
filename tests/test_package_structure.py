"""The shape of the package: no import cycles between its modules or its packages, no module too long to read in
one sitting, and the library never imports a project (the projects declare themselves, see recursivedet.hosts)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folders as the installed package names them (setup.py maps configs/ and projects/ into the package).
PACKAGE_FOLDERS = {"recursivedet": ROOT / "recursivedet", "recursivedet.projects": ROOT / "projects"}
MAX_LINES = 500


def package_modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file."""
    modules = {}
    for package, folder in PACKAGE_FOLDERS.items():
        for path in folder.rglob("*.py"):
            if "configs" in path.relative_to(folder).parts:
                continue  # LazyConfig files, loaded by path, not imported
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def module_level_imports(name: str, path: Path, modules: dict[str, Path], in_functions: bool = False) -> set[str]:
    """The package modules that importing ``name`` imports directly (statements outside functions: an import
    inside a function runs when it is called, after every module has finished loading); with ``in_functions``
    also those that its functions import, including modules named to ``importlib.import_module``."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and not in_functions:
                continue
            if (
                isinstance(child, ast.Call)
                and getattr(child.func, "attr", getattr(child.func, "id", None)) == "import_module"
                and child.args
                and isinstance(child.args[0], ast.Constant)
            ):
                found.add(child.args[0].value)
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return cycles


@pytest.fixture(scope="module")
def import_graph():
    modules = package_modules()
    return {name: module_level_imports(name, path, modules) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_relative_and_absolute_imports(import_graph):
    assert "recursivedet.modeling.matcher" in import_graph["recursivedet.modeling.criterion"]  # from .matcher
    assert "recursivedet.errors" in import_graph["recursivedet.model_zoo"]  # from recursivedet.errors import


def test_no_import_cycles(import_graph):
    assert import_cycles(import_graph) == []


@pytest.fixture(scope="module")
def full_import_graph():
    """Every import of every module, wherever it stands (module level, functions, ``importlib.import_module``)."""
    modules = package_modules()
    return {name: module_level_imports(name, path, modules, in_functions=True) for name, path in modules.items()}


def is_project(module: str) -> bool:
    """A module of a project (``recursivedet.projects.<Host>...``; not the folder's own package)."""
    return module.startswith("recursivedet.projects.")


def package_of(module: str, modules: dict[str, Path]) -> str:
    return module if modules[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def test_the_full_import_graph_sees_imports_inside_functions(full_import_graph, import_graph):
    assert "recursivedet.analysis.inference_variants" in full_import_graph["recursivedet.analysis.benchmark"]
    assert "recursivedet.analysis.inference_variants" not in import_graph["recursivedet.analysis.benchmark"]


def test_the_library_imports_no_project(full_import_graph):
    library = [m for m in full_import_graph if not is_project(m)]
    assert not {m: sorted(i) for m in library if (i := {x for x in full_import_graph[m] if is_project(x)})}


def test_no_import_cycles_between_packages(full_import_graph):
    modules = package_modules()
    packages = {}
    for module, imported in full_import_graph.items():
        source = package_of(module, modules)
        targets = {package_of(m, modules) for m in imported}
        # a package's __init__ gathering its own modules is not a cycle with them
        packages.setdefault(source, set()).update(t for t in targets if t != source and not source.startswith(t + "."))
    assert import_cycles(packages) == []


def test_no_module_too_long_to_read_in_one_sitting():
    long = {
        str(p.relative_to(ROOT)): n
        for p in package_modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
