"""Execute notebooks top to bottom and save them with their fresh outputs.

Strict ``pytest --nbval`` compares every cell with its stored output, so a notebook must be
saved after a real, clean run. This is that run: a new kernel of the Python running this
script (not whatever "python3" kernelspec happens to be installed), started in the
notebook's own folder, importing ``minillava`` from this checkout.

    python tools/run_notebook.py notebooks/01_intro.ipynb [...]   # run and save these
    python tools/run_notebook.py --all   # notebooks/ and solutions/, then regenerate exercises/

A failing cell stops the run with its traceback; that notebook is left as it was.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from nbclient import NotebookClient

import make_exercises  # sibling script: tools/ is on sys.path when this runs as a script
from emulate.arithmetic import DTYPES as EMULATIONS  # tools/emulate/: the arithmetic of other machines

ROOT = Path(__file__).resolve().parent.parent


def prepare_kernel_environment() -> None:
    """Set what kernels started from this process inherit.

    - PYTHONPATH: this checkout first, so notebooks exercise the code next to them even
      when the package is not pip-installed, or when another copy is.
    - OMP_NUM_THREADS=1: the course's toy models are small, so a second thread buys little,
      and on a busy 2-core machine competing threads made one training step 30x slower.
      One thread also fixes the order of float reductions, so stored outputs reproduce.
    - MINILLAVA_EMULATE=bf16|fp16|fp64 (optional): the kernels compute every float32 matrix
      product in that precision, as another machine would (tools/emulate/arithmetic.py), to
      prove that the stored outputs hold there too.
    """
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    wanted = [str(ROOT)]
    emulate = os.environ.get("MINILLAVA_EMULATE")
    if emulate:
        if emulate not in EMULATIONS:
            raise SystemExit(f"MINILLAVA_EMULATE must be one of {', '.join(EMULATIONS)}, got {emulate!r}")
        wanted.insert(0, str(ROOT / "tools" / "emulate"))   # its sitecustomize.py turns the emulation on
    os.environ["PYTHONPATH"] = os.pathsep.join(wanted + [p for p in paths if p not in wanted])
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class ThisPythonKernel(AsyncKernelManager):
    """Kernel manager that always starts ipykernel under ``sys.executable``."""

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3 (ipykernel)",
            language="python",
        )


def client(nb: nbformat.NotebookNode, cwd: Path, timeout: int, **options) -> NotebookClient:
    """An nbclient runner for ``nb`` in the folder ``cwd``, with ``timeout`` seconds per cell."""
    prepare_kernel_environment()
    return NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        kernel_manager_class=ThisPythonKernel,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,  # per-cell timestamps would make every run a diff in git
        **options,
    )


def run(path: Path, timeout: int) -> float:
    """Execute the notebook at ``path``, save it in place, and return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client(nb, path.parent, timeout).execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="run notebooks/ and solutions/, then make exercises")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    args = parser.parse_args(argv)
    paths = list(args.notebooks)
    if args.all:
        paths += sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
    if not paths and not args.all:
        parser.error("name notebooks to run, or pass --all")
    for path in paths:
        print(f"{path}: {run(path, args.timeout):.1f} s", flush=True)
    if args.all:
        make_exercises.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
