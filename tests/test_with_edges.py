"""benchmarks/with_edges.py: the world's places end where it is told, in the script it runs."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "with_edges.py"
PROBE = """
from minillava import toyworld
o = toyworld.Obj("circle", "red", "small", (0.36, 0.36, 0.40, 0.40))   # centre (0.38, 0.38)
print(toyworld.PLACE_EDGES, toyworld.position_words(o))
"""


def run(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True)


def test_halves_move_an_object_near_the_middle_into_a_corner(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    assert run("0.5", str(probe)).stdout.strip() == "(0.5, 0.5) in the top left"
    assert subprocess.run([sys.executable, str(probe)], capture_output=True, text=True).stdout.strip().endswith(
        "in the centre")   # the world as shipped: thirds


def test_a_bad_edge_is_refused_in_one_line():
    for edge in ("0.7", "half"):
        result = run(edge, "-m", "minillava.cli")
        assert result.returncode != 0 and result.stderr.strip().startswith("usage: with_edges.py")
