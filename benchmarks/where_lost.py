"""Where is an object's attribute lost between the image and the answer? Issue 19's reading diagnosis.

The assistant answers "What size is the red square?" with "small" almost whatever the image (the
looking test, benchmarks/looking.py --by-objects: size at chance even when the scene holds ONE
object, so it is not a failure to find the named object among others). This command follows the
attribute through the model, for a saved assistant:

1. tower      the vision tower's token under each object's centre: what the tower knows;
2. projected  that token after the projector: what the language model is given;
3. answer     the LM's last hidden state where it answers "What size is the <name>?": what it fetched
              (its probe also by the scene's number of objects: [accuracy, test questions]);
4. the assistant's own choice there, " large" against " small" (teacher-forced, one forward pass).

Steps 1-3 are read two ways. A standardised linear probe (gates.fit_linear_probe, 70 % of the rows to
fit, the rest to test) says whether the attribute can be decoded at all. SEPARATION says how strongly
it is there: the distance between two classes' mean vectors over the spread of all rows along that
direction (d', averaged over class pairs). A probe rescales every direction to unit variance, so it
decodes a direction that holds a few per cent of the tokens' variance as well as a dominant one; the
LM, trained by gradient through attention, picks up the dominant ones first.

    python benchmarks/where_lost.py runs/pipeline/assistant [--scenes 2500] [--questions 1200] [--out F]

One torch thread, about a minute. Measured figures are in benchmarks/bench_pipeline.py's docstring.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from minillava.backbones import gates
from minillava.backbones.toy_clip import scene_pixels
from minillava.backbones.toy_vit import centre_token
from minillava.data.rules import FORMAT_PROMPT
from minillava.eval.scenes import eval_seeds
from minillava.toyworld import COLORS, SHAPES, SIZES, make_scene, render

from looking import load_saved, report

ATTRIBUTES = {"colour": list(COLORS), "size": list(SIZES), "shape": list(SHAPES),
              "column": [0, 1, 2], "row": [0, 1, 2]}   # column, row: the object's centre on a 3 x 3 grid


def labels(o) -> dict:
    cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
    return {"colour": list(COLORS).index(o.color), "size": SIZES.index(o.size), "shape": SHAPES.index(o.shape),
            "column": min(int(cx * 3), 2), "row": min(int(cy * 3), 2)}


def separation(x: torch.Tensor, y: torch.Tensor) -> float:
    """d' averaged over class pairs: |mean_a - mean_b| over the std of all rows along (mean_a - mean_b)."""
    classes = y.unique().tolist()
    means = {c: x[y == c].mean(0) for c in classes}
    centred = x - x.mean(0)
    values = []
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            d = means[a] - means[b]
            values.append((d.norm() / (centred @ (d / d.norm())).std()).item())
    return sum(values) / len(values)


def probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300) -> torch.Tensor:
    """A linear probe fitted on the first 70 % of the rows: 1.0 / 0.0 for each of the other rows, right or wrong."""
    split = int(0.7 * len(y))
    with torch.enable_grad():   # the callers run the model under no_grad; the probe itself is fitted
        logits = gates.fit_linear_probe(x.float(), split, classes, lambda z: F.cross_entropy(z, y[:split]), steps)
    return (logits.argmax(-1) == y[split:]).float()


def read(x: torch.Tensor, y: dict) -> dict:
    """{attribute: {"probe", "separation"}} for rows x and their labels."""
    return {name: {"probe": round(probe(x, y[name], len(values)).mean().item(), 3), "separation": round(separation(x, y[name]), 2)}
            for name, values in ATTRIBUTES.items()}


