"""The course machinery: exercise generation, sanitising, and every solution/exercise pair.

The graded checks themselves are tested in tests/test_grading.py.

The first half tests the tools on a small synthetic chapter, so it means something even
while solutions/ is empty; the second half is parametrised over solutions/*.ipynb.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from nbformat import v4
from nbval.plugin import get_sanitize_patterns

import make_exercises
import pynb
import run_notebook
from make_exercises import BEGIN, END

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
GRADED = re.compile(r"\bgrading\.check_(\w+)\s*\(")
CELL_TIMEOUT = 120  # seconds; exercises are small


# ---------------------------------------------------------------- helpers


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def graded_cell_index(nb) -> int | None:
    """Index (among all cells) of the first code cell that calls ``grading.check_*``."""
    return next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and GRADED.search(cell.source)), None)


def first_error(path: Path) -> tuple[int, str] | None:
    """Run the notebook in its folder until a cell raises; that cell's index and exception name."""
    nb = nbformat.read(path, as_version=4)
    runner = run_notebook.client(nb, path.parent, CELL_TIMEOUT, shutdown_kernel="immediate")  # a throwaway kernel
    with runner.setup_kernel():
        for index, cell in enumerate(nb.cells):
            try:
                runner.execute_cell(cell, index)
            except CellExecutionError as err:
                return index, err.ename
    return None


def region_lines(nb) -> tuple[set[str], set[str]]:
    """Stripped non-blank code lines inside solution regions, and those outside any region."""
    inside, outside = set(), set()
    for cell in code_cells(nb):
        in_region = False
        for line in cell.source.splitlines():
            text = line.strip()
            if text in (BEGIN, END):
                in_region = text == BEGIN
            elif text:
                (inside if in_region else outside).add(text)
    return inside, outside


def sanitize(text: str) -> str:
    """Apply tests/nbval_sanitize.cfg exactly as nbval does."""
    for regex, replace in get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


# ---------------------------------------------------------------- a synthetic chapter

SOLUTION_CELL = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    result = x * 2
    return result
    ### END SOLUTION'''

EXERCISE_CELL = '''def double(x):
    """Twice x."""
    # YOUR CODE HERE
    raise NotImplementedError()'''


def synthetic_solution() -> nbformat.NotebookNode:
    """A chapter with one solution region, its graded cell, and machine-dependent output."""
    sources = [
        "# NBVAL_IGNORE_OUTPUT\nimport sys, time\nfrom pathlib import Path\nfrom minillava.course import grading\nprint(Path.cwd().name)",
        # a notebook-local checker, attached to the module where real checkers live
        '@grading.check("double")\ndef check_double(double):\n'
        '    grading.assert_equal(double(21), 42, what="double(21)", hint="multiply by two")\n'
        "grading.check_double = check_double",
        SOLUTION_CELL,
        'print(f"took {time.perf_counter():.2f} s", object())\nprint(time.time(), file=sys.stderr)',
        "grading.check_double(double)",
        "double(21)",
    ]
    nb = v4.new_notebook(metadata={"kernelspec": pynb.KERNELSPEC})
    nb.cells = [v4.new_markdown_cell("# A tiny chapter", id="intro")]
    nb.cells += [v4.new_code_cell(source, id=f"code-{i}") for i, source in enumerate(sources)]
    return nb


def with_fake_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """As if run: every code cell gets an execution count and one line of output."""
    for count, cell in enumerate(code_cells(nb), 1):
        cell.execution_count = count
        cell.outputs = [v4.new_output("stream", name="stdout", text=f"output {count}\n")]
    return nb


# ---------------------------------------------------------------- the generator


def test_regions_become_stubs_at_their_indentation():
    source = (
        "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\n"
        "class K:\n    def f(self):\n        ### BEGIN SOLUTION\n        return 3\n        ### END SOLUTION\n"
        "print(a)"
    )
    stubbed = (
        "a = 1\n# YOUR CODE HERE\nraise NotImplementedError()\n"
        "class K:\n    def f(self):\n        # YOUR CODE HERE\n        raise NotImplementedError()\n"
        "print(a)"
    )
    assert make_exercises.strip_solutions(source) == (stubbed, True)


@pytest.mark.parametrize("source", ["x = 1", "x = 1\n", "def f():\n    return 2\n\n", ""])
def test_code_without_regions_is_untouched(source):
    assert make_exercises.strip_solutions(source) == (source, False)


