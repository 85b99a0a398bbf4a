"""The package's layout stays readable: no two modules import each other, directly or through
others (an import inside a function counts: both must still be read together), and the registry
knows no component."""

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vae"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: Set[str]) -> Set[str]:
    """The package's modules that ``path`` imports anywhere in its code (a package imported by one
    of its own submodules does not count: Python runs the package first in any case)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me and not me.startswith(name + "."):
                found.add(name)
    return found


def _graph() -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_registry_knows_no_component():
    """It reads only the error types and how a count may be written, two modules that import none of pyro-vae's."""
    graph = _graph()
    assert graph["pyro_vae.components.registry"] <= {"pyro_vae.errors", "pyro_vae.user_numbers"}
    assert not graph["pyro_vae.errors"] and not graph["pyro_vae.user_numbers"]


def test_modules_below_the_config_do_not_read_it():
    """The config is built from the registries; the components, the model, the objectives, MCMC,
    the estimators, the optimizers and the data sets take plain arguments and never import it."""
    graph = _graph()
    below = [m for m in graph if m.split(".")[1:2] and m.split(".")[1] in ("components", "model", "objectives", "mcmc", "estimators", "optimizers",
                                                      "data", "speed", "traces")]
    assert below and not [m for m in below if any(i.startswith("pyro_vae.config") for i in graph[m])]
