"""The package's shape: no import loops (counting imports inside functions), no module over 500 lines.

An import placed inside a function to dodge a loop still is a loop: the two modules cannot be
read, tested or understood one without the other. So the graph below counts every import
statement wherever it stands, and the package must have none that leads back to where it
started.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minillava"
MAX_LINES = 500


def module_name(file: Path) -> str:
    """minillava/eval/pope.py -> minillava.eval.pope; a package's __init__.py -> the package."""
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(file): file for file in sorted(PACKAGE.rglob("*.py"))}


def imports(file: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``file`` imports anywhere in its body, functions included."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # a relative import: count the dots up from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known   # `from pkg import module`
            found.update(submodules)
            if len(submodules) < len(node.names):   # some names are the package's own, not its modules
                found.add(base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(file, name, set(known)) for name, file in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def room(name: str) -> str:
    """The part of the package a module belongs to: its folder (minillava.eval), or itself at the top."""
    return ".".join(name.split(".")[:2])


def test_the_package_has_no_import_loops():
    loops = cycles(import_graph())
    assert not loops, "import loops (imports inside functions count too): " + "; ".join(" <-> ".join(c) for c in loops)


def test_the_rooms_import_each_other_in_one_direction():
    """No loop between folders either (data -> eval -> data), even through different modules."""
    rooms: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        rooms.setdefault(room(name), set()).update(room(t) for t in targets if room(t) != room(name))
    loops = cycles(rooms)
    assert not loops, "rooms that import each other: " + "; ".join(" <-> ".join(c) for c in loops)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_500_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by idea (limit {MAX_LINES})"


def test_the_loop_finder_finds_a_loop_hidden_inside_a_function(tmp_path):
    """The check above can fail: two modules that import each other, one of them late."""
    package = tmp_path / "minillava"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from minillava.b import f\n")
    (package / "b.py").write_text("def f():\n    from minillava import a   # late, to dodge the loop\n")
    (package / "c.py").write_text("from . import a\n")
    names = {file: file.relative_to(tmp_path).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
             for file in package.rglob("*.py")}
    graph = {name: imports(file, name, set(names.values())) for file, name in names.items()}
    assert graph["minillava.c"] == {"minillava.a"}   # a relative import resolves
    assert cycles(graph) == [["minillava.a", "minillava.b"]]
