"""Generate exercises/NN_name.ipynb from solutions/NN_name.ipynb.

In solution code cells, each region

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the indentation of the
BEGIN line. Every other cell keeps its stored outputs: they are the expected outputs that
``pytest --nbval exercises/NN_name.ipynb`` grades a learner's run against. A cell that
held a solution loses its outputs and execution count (they came from solution code);
nbval does not compare a cell stored that way, so the learner's run of it passes.

    python tools/make_exercises.py            # (re)write exercises/
    python tools/make_exercises.py --check    # exit 1 listing stale, missing or extra exercises
"""

import argparse
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


def strip_solutions(source: str) -> tuple[str, bool]:
    """Return ``source`` with its solution regions stubbed out, and whether it had any."""
    out: list[str] = []
    inside = found = False
    # split/join on "\n" gives back the source's own ending, with or without a final newline
    for number, line in enumerate(source.split("\n"), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN} inside another solution region")
            inside = found = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without a {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} is never closed by {END}")
    return "\n".join(out), found


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook for one solution notebook (which is left untouched)."""
    exercise = copy.deepcopy(solution)
    for index, cell in enumerate(exercise.cells):
        if cell.cell_type != "code":
            continue
        try:
            cell.source, found = strip_solutions(cell.source)
        except ValueError as err:
            raise ValueError(f"cell {index}: {err}") from None
        if found:
            cell.outputs, cell.execution_count = [], None
    return exercise


def render(nb: nbformat.NotebookNode) -> str:
    """The exact file text, as ``nbformat.write`` would store it."""
    return nbformat.writes(nb) + "\n"


def plan(solutions: Path, exercises: Path) -> dict[Path, str]:
    """What every exercise file should contain, keyed by its path."""
    return {
        exercises / path.name: render(make_exercise(nbformat.read(path, as_version=4)))
        for path in sorted(solutions.glob("*.ipynb"))
    }


def problems(solutions: Path, exercises: Path) -> list[str]:
    """One line per exercise that differs from what would be generated."""
    wanted = plan(solutions, exercises)
    found = sorted(exercises.glob("*.ipynb"))
    report = [f"extra (no solution): {path}" for path in found if path not in wanted]
    for path, text in wanted.items():
        if not path.exists():
            report.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            report.append(f"stale: {path}")
    return report


def write(solutions: Path, exercises: Path) -> None:
    """Bring ``exercises`` in line with ``solutions``, saying what changed."""
    wanted = plan(solutions, exercises)
    exercises.mkdir(parents=True, exist_ok=True)
    for path in sorted(exercises.glob("*.ipynb")):
        if path not in wanted:  # exercises/ is generated: an orphan has lost its solution
            path.unlink()
            print(f"removed {path}")
    for path, text in wanted.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale exercises; exit 1 if any")
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    parser.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    args = parser.parse_args(argv)
    if not args.check:
        write(args.solutions, args.exercises)
        return 0
    report = problems(args.solutions, args.exercises)
    for line in report:
        print(line)
    if report:
        print("run: python tools/make_exercises.py")
        return 1
    print("exercises are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
