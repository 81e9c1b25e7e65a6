"""Toy-world speed: scenes sampled and rendered per second, against the course's target.

Every chapter, the data engine and the backbones' pretraining draw thousands of toy
scenes, so sampling and drawing one must stay cheap: the target is 1,000 scenes sampled
and rendered at 64 x 64 in under 10 seconds on one CPU core (a unit test once checked this;
speed belongs here, where a slow machine does not fail the test suite). Prints the best of
``--repeats`` runs and whether it meets the target; exits 1 if it does not.

    python benchmarks/bench_toyworld.py [--scenes 1000] [--size 64] [--repeats 3]
"""

import argparse
import sys
import time

from minillava.toyworld import make_scene, render

TARGET_SECONDS_PER_1000 = 10.0


def seconds(scenes: int, size: int) -> float:
    """Wall-clock seconds to sample and render ``scenes`` base scenes (seeds 0, 1, ...)."""
    start = time.perf_counter()
    for seed in range(scenes):
        render(make_scene(seed), size, size)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64, help="rendered height and width in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    best = min(seconds(args.scenes, args.size) for _ in range(args.repeats))
    per_1000 = best / args.scenes * 1000
    meets = per_1000 < TARGET_SECONDS_PER_1000
    print(f"{args.scenes} scenes at {args.size} px: {best:.2f} s ({args.scenes / best:,.0f} scenes/s), "
          f"{per_1000:.2f} s per 1,000 (target < {TARGET_SECONDS_PER_1000:.0f} s: {'met' if meets else 'MISSED'})")
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
