"""Shared pytest set-up: what strict notebook checks must not depend on.

Two things are settled here; the other machine-dependent output (timings, addresses,
devices, float digits) is masked by the regexes in tests/nbval_sanitize.cfg.

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

import sys
from pathlib import Path

from nbval.plugin import IPyNbFile

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
