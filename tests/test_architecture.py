"""The package's shape: no import cycle among its modules, and no module too long to hold in one's head.

Imports are read from the source (every ``import`` and ``from`` statement,
those inside functions included: a lazy import is still a dependency), so a
cycle fails here even when import order happens to hide it.
"""

import ast
from pathlib import Path

PACKAGE = "napari_focus_stack"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Lines a module may have.
MAX_LINES = 700
#: Modules over the limit today, each being split; remove a name once it is under.
KNOWN_LONG = set()
#: Cycles known today, each being broken; a cycle counts as known when every
#: module in it is one of these. Remove a group once its cycle is gone.
KNOWN_CYCLES = []


def known_cycle(component):
    """Whether every module of a cycle is in one known group (a package's submodules count as it)."""
    return any(all(any(m == k or m.startswith(k + ".") for k in group) for m in component) for group in KNOWN_CYCLES)


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported(name, path, known):
    """The package's modules that module ``name`` (at ``path``) imports, lazily or not."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from package import module`` imports the module; ``from module import name`` the module
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph():
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_import_graph_is_read_from_every_import():
    graph = import_graph()
    # a top-level relative import, a lazy one inside a function, and a package's re-export
    assert "napari_focus_stack.engine.warp" in graph["napari_focus_stack.engine.backend.base"]
    assert "napari_focus_stack.engine.backend" in graph["napari_focus_stack.engine.noise"]
    assert "napari_focus_stack.engine.align.frames" in graph["napari_focus_stack.engine.align"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_packages_modules():
    assert [c for c in cycles(import_graph()) if not known_cycle(c)] == []


def test_the_engine_has_no_import_cycle():
    engine = {
        n: {m for m in deps if m.startswith(f"{PACKAGE}.engine")}
        for n, deps in import_graph().items()
        if n.startswith(f"{PACKAGE}.engine")
    }
    assert cycles(engine) == []


def test_no_module_is_over_the_line_limit():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    long = {name for name, count in lengths.items() if count > MAX_LINES}
    assert long - KNOWN_LONG == set(), {name: lengths[name] for name in long - KNOWN_LONG}


def test_the_known_long_modules_are_still_long():
    # a module split below the limit leaves KNOWN_LONG, so it cannot grow back unnoticed
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name for name in KNOWN_LONG if lengths.get(name, 0) <= MAX_LINES} == set()