@pytest.mark.parametrize(
    "source, problem",
    [
        (f"{BEGIN}\nx = 1", "never closed"),
        (f"x = 1\n{END}", "without"),
        (f"{BEGIN}\n{BEGIN}\nx = 1\n{END}", "inside another"),
    ],
)
def test_broken_markers_are_errors(source, problem):
    with pytest.raises(ValueError, match=problem):
        make_exercises.strip_solutions(source)


def test_exercise_keeps_outputs_except_in_solution_cells():
    solution = with_fake_outputs(synthetic_solution())
    exercise = make_exercises.make_exercise(solution)
    assert len(exercise.cells) == len(solution.cells)
    for sol, ex in zip(solution.cells, exercise.cells):
        if sol.source == SOLUTION_CELL:
            assert (ex.source, ex.outputs, ex.execution_count) == (EXERCISE_CELL, [], None)
            assert sol.outputs, "the solution notebook itself must not be modified"
        else:
            assert ex == sol


def test_generator_writes_checks_and_is_idempotent(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(with_fake_outputs(synthetic_solution()), solutions / "01_tiny.ipynb")
    dirs = ["--solutions", str(solutions), "--exercises", str(exercises)]

    assert make_exercises.main(["--check", *dirs]) == 1
    assert "missing:" in capsys.readouterr().out
    make_exercises.main(dirs)
    written = (exercises / "01_tiny.ipynb").read_bytes()
    assert make_exercises.main(["--check", *dirs]) == 0
    capsys.readouterr()
    make_exercises.main(dirs)
    assert capsys.readouterr().out == ""  # nothing to rewrite
    assert (exercises / "01_tiny.ipynb").read_bytes() == written

    (exercises / "99_orphan.ipynb").write_bytes(written)
    edited = nbformat.read(solutions / "01_tiny.ipynb", as_version=4)
    edited.cells[0].source = "# A renamed chapter"
    nbformat.write(edited, solutions / "01_tiny.ipynb")
    assert make_exercises.main(["--check", *dirs]) == 1
    report = capsys.readouterr().out
    assert "stale:" in report and "01_tiny" in report
    assert "extra (no solution):" in report and "99_orphan" in report
    make_exercises.main(dirs)
    assert sorted(p.name for p in exercises.iterdir()) == ["01_tiny.ipynb"]
    assert make_exercises.main(["--check", *dirs]) == 0


# ---------------------------------------------------------------- the synthetic chapter, executed


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory):
    """The synthetic chapter run by tools/run_notebook.py, and its generated exercise."""
    root = tmp_path_factory.mktemp("course")
    solutions, exercises = root / "solutions", root / "exercises"
    solutions.mkdir()
    nbformat.write(synthetic_solution(), solutions / "01_tiny.ipynb")
    run_notebook.run(solutions / "01_tiny.ipynb", CELL_TIMEOUT)
    make_exercises.main(["--solutions", str(solutions), "--exercises", str(exercises)])
    return solutions / "01_tiny.ipynb", exercises / "01_tiny.ipynb"


def test_run_notebook_stores_real_outputs(synthetic_pair):
    nb = nbformat.read(synthetic_pair[0], as_version=4)
    outputs = [cell.outputs for cell in code_cells(nb)]
    assert outputs[0][0].text == "solutions\n"  # ran in the notebook's own folder
    assert outputs[4][0].text == "✅ double: all checks passed\n"
    assert outputs[5][0].data["text/plain"] == "42"
    assert [cell.execution_count for cell in code_cells(nb)] == [1, 2, 3, 4, 5, 6]


def test_unfilled_exercise_fails_at_its_graded_cell(synthetic_pair):
    exercise = synthetic_pair[1]
    assert first_error(exercise) == (graded_cell_index(nbformat.read(exercise, as_version=4)), "NotImplementedError")


def test_filled_exercise_passes_strict_nbval(synthetic_pair, tmp_path):
    """A learner's correct answer passes, although timings, addresses and stderr differ."""
    exercise = nbformat.read(synthetic_pair[1], as_version=4)
    for cell in code_cells(exercise):
        cell.source = cell.source.replace("# YOUR CODE HERE\n    raise NotImplementedError()", "return x + x")
    nbformat.write(exercise, tmp_path / "filled.ipynb")
    # the notebook lies outside the checkout, so load the root conftest (the stderr hook) explicitly
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest"),
        *("--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg")),
        str(tmp_path / "filled.ipynb"),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=10 * CELL_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout  # one per code cell


