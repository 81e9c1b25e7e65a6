"""A known-right answer for every graded checker: the solution notebooks' own code.

:func:`right_answers` returns ``(RIGHT, CHAPTER)``: ``RIGHT`` maps a checker's name
(``"projector"`` for ``grading.check_projector``) to the implementation that a solution
notebook hands to it, in the order the chapters call them; ``CHAPTER`` maps the name to its
notebook (``"03_architecture"``). The implementation is
taken from the notebook itself, not copied here: the definition (``def`` or ``class``) of
the name passed to ``grading.check_<name>(...)``, from the last cell before the graded one
that defines it, run after the chapter's setup cell's imports and constants. So a change to
a solution changes the answer tested, and tests/test_grading.py requires every checker to
accept it without a notebook run.
"""

import ast
import functools
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
GRADED_CALL = re.compile(r"\bgrading\.check_(\w+)\(\s*(\w+)\s*\)")
SETUP = "from minillava.course import grading"   # the line that marks a chapter's setup cell


def _parsed(source: str) -> ast.Module | None:
    """A cell's syntax tree; None for a cell Python cannot read (an IPython ``%pip`` line)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _run(nodes: list[ast.stmt], namespace: dict) -> None:
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "<solution notebook>", "exec"), namespace)


def _definition(trees: list[ast.Module | None], name: str, path: Path) -> ast.stmt:
    """The last top-level ``def name`` or ``class name`` in ``trees``."""
    for tree in reversed(trees):
        for node in reversed(tree.body if tree else []):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                return node
    raise LookupError(f"{path.name}: no cell before the graded one defines {name}")


def solution_answers(path: Path) -> dict[str, object]:
    """{checker name: the implementation the notebook at ``path`` passes to it}."""
    cells = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    trees = [_parsed(source) for source in cells]
    namespace: dict = {}
    setup = next(tree for source, tree in zip(cells, trees) if SETUP in source)
    # Its imports and constants; not its prints and calls, which set up the notebook, not the answers.
    _run([node for node in setup.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign))], namespace)
    answers = {}
    for index, source in enumerate(cells):
        for name, argument in GRADED_CALL.findall(source):
            _run([_definition(trees[:index], argument, path)], namespace)
            answers[name] = namespace[argument]
    return answers


@functools.cache
def right_answers() -> tuple[dict[str, object], dict[str, str]]:
    """``(RIGHT, CHAPTER)``, read once, when a test first asks: a broken notebook fails those tests only."""
    by_chapter = {path.stem: solution_answers(path) for path in sorted((ROOT / "solutions").glob("*.ipynb"))}
    right = {name: answer for answers in by_chapter.values() for name, answer in answers.items()}
    chapter = {name: stem for stem, answers in by_chapter.items() for name in answers}
    return right, chapter
