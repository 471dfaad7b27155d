"""The shape of the package, checked on its source: no import circles between bincount's modules
(imports inside functions count too), no module imports another's private names, and argparse lives
only in the command-line package."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import bincount

SRC = Path(bincount.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache  # parsed once per session: the tests call it per module
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in SRC.rglob("*.py")}


def imports(tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every bincount import anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("bincount")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bincount"):
            names = [a.name for a in node.names]
            found.append((node.module, names))
            found += [(f"{node.module}.{n}", []) for n in names if f"{node.module}.{n}" in known]
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    edges = {}
    for name, tree in trees.items():
        targets = {m for m, _ in imports(tree, known) if m in known and m != name}
        edges[name] = {t for t in targets if not name.startswith(t + ".")}  # a package's own __init__ is no circle
    return edges


def test_no_import_circles():
    edges = graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_check_sees_a_circle(tmp_path):
    a = ast.parse("from bincount.b import x")
    b = ast.parse("def f():\n    from bincount.a import y")
    known = {"bincount.a", "bincount.b"}
    assert imports(a, known) == [("bincount.b", ["x"])] and imports(b, known) == [("bincount.a", ["y"])]


def test_no_module_imports_another_ones_private_names():
    known = set(modules())
    private = [
        f"{name}: {module}.{n}"
        for name, tree in modules().items()
        for module, names in imports(tree, known)
        for n in names
        if n.startswith("_") and module != name
    ]
    assert not private, private


def test_argparse_only_in_the_command_line_package():
    users = [
        name
        for name, tree in modules().items()
        if any(isinstance(n, ast.Import) and any(a.name == "argparse" for a in n.names) for n in ast.walk(tree))
    ]
    assert users and all(u == "bincount.cli" or u.startswith("bincount.cli.") for u in users), users


def test_the_library_never_reads_the_checkout():
    """bincount.paths (the checkout's root) is for tests and benchmarks; an installed bincount has no checkout."""
    users = [
        name
        for name, tree in modules().items()
        for module, _ in imports(tree, set(modules()))
        if module == "bincount.paths" and name != "bincount.paths"
    ]
    assert users == []
