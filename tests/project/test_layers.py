"""The code's shape: dependencies point one way (web -> policies -> deletion -> inventory ->
registry), and no module imports, even inside a function, one that imports it back."""

import ast
from pathlib import Path

import hubmgr

ROOT = Path(hubmgr.__file__).parent
LAYERS = {"registry": 0, "inventory": 1, "deletion": 2, "policies": 3, "web": 4}
# Below every layer: the package itself (the Celery app) and plain helpers of its own.
COMMON = {"hubmgr", "hubmgr.actors", "hubmgr.celery", "hubmgr.patterns", "hubmgr.units"}
# Above every layer: the development stack that `make run` starts (web's launch command).
TOOLS = {"hubmgr.devstack"}


def modules() -> dict:
    found = {}
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = ["hubmgr", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known) -> set:
    """The hubmgr modules ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                         for a in node.names)
    return {m for m in found if m in known and m != name}


def graph() -> dict:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(name):
    parts = name.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_module_imports_one_of_a_higher_layer():
    wrong = []
    for name, targets in graph().items():
        if layer(name) is None:
            continue
        for target in targets:
            allowed = (target in COMMON or (target in TOOLS and layer(name) == LAYERS["web"])
                       or (layer(target) is not None and layer(target) <= layer(name)))
            if not allowed:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def cycles(edges) -> list:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert cycles(graph()) == []


def test_the_checks_see_a_circle_and_a_layer_inversion():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = graph()
    assert "hubmgr.inventory.models" in edges["hubmgr.inventory.catalog.store"]
    assert "hubmgr.registry.names" in edges["hubmgr.web.lookups"]
    assert layer("hubmgr.web.api") > layer("hubmgr.inventory.catalog.queries")
