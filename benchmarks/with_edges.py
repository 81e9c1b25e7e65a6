"""Run a script or module in a toy world whose places end elsewhere: toyworld.PLACE_EDGES = (E, 1 - E).

An experiment of issue 19, not a mode of minillava: the world's places are thirds of the canvas
(PLACE_EDGES = (1/3, 2/3)); with E = 0.5 they are halves, four places that nest in the 4 x 4 token
grid of both toy towers. Everything that names a place (captions, questions, the evaluation's
answers) reads PLACE_EDGES when it runs, so patching it in this process changes the whole world:

    python benchmarks/with_edges.py 0.5 benchmarks/lm_slots.py --layout grid_cells ...
    python benchmarks/with_edges.py 0.5 -m minillava.cli pipeline --out OUT ...

Give such a pipeline its own MINILLAVA_CACHE: the data cache does not know about the edges.
"""

import os
import runpy
import sys

from minillava import toyworld


def main(argv: list[str]) -> None:
    try:
        edge = float(argv[0])
    except (IndexError, ValueError):
        edge = None
    if len(argv) < 2 or edge is None or not 0 < edge <= 0.5:
        raise SystemExit("usage: with_edges.py E (0 < E <= 0.5) SCRIPT.py [args] | -m MODULE [args]")
    toyworld.PLACE_EDGES = (edge, 1 - edge)
    if argv[1] == "-m":
        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv[1:]
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
        runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
