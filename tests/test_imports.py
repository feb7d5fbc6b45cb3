"""No import circle in the package: every import of every module, those inside functions and under
`if TYPE_CHECKING:` included, read with `ast` (nothing is imported), must form a graph without a cycle.

An import inside a function hides a circle at load time but keeps the layers tangled: the config layer
would still depend on retrieval, two floors above it. So the walk does not skip them."""

import ast
from pathlib import Path

import networkx as nx

import groundtune

PACKAGE = "groundtune"
ROOT = Path(groundtune.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its __init__.py."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The dotted name a relative `from ... import` refers to, seen from `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `module` imports. `import a.b.c` and `from a.b import c` (c a submodule) are edges
    to a.b.c; `from a.b import name` (name not a submodule) is an edge to a.b. A module named here whose
    nearest known ancestor is meant when the name is an attribute, so the edge goes to that ancestor."""
    is_package = path.name == "__init__.py"

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(known(alias.name))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else known(source))
        elif (  # importlib.import_module("groundtune.x") with a literal name is an import too
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets.add(known(node.args[0].value))
    return {t for t in targets if t and t != module and (t == PACKAGE or t.startswith(PACKAGE + "."))}


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        graph.add_edges_from((module, target) for target in _imports(module, path, modules))
    return graph


def test_the_walk_sees_every_kind_of_import():
    """The walk must see the imports this test exists for, or an empty graph would pass: one at module level,
    one inside a function, a `from package import submodule`, and one by importlib with a literal name."""
    graph = import_graph()
    assert len(graph) > 50
    assert graph.has_edge("groundtune.train", "groundtune.methods.io")  # module level
    assert graph.has_edge("groundtune.train", "groundtune.models")  # inside a function
    assert graph.has_edge("groundtune.config", "groundtune.methods")  # `from groundtune import methods`
    assert graph.has_edge("groundtune", "groundtune.api")  # import_module("groundtune.api")


def test_relative_imports_resolve():
    assert _absolute("groundtune.a.c", False, 1, "b") == "groundtune.a.b"
    assert _absolute("groundtune.a", True, 1, "b") == "groundtune.a.b"
    assert _absolute("groundtune.a.c", False, 2, None) == "groundtune"


def test_no_import_circle():
    graph = import_graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    described = []
    for circle in circles:
        cycle = nx.find_cycle(graph.subgraph(circle))
        described.append(f"{len(circle)} modules tied together: {', '.join(circle)}\n  for one: "
                         + " -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
    assert not circles, "import circle(s):\n" + "\n".join(described)


def _floor(graph: nx.DiGraph, module: str) -> set[str]:
    """Every package module `module` needs, directly or through others."""
    return nx.descendants(graph, module)


def test_the_training_loop_stands_below_config_and_retrieval():
    """fit() is what every trainer runs, the rerankers' included: it imports only the data and methods layers
    and what they stand on, never the config layer or anything above it."""
    base = {"groundtune._lazy", "groundtune.arch", "groundtune.errors", "groundtune.fileio", "groundtune.models", "groundtune.plots",
            "groundtune.version"}
    above = {m for m in _floor(import_graph(), "groundtune.train")
             if m not in base and not m.startswith(("groundtune.data", "groundtune.methods"))}
    assert not above, f"groundtune.train imports {sorted(above)}"


def test_the_config_layer_reads_retrieval_only_through_its_pipeline_names():
    retrieval = {m for m in _floor(import_graph(), "groundtune.config") if m.startswith("groundtune.retrieval")}
    assert retrieval == {"groundtune.retrieval.pipelines"}
