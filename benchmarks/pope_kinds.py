"""Which POPE questions does an assistant get wrong? Issue 19: POPE's errors, sorted by what the scene holds.

POPE asks "Is there a <colour> <shape> in the image?". A "no" question is easy when nothing in the scene
shares a word with the asked object, and hard when its colour and its shape are both there on OTHER objects
(a green square and a red cross; asked for a green cross): only an assistant that binds colour to shape
says no. This sorts a finished evaluation's POPE samples by that, and gives each kind's accuracy:

    present        the object is in the scene (a "yes" question)
    conjunction    absent, but its colour and its shape are each on some other object
    colour only    absent; its colour is in the scene, its shape is not
    shape only     absent; its shape is in the scene, its colour is not
    neither        absent, and neither word is in the scene

    python benchmarks/pope_kinds.py runs/pipeline                       # the pipeline's eval/samples.jsonl
    python benchmarks/pope_kinds.py OUT/eval/samples.jsonl --task pope_adversarial

Reads the samples only (no model): the scene of each comes from its seed. Measured figures are in
benchmarks/bench_pipeline.py's docstring.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

from minillava.toyworld import make_scene

KINDS = ("present", "conjunction", "colour only", "shape only", "neither")


def kind(seed: int, name: str) -> str:
    """The kind of a POPE question about object `name` ("blue diamond") in scene `seed`."""
    objects = make_scene(seed).objects
    if any(o.name == name for o in objects):
        return "present"
    colour, shape = name.split()
    has_colour, has_shape = any(o.color == colour for o in objects), any(o.shape == shape for o in objects)
    return {(True, True): "conjunction", (True, False): "colour only",
            (False, True): "shape only", (False, False): "neither"}[has_colour, has_shape]


def by_kind(samples: list[dict], task: str = "pope_random") -> dict:
    """{kind: {"questions", "accuracy", "says yes"}} over the samples of one POPE task."""
    groups = defaultdict(list)
    for s in samples:
        if s["task"] != task:
            continue
        _, seed, name = s["doc_id"].split("/", 2)   # pope.build_questions' question_id: split/image/object
        groups[kind(int(seed), name)].append(s["result"])
    return {k: {"questions": len(groups[k]),
                "accuracy": round(sum(r["prediction"] == r["label"] for r in groups[k]) / len(groups[k]), 3),
                "says yes": round(sum(r["prediction"] == "yes" for r in groups[k]) / len(groups[k]), 3)}
            for k in KINDS if groups[k]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a pipeline's OUT folder, or an eval samples.jsonl")
    parser.add_argument("--task", default="pope_random", help="pope_random, pope_popular or pope_adversarial")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if path.is_dir():
        path = path / "eval" / "samples.jsonl"
    if not path.is_file():
        parser.error(f"{path} not found; pass a pipeline's OUT folder (run with --eval) or its eval/samples.jsonl")
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result = by_kind(samples, args.task)
    if not result:
        parser.error(f"no {args.task} samples in {path}; run the evaluation with that task")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
