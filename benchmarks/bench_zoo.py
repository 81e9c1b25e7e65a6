"""The shipped toy backbones' quality gates, each with the time it takes.

tests/test_zoo.py asserts the thresholds; this prints the measured numbers (and one diagnostic,
whether a vision token's features say where it is) and how long
each measurement took on this machine (one torch thread), for the README and the notes.

    python benchmarks/bench_zoo.py
"""

import time

import torch

from minillava.backbones import gates, zoo


def timed(name: str, measure) -> None:
    start = time.perf_counter()
    result = measure()
    print(f"{name:22s} {result}  ({time.perf_counter() - start:.1f} s)")


def main() -> None:
    torch.set_num_threads(1)
    tokenizer, lm = zoo.load_tokenizer("toy-lm"), zoo.load("toy-lm")
    timed("linear probe", lambda: {k: round(v, 3) for k, v in gates.linear_probe(zoo.load("toy-vision")).items()})
    # Not a gate: what the tower lacks next to a ViT (gates.token_position_probe says why it matters).
    timed("token knows its place", lambda: gates.token_position_probe(zoo.load("toy-vision")))
    timed("retrieval top-1 of 32", lambda: round(gates.retrieval_accuracy(zoo.load("toy-clip"), tokenizer), 3))
    timed("knowledge QA", lambda: round(gates.knowledge_accuracy(lm, tokenizer), 3))
    timed("written-scene reading", lambda: {k: round(v, 3) for k, v in _reading(lm, tokenizer).items()})


def _reading(lm, tokenizer) -> dict:
    result = gates.scene_reading(lm, tokenizer)
    return {"own scene": result["own scene"]["accuracy"], "another scene": result["another scene"]["accuracy"],
            "smallest topic gap": min(result["gap_by_topic"].values())}


if __name__ == "__main__":
    main()