@torch.no_grad()
def object_tokens(assistant, n_scenes: int) -> dict:
    """Steps 1 and 2 on the token under each object's centre, over held-out scenes."""
    model = assistant.model.eval()
    scenes = gates.held_out_scenes(n_scenes, offset=400_000)
    tower = torch.cat([model.vision_tower(scene_pixels(scenes[i:i + 500])) for i in range(0, len(scenes), 500)])
    grid = int(tower.shape[1] ** 0.5)
    if grid * grid != tower.shape[1]:
        raise SystemExit(f"the tower gives {tower.shape[1]} tokens, not a square grid; this diagnosis reads a "
                         "single 64 px view (no AnyRes)")
    projected = model._project(tower)
    index = [(b, centre_token(o.box, grid)) for b, s in enumerate(scenes) for o in s.objects]
    y = {name: torch.tensor([labels(o)[name] for s in scenes for o in s.objects]) for name in ATTRIBUTES}
    rows = lambda t: torch.stack([t[b, i] for b, i in index])  # noqa: E731
    return {"objects": len(index), "tower": read(rows(tower), y), "projected": read(rows(projected), y),
            "token norm": {"tower": round(tower.norm(dim=-1).mean().item(), 2),
                           "projected": round(projected.norm(dim=-1).mean().item(), 2),
                           "LM word embedding": round(model.language_model.get_input_embeddings().weight.norm(dim=-1)
                                                      .mean().item(), 2)}}


@torch.no_grad()
def size_answers(assistant, n_questions: int, batch: int = 64) -> dict:
    """Steps 3 and 4: "What size is the <name>?" about every object whose name is unique in its scene."""
    model, tokenizer = assistant.model.eval(), assistant.tokenizer
    words = [tokenizer.encode(f" {w}", add_special_tokens=False) for w in SIZES]
    if any(len(w) != 1 for w in words):
        raise SystemExit(f"the sizes are not single tokens for this tokenizer ({SIZES} -> {words}); step 4 compares "
                         "the two words' logits")
    items = []
    for seed in eval_seeds(max(50, n_questions), seed=11):
        scene = make_scene(seed)
        names = [o.name for o in scene.objects]
        items += [(scene, o) for o in scene.objects if names.count(o.name) == 1]
    items = items[:n_questions]
    hidden, chosen = [], []
    keep = model.language_model.model.norm.register_forward_hook(lambda module, args, out: hidden.append(out[:, -1]))
    try:
        for start in range(0, len(items), batch):
            part = items[start:start + batch]
            rows = [assistant.prompt_ids([{"role": "user", "content": f"<image>\nWhat size is the {o.name}?\n"
                                                                     f"{FORMAT_PROMPT}"}]) for _, o in part]
            inputs = assistant._generation_inputs(rows, [render(s) for s, _ in part])
            logits = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                           attention_mask=inputs["attention_mask"], padding_side="left", return_loss=False).logits
            chosen.append(logits[:, -1, [w[0] for w in words]].argmax(-1))
    finally:
        keep.remove()
    y = torch.tensor([SIZES.index(o.size) for _, o in items])
    x, chosen = torch.cat(hidden), torch.cat(chosen)
    right = probe(x, y, len(SIZES))
    objects = torch.tensor([len(s.objects) for s, _ in items])[-len(right):]   # the probe's test rows
    by_objects = {int(n): (round(right[objects == n].mean().item(), 3), int((objects == n).sum()))
                  for n in objects.unique()}
    return {"questions": len(items), "answer": {"probe": round(right.mean().item(), 3),
                                                 "separation": round(separation(x, y), 2),
                                                 "probe by objects in the scene": by_objects},
            "assistant": {"accuracy": round((chosen == y).float().mean().item(), 3),
                          "says": {w: round((chosen == i).float().mean().item(), 3) for i, w in enumerate(SIZES)}}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant (a pipeline's OUT/assistant)")
    parser.add_argument("--scenes", type=int, default=2500, help="held-out scenes for steps 1-2")
    parser.add_argument("--questions", type=int, default=1200, help="size questions for steps 3-4")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    assistant = load_saved(parser, args.assistant)
    return report({**object_tokens(assistant, args.scenes), "size question": size_answers(assistant, args.questions)},
                  args.out)


if __name__ == "__main__":
    main()
