"""The package's import graph, read from the source with ``ast`` (module-level and function-local imports alike):
no import cycle, and no module importing a module of a higher layer (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "eagle_pipelines"

#: the layers, lowest first: a module may import its own layer and the layers before it, never a later one
LAYERS: list[tuple[str, ...]] = [
    ("errors", "extras", "files", "timings", "console"),  # no package imports but each other
    ("core",),  # the method: regions, search, scoring, metrics, records (no Kedro, no models)
    ("models",),  # one file per family, the API client, guidance
    ("data",),  # the embedded benchmarks and the COCO/MMVP/reference-list readers
    ("parameters", "reporting"),  # the parameter models; figures and pages
    ("io",),  # every Kedro dataset, item stores, executors
    ("engine",),  # explain one target
    ("api_video", "api"),  # the public facade
    ("pipelines", "hooks", "tracking", "compare", "provenance"),  # Kedro: nodes, pipelines, hooks
    ("settings", "pipeline_registry", "cli", "explain_cli", "paper_cost", "deploy", "demo", "__main__", ""),  # entry points
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported package module: line of the first import}, function-local imports included."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                # `from package import submodule` imports the submodule; `from module import name` the module
                names = [f"{base}.{alias.name}" if _resolve(f"{base}.{alias.name}") != _resolve(base) else base
                         for alias in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name) if name.split(".")[0] == PACKAGE else None
                if target and target != module:
                    edges.setdefault(target, node.lineno)
    return graph


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add '{top}' to LAYERS in tests/test_layers.py")


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_module_level_and_function_local_imports():
    graph = import_graph()
    assert "eagle_pipelines.engine" in graph["eagle_pipelines.api"]  # module level
    assert "eagle_pipelines.api" in graph[PACKAGE]  # inside __getattr__
    assert "eagle_pipelines.core.search" in graph["eagle_pipelines.core.strategies"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(graph, module):
    upward = [f"{target} (line {line}, layer {LAYERS[layer_of(target)]})"
              for target, line in sorted(graph[module].items()) if layer_of(target) > layer_of(module)]
    assert not upward, f"{module} (layer {LAYERS[layer_of(module)]}) imports a higher layer: {upward}"