# ---------------------------------------------------------------- sanitising


@pytest.mark.parametrize(
    "one_machine, another",
    [
        ("took 12.3 s", "took 0.41 s"),
        ("epoch 1: 45ms, 1.5 min left", "epoch 1: 3ms, 12 min left"),
        ("elapsed 0:00:12", "elapsed 1:02:03"),
        ("812.4 tokens/s, 3.2 it/s", "12 tokens/s, 10.5 it/s"),
        (" 50%|█████     | 5/10 [00:01<00:01,  4.98it/s]", " 50%|█████     | 5/10 [00:03<00:03,  1.50it/s]"),
        ("<Projector object at 0x7f3a2c1b9d90>", "<Projector object at 0x10c2e5f40>"),
        ("tensor([1., 2.])", "tensor([1., 2.], device='cuda:0')"),
        ("tensor(3, grad_fn=<SumBackward0>)", "tensor(3, device='mps:0', grad_fn=<SumBackward0>)"),
        ("device(type='cpu')", "device(type='cuda', index=0)"),
        ("running on cpu", "running on cuda"),
        ("loss 0.693147180", "loss 0.69314"),
        ("lr 1.2345678e-05", "lr 1.23451e-05"),
    ],
)
def test_sanitizer_masks_what_depends_on_the_machine(one_machine, another):
    assert sanitize(one_machine) == sanitize(another)


@pytest.mark.parametrize(
    "one, other",
    [
        ("loss 0.6931", "loss 0.6932"),
        ("tensor([1., 2.])", "tensor([1., 3.])"),
        ("torch.Size([2, 5, 64])", "torch.Size([2, 5, 32])"),
        ("10 steps, 4 heads", "11 steps, 4 heads"),
        ("✅ projector: all checks passed", "✅ splice: all checks passed"),
    ],
)
def test_sanitizer_keeps_what_matters(one, other):
    assert sanitize(one) != sanitize(other)


def test_sanitize_file_parses_every_pair():
    # nbval silently drops a regex: line not directly followed by a replace: line
    text = (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    assert len(get_sanitize_patterns(text)) == len(re.findall(r"(?m)^regex: ", text))


# ---------------------------------------------------------------- pynb


def test_pynb_builds_cells_deterministically():
    text = "import os\n\n# %% [markdown]\n# # Title\n#\n# Prose.\n\n# %%\ndef f():\n\n    return 1\n"
    nb = pynb.parse(text)
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        ("code", "import os"),
        ("markdown", "# Title\n\nProse."),
        ("code", "def f():\n\n    return 1"),
    ]
    assert nb.metadata.kernelspec.name == "python3"
    assert nbformat.writes(pynb.parse(text)) == nbformat.writes(nb)


@pytest.mark.parametrize("text, line", [("# %% [markdown]\nnot a comment", 2), ("x = 1\n# %% tags=['x']", 2)])
def test_pynb_rejects_what_it_does_not_understand(text, line):
    with pytest.raises(ValueError, match=f"^line {line}:"):
        pynb.parse(text)


# ---------------------------------------------------------------- the real course


def test_exercises_are_up_to_date():
    assert make_exercises.problems(ROOT / "solutions", ROOT / "exercises") == [], "run: python tools/make_exercises.py"


def exercise_of(solution: Path) -> Path:
    return ROOT / "exercises" / solution.name


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_no_solution_leaks(solution):
    inside, outside = region_lines(nbformat.read(solution, as_version=4))
    exercise = nbformat.read(exercise_of(solution), as_version=4)
    for cell in exercise.cells:
        assert BEGIN not in cell.source and END not in cell.source
    exercise_lines = {line.strip() for cell in code_cells(exercise) for line in cell.source.splitlines()}
    assert not (inside - outside) & exercise_lines


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_exercise_has_a_graded_cell(solution):
    exercise = nbformat.read(exercise_of(solution), as_version=4)
    assert graded_cell_index(exercise) is not None, "no code cell calls grading.check_<name>(...)"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_unfilled_exercise_fails_at_first_graded_cell(solution):
    exercise = exercise_of(solution)
    graded = graded_cell_index(nbformat.read(exercise, as_version=4))
    error = first_error(exercise)
    assert error == (graded, "NotImplementedError"), (
        f"expected the first error to be NotImplementedError in cell {graded}, the first graded cell; got {error}. "
        "Keep solution regions inside functions, so that an unfilled stub only fails when it is checked."
    )
