"""AnyRes preprocessing speed: minillava's ImageProcessor vs transformers' LLaVA-NeXT one.

Both get the same N random RGB images of mixed sizes (thumbnails to 1600 px photos)
with LLaVA-1.6's settings (336 px tiles, the default pinpoints), in one run on one
machine; the outputs are checked equal first. Prints images/s for each and the ratio
ours / transformers (>= 1.0 means we are not slower); the best of ``--repeats`` runs.

    python benchmarks/bench_preprocess.py [--images 32] [--repeats 3]
"""

import argparse
import time

import numpy as np
from PIL import Image
from transformers import LlavaNextImageProcessorPil

from minillava.image import ImageProcessor


def random_images(n, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(32, 1600, size=(n, 2))
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    images = random_images(args.images)
    ours = ImageProcessor("anyres", 336)
    theirs = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    run_ours = lambda: ours(images)  # noqa: E731
    run_theirs = lambda: theirs(images=images, return_tensors="pt")  # noqa: E731

    a, b = run_ours(), run_theirs()
    diff = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
    print(f"{args.images} images, pixel_values {tuple(a['pixel_values'].shape)}, max abs diff {diff:.1e}")

    t_ours, t_theirs = best_time(run_ours, args.repeats), best_time(run_theirs, args.repeats)
    print(f"minillava    : {args.images / t_ours:8.1f} images/s")
    print(f"transformers : {args.images / t_theirs:8.1f} images/s")
    print(f"ratio ours / transformers: {t_theirs / t_ours:.2f}x")


if __name__ == "__main__":
    main()
