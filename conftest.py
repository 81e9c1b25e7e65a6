"""Shared pytest set-up: what strict notebook checks must not depend on.

Two things are settled here; the other machine-dependent output (timings, addresses,
devices, float digits) is masked by the regexes in tests/nbval_sanitize.cfg. A third is
for the learner: a failing notebook cell reads clean (``pytest_runtest_makereport``).

- stderr is not compared. Warnings and console progress bars go to stderr and differ
  between library versions and machines (one ``warnings.warn`` would fail a strict cell).
  nbval keys a stream output by its name ("stdout"/"stderr") and skips every key listed
  in its notebook collector's ``skip_compare`` tuple, so adding "stderr" there drops
  stderr from both the stored and the fresh outputs. A cell still fails if it raises.
- Tests and notebook kernels import ``minillava`` from this checkout, installed or not,
  and run torch on one thread (see tools/run_notebook.py, prepare_kernel_environment):
  nbval starts kernels with this process's environment.

It lives at the repository root so that pytest loads it for every path below, including a
learner's ``pytest --nbval exercises/03_architecture.ipynb``.
"""

import re
import sys
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, NbCellError

# Tests import this checkout's minillava, and the course tools, which are scripts in tools/.
ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from run_notebook import prepare_kernel_environment  # noqa: E402

prepare_kernel_environment()  # also one torch thread here: set before any test imports torch


def pytest_collection_modifyitems(items):
    """Add "stderr" to the skip list of every notebook nbval collected."""
    for notebook in {item.parent for item in items if isinstance(item.parent, IPyNbFile)}:
        if "stderr" not in notebook.skip_compare:
            notebook.skip_compare += ("stderr",)


# ---------------------------------------------------------------- a failing cell, as a learner reads it

# Terminal escapes: colours and cursor moves ("\x1b[31m"), and links ("\x1b]8;;URL\x1b\\").
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\))")
KIND = {"exercises": "exercise", "solutions": "solution", "notebooks": "chapter"}   # by folder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Replace nbval's report of a failing cell with :func:`learner_report`."""
    report = yield
    if report.failed and isinstance(item, IPyNbCell) and call.excinfo and isinstance(call.excinfo.value, NbCellError):
        report.longrepr = learner_report(item, call.excinfo.value)
    return report


def learner_report(item: IPyNbCell, error: NbCellError) -> str:
    """Which notebook and checker failed and why (first line, also pytest's summary), where the cell
    is in terms Jupyter shows (its place among the code cells, the heading above it, its source),
    then the kernel's traceback or nbval's output diff. No colour codes: IPython colours the
    kernel's traceback, which reads as noise wherever the report is not a colour terminal."""
    notebook = Path(item.path)
    checker = re.search(r"\b(check_\w+)\(", item.cell.source)
    details = ANSI.sub("", error.inner_traceback or "").strip()
    # nbval runs cells without history, so IPython numbers every frame of a notebook cell "In[1]"
    details = re.sub(r"^Cell In\[\d+\], line", "A notebook cell, line", details, flags=re.M)
    if "outputs differ" in str(error):
        why = "printed other output than the notebook stores"
    else:   # the exception's own line, e.g. "GradingError: projector: Linear layer shapes is wrong"
        raised = re.findall(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*", details, re.M)
        why = f"failed: {raised[-1].rstrip(': ') if raised else error}"
        if raised and raised[-1].startswith("NotImplementedError"):
            why += " (fill in the # YOUR CODE HERE above first)"
    cells = item.parent.nb.cells
    code = [cell for cell in cells if cell.cell_type == "code"]
    index = next(i for i, cell in enumerate(cells) if cell is item.cell)
    above = [c.source for c in cells[:index] if c.cell_type == "markdown"]
    headings = [line.lstrip("#").strip() for source in above for line in source.splitlines() if line.startswith("#")]
    heading = headings[-1] if headings else "(none)"
    where = (f"It is code cell {item.cell_num + 1} of {len(code)} in {notebook.name} (pytest's "
             f'"Cell {item.cell_num}" counts from 0), under the heading "{heading}":')
    source = "\n".join("    " + line for line in item.cell.source.splitlines())
    return "\n".join([f"{KIND.get(notebook.parent.name, 'notebook')} {notebook.stem}: "
                      f"{checker.group(1) if checker else 'a cell'} {why}", "", where, source, "", details])

