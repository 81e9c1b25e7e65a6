"""Training throughput with length/modality grouping vs naive random batches.

A batch costs as much as its longest sample: random batches of mixed-length samples
(short text-only chats next to long image samples) are mostly padding. This runs the
same trainer on the same mixed-length data set twice in one process -- once with
``group_by_length`` and once without -- and prints real (non-padding) tokens/s and the
share of padding for each.

    python benchmarks/bench_grouping.py [--samples 256] [--batch 8] [--repeats 3]
"""

import argparse
import dataclasses
import statistics
import tempfile

import torch

from minillava.data.batching import batch_schedule
from minillava.train import STAGE2, train
from minillava.backbones.zoo import tiny_random_model

IMG = 99


def mixed_dataset(n: int, seed: int = 0) -> list[dict]:
    """Half image samples (16 image tokens + 8..120 text), half text-only (4..40)."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for i in range(n):
        with_image = i % 2 == 0
        length = int(torch.randint(8, 121, (1,), generator=g)) if with_image else int(torch.randint(4, 41, (1,), generator=g))
        ids = [1] + torch.randint(3, 90, (length,), generator=g).tolist()
        if with_image:
            ids = ids[:2] + [IMG] + ids[2:]
        labels = [-100] * (len(ids) // 2) + ids[len(ids) // 2:]
        data.append({"input_ids": ids, "labels": [-100 if t == IMG else t for t in labels],
                     "pixel_values": torch.randn(1, 3, 32, 32, generator=g) if with_image else None})
    return data


def padding_share(batches, lengths) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a busy 2-core machine, see tools/run_notebook.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mixed_dataset(args.samples)
    lengths = [len(s["input_ids"]) + 15 * (s["pixel_values"] is not None) for s in data]
    has_image = [s["pixel_values"] is not None for s in data]
    print(f"{args.samples} samples, spliced lengths {min(lengths)}..{max(lengths)}, batch {args.batch}")
    def run(grouped: bool, **overrides) -> float:
        stage = dataclasses.replace(STAGE2, lr=1e-4, batch_size=args.batch, group_by_length=grouped, **overrides)
        with tempfile.TemporaryDirectory() as out:
            return train(tiny_random_model(), stage, data, out, lengths=lengths, has_image=has_image,
                         progress=False).tokens_per_s

    run(True, max_steps=3)  # warm-up: the first steps of a process pay one-off costs
    # Alternate the two settings and keep the median, so a busy spell hits both alike.
    speeds = {False: [], True: []}
    for _ in range(args.repeats):
        for grouped in (False, True):
            speeds[grouped].append(run(grouped))
    print(f"{'batching':<22} {'padding':>8} {'real tokens/s (median of ' + str(args.repeats) + ')':>30}")
    for grouped in (False, True):
        batches = batch_schedule(len(data), args.batch, 0, 0, *((lengths, has_image) if grouped else (None, None)))
        name = "grouped by length" if grouped else "random (naive)"
        print(f"{name:<22} {padding_share(batches, lengths):>8.1%} {statistics.median(speeds[grouped]):>30.0f}")
    print(f"speed-up from grouping: {statistics.median(speeds[True]) / statistics.median(speeds[False]):.2f}x")

if __name__ == "__main__":
    main()
