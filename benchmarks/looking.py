"""Does a saved assistant look? Issue 19 §2's looking test, as one command.

eval.failures.looking_test asks every toy_vqa question of held-out scenes three times: with the right
image, a blank one, and another scene's. An assistant that answers from the image loses accuracy
without it; one that answers from the question's wording alone does not. The issue's measure is the
gap: accuracy with the right image minus the better of the other two (target >= 0.45).

    python benchmarks/looking.py runs/pipeline/assistant                # 200 scenes, eval_seeds(200, seed=9)
    python benchmarks/looking.py runs/pipeline/assistant --scenes 60 --out looking.json
    python benchmarks/looking.py runs/pipeline/assistant --by-objects     # also by how many objects

--by-objects repeats the test on held-out scenes with one object, two, and three or more (up to
--scenes of each, from eval_seeds(3 x --scenes)). With one object nothing needs binding: "What size
is the red square?" only asks to READ the size from the image. A topic that fails there fails for
want of reading, not of finding the named object among others.

One torch thread. Measured figures are in benchmarks/bench_pipeline.py's docstring.
"""

import argparse
import json
from pathlib import Path

import torch

from minillava.eval import failures
from minillava.eval.scenes import eval_seeds
from minillava.toyworld import make_scene


def looking(assistant, seeds: list[int]) -> dict:
    """{"accuracy": {view: float}, "gap", "changed", "by_topic": {topic: right-image accuracy}}."""
    test = failures.looking_test(assistant, seeds)
    accuracy = test["accuracy"]
    gap = accuracy["right image"] - max(accuracy["blank image"], accuracy["another scene's image"])
    by_topic = failures.accuracy_by_topic(test["samples"]["right image"])
    return {"accuracy": {view: round(a, 3) for view, a in accuracy.items()}, "gap": round(gap, 3),
            "changed": round(test["changed"], 3), "scenes": len(seeds),
            "by_topic": {t: round(v["accuracy"], 3) for t, v in by_topic.items()}}


def by_objects(seeds: list[int], per_group: int) -> dict[str, list[int]]:
    """The seeds grouped by their scene's number of objects: "1", "2", "3+" (up to per_group each)."""
    groups = {"1": [], "2": [], "3+": []}
    for seed in seeds:
        n = len(make_scene(seed).objects)
        group = groups["1" if n == 1 else "2" if n == 2 else "3+"]
        if len(group) < per_group:
            group.append(seed)
    return groups


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant (a pipeline's OUT/assistant)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=9, help="which held-out scenes (scenes.eval_seeds)")
    parser.add_argument("--by-objects", action="store_true",
                        help="also the test on scenes of 1, 2 and 3+ objects (reading without binding, see above)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    assistant = load_saved(parser, args.assistant)
    result = looking(assistant, eval_seeds(args.scenes, seed=args.seed))
    if args.by_objects:
        groups = by_objects(eval_seeds(3 * args.scenes, seed=args.seed), args.scenes)
        result["by_objects"] = {n: looking(assistant, seeds) for n, seeds in groups.items() if len(seeds) >= 2}
    return report(result, args.out)


def load_saved(parser: argparse.ArgumentParser, folder: str):
    """The saved assistant in folder, on one torch thread; a one-line error if it is not one."""
    if not Path(folder).is_dir():
        parser.error(f"{folder} is not a saved assistant folder; pass a pipeline's OUT/assistant")
    from minillava.chat import load_assistant   # transformers: only once the arguments are known to be good
    torch.set_num_threads(1)
    return load_assistant(folder)


def report(result: dict, out: Path | None) -> dict:
    """Print the result as one JSON line, and write it to out if given."""
    print(json.dumps(result))
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
