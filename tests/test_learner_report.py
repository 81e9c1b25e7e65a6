"""A learner's failing check reads clean: the exercise and checker named, no colour codes, a cell
number that can be found in the notebook (conftest.py, ``learner_report``).

pytest runs, in a subprocess, on a small exercise notebook whose projector is wrong, as a learner
runs ``pytest --nbval exercises/03_architecture.ipynb``.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat import v4

ROOT = Path(__file__).resolve().parent.parent
WRONG_PROJECTOR = """\
class Projector(nn.Module):   # one Linear layer where the check wants two
    def __init__(self, vision_dim, text_dim):
        super().__init__()
        self.linear = nn.Linear(vision_dim, text_dim)

    def forward(self, x):
        return self.linear(x)"""


def exercise(folder: Path) -> Path:
    stdout = lambda text: [v4.new_output("stream", name="stdout", text=text)]   # noqa: E731
    nb = v4.new_notebook(cells=[
        v4.new_markdown_cell("# Exercise 3"),
        v4.new_code_cell("import torch\nfrom torch import nn\n\nfrom minillava.course import grading", execution_count=1),
        v4.new_code_cell('print("stored")', execution_count=2, outputs=stdout("other\n")),   # prints otherwise
        v4.new_markdown_cell("## 1. The projector\n\nTwo Linear layers with a GELU between."),
        v4.new_code_cell(WRONG_PROJECTOR, execution_count=3),
        v4.new_code_cell("grading.check_projector(Projector)", execution_count=4,
                         outputs=stdout("✅ projector: all checks passed\n")),
    ], metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    path = folder / "exercises" / "03_architecture.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    return path


def test_a_failing_check_names_the_exercise_and_checker_and_a_cell_to_find(tmp_path):
    path = exercise(tmp_path)
    # -c: the repository's settings (nbval, sanitizer); -p conftest: its conftest.py, which pytest
    # would load by itself for a notebook inside the repository.
    run = subprocess.run([sys.executable, "-m", "pytest", "-c", "pyproject.toml", "-p", "conftest", "--color=no",
                          str(path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    assert run.returncode == 1, report
    assert "\x1b[" not in report   # IPython colours the kernel's traceback; none of it is left
    headline = "exercise 03_architecture: check_projector failed: GradingError: projector: Linear layer shapes is wrong"
    assert headline in report and "hint: two nn.Linear layers" in report
    assert re.search(r"^FAILED .*Cell 3 - exercise 03_architecture: check_projector", report, re.M)   # the summary
    assert "exercise 03_architecture: a cell printed other output than the notebook stores" in report

    # The cell each report points at is the one that failed, counted as a learner counts.
    code = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    places = re.findall(r'code cell (\d+) of (\d+) in 03_architecture\.ipynb \(pytest\'s "Cell (\d+)" counts from 0\)'
                        r', under the heading "([^"]*)"', report.split("short test summary info")[0])
    # (the failure sections only: under CI=true pytest's summary repeats each message in full)
    assert [(code[int(n) - 1], int(of), int(nbval), heading) for n, of, nbval, heading in places] == [
        ('print("stored")', 4, 1, "Exercise 3"),
        ("grading.check_projector(Projector)", 4, 3, "1. The projector"),
    ]
