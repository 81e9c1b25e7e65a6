"""LLaVA-1.5's and LLaVA-NeXT's changes, one at a time, measured in the toy world (chapter 5).

Four arms train the same recipe on the same data -- stage 1 (projector, captions), then stage 2
(projector + LM, short-answer questions with the format prompt) -- from the shipped toy
backbones, and differ in one thing each:

    linear, 64 px          LLaVA's linear connector, one 64 x 64 view (pad to square)
    mlp2x_gelu, 64 px      LLaVA-1.5's MLP connector, the same view
    mlp2x_gelu, 96 px      the same, the tower fed 96 x 96 (6 x 6 = 36 tokens instead of 16):
                           the toy version of 224 px -> 336 px
    mlp2x_gelu, AnyRes     LLaVA-NeXT: a 64 px base view plus 64 px tiles on a canvas of up to
                           4 x 4 tiles, unpadded, a newline at the end of every row

The images are the fine-detail variant of the toy world (192-256 px, a small coloured dot on
every shape). Measured on held-out scenes: **fine detail** ("What colour is the dot on the
blue square?", readable only at high resolution, chapter 5 section 8) and a **control** of
ordinary short-answer questions about the same scenes. Each arm is trained with several seeds
(the projector's initialisation and the batch order); the JSON keeps every run and the mean
and standard deviation per arm.

A trained assistant can only show a gain that is in its input tokens *and* that it learnt to
use. So a second, cheap measurement separates the two: a linear probe on the frozen tower's
pooled tokens, one per view of the image (64 px, 96 px, AnyRes), asked which dot colours a
scene has (``dot_probe``).

    python benchmarks/llava15_gains.py                  # both parts: the stored results (3 seeds)
    python benchmarks/llava15_gains.py --part probe     # redo only the probe (keeps the rest)
    python benchmarks/llava15_gains.py --seeds 1 --scenes 8 --stage1-steps 2 --stage2-steps 2 \\
        --eval-scenes 2 --probe-scenes 30 10 --out /tmp/gains   # a smoke run (the tests run one)

One torch thread: every number is reproducible on one machine.
"""

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from minillava.backbones import zoo
from minillava.backbones.recipe import feature_layer
from minillava.chat import Assistant
from minillava.course.cache import RESULTS_DIR
from minillava.conversation import IMAGE_MARKER
from minillava.data.dataset import InstructionDataset
from minillava.data.engine import caption_samples
from minillava.data.rules import FORMAT_PROMPT
from minillava.eval.scenes import EVAL_SEED_START, answer_key
from minillava.eval.vqa import vqa_accuracy
from minillava.image import CLIP_MEAN, CLIP_STD, ImageProcessor
from minillava.model import MiniLlava, MiniLlavaConfig
from minillava.toyworld import COLORS, make_scene, render
from minillava.train import STAGE1, STAGE2, train

TILE = 64
FINE_PINS = [(r * TILE, c * TILE) for r in range(1, 5) for c in range(1, 5)]   # canvases up to 4 x 4 tiles


@dataclasses.dataclass(frozen=True)
class Arm:
    projector: str
    size: int      # the tower's input side (each view)
    mode: str      # "pad" (one view) or "anyres"


ARMS = {"linear, 64 px": Arm("linear", 64, "pad"), "mlp2x_gelu, 64 px": Arm("mlp2x_gelu", 64, "pad"),
        "mlp2x_gelu, 96 px": Arm("mlp2x_gelu", 96, "pad"), "mlp2x_gelu, AnyRes": Arm("mlp2x_gelu", 64, "anyres")}
# The probe looks at the tower's tokens, before any connector: one entry per distinct view of the image.
VIEWS = {"one 64 px view": ARMS["mlp2x_gelu, 64 px"], "one 96 px view": ARMS["mlp2x_gelu, 96 px"],
         "AnyRes: base + 64 px tiles": ARMS["mlp2x_gelu, AnyRes"]}
# (what changes, before, after): one change at a time, as LLaVA-1.5's ablation path.
COMPARISONS = [("connector", "linear, 64 px", "mlp2x_gelu, 64 px"),
               ("resolution", "mlp2x_gelu, 64 px", "mlp2x_gelu, 96 px"),
               ("AnyRes", "mlp2x_gelu, 64 px", "mlp2x_gelu, AnyRes")]


def is_fine(question: str) -> bool:
    return question.startswith("What colo") and " the dot on " in question


def questions(seed: int) -> tuple[list, list]:
    """(fine-detail, control) short-answer facts of a fine scene, as (question, answer) lists."""
    facts = [(q, a.short) for q, a in answer_key(make_scene(seed, "fine").annotation()).items() if a.short]
    return [f for f in facts if is_fine(f[0])], [f for f in facts if not is_fine(f[0])]


def records(seeds, folder: Path) -> tuple[list, list]:
    """Stage-1 captions and stage-2 short-answer records for fine scenes; images written to folder."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    stage2 = []
    for seed in seeds:
        image = f"images/fine-{seed:06d}.png"
        if not (folder / image).exists():
            render(make_scene(seed, "fine")).save(folder / image)
        fine, control = questions(seed)
        picked = fine + random.Random(f"gains-{seed}").sample(control, min(2, len(control)))
        turns = []
        for i, (q, a) in enumerate(picked):
            turns += [{"from": "human", "value": f"{IMAGE_MARKER}\n{q}\n{FORMAT_PROMPT}" if i == 0 else
                       f"{q}\n{FORMAT_PROMPT}"}, {"from": "gpt", "value": a}]
        stage2.append({"id": f"fine-{seed:06d}-vqa", "image": image, "conversations": turns})
    return caption_samples(seeds, "fine"), stage2


def build(arm: Arm, seed: int):
    """The shipped toy backbones, a fresh projector (seeded), the arm's processor and token count."""
    torch.manual_seed(seed)
    tower, lm, tokenizer = zoo.load("toy-vision"), zoo.load("toy-lm"), zoo.load_tokenizer("toy-lm")
    tower.config.image_size = arm.size   # a conv tower takes any size: tell it which one each view has
    config = MiniLlavaConfig(image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_MARKER), projector=arm.projector,
                             vision_feature_layer=feature_layer(tower.config), pad_token_id=tokenizer.pad_token_id,
                             image_mode=arm.mode, image_grid_pinpoints=FINE_PINS if arm.mode == "anyres" else None)
    model = MiniLlava(config, tower, lm)
    processor = ImageProcessor(arm.mode, arm.size, CLIP_MEAN, CLIP_STD,
                               pinpoints=FINE_PINS if arm.mode == "anyres" else None)
    with torch.no_grad():   # positions a 256 x 256 image takes (the largest canvas under AnyRes)
        largest = processor([render(make_scene(0, "fine"), 256, 256)])
        tokens = len(model.encode_images(largest["pixel_values"], largest["image_sizes"])[0])
    return model, tokenizer, processor, tokens


@torch.no_grad()
def evaluate(chat: Assistant, seeds: list[int]) -> dict:
    """Exact-match accuracy on the fine-detail and the control questions of held-out fine scenes."""
    scores = {"fine": [], "control": []}
    for seed in seeds:
        image = render(make_scene(seed, "fine"))
        fine, control = questions(seed)
        control = random.Random(f"gains-eval-{seed}").sample(control, min(2, len(control)))
        for kind, facts in (("fine", fine), ("control", control)):
            if facts:
                answers = chat.chat([[{"role": "user", "content": f"{IMAGE_MARKER}\n{q}\n{FORMAT_PROMPT}"}]
                                     for q, _ in facts], [image] * len(facts))
                scores[kind] += [vqa_accuracy(p, [a]) for p, (_, a) in zip(answers, facts)]
    return {kind: round(sum(v) / len(v), 4) for kind, v in scores.items() if v} | {
        f"n_{kind}": len(v) for kind, v in scores.items()}


def run_arm(arm: Arm, seed: int, data: tuple, folder: Path, args) -> dict:
    model, tokenizer, processor, tokens = build(arm, seed)

    def dataset(recs, template):
        return InstructionDataset(recs, tokenizer, template, lambda im: processor([im])["pixel_values"][0],
                                  image_folder=folder, tokens_per_image=tokens)
    captions, instructions = data
    tic = time.perf_counter()
    for stage, recs, template in ((dataclasses.replace(STAGE1, lr=args.stage1_lr, batch_size=args.batch,
                                                       max_steps=args.stage1_steps), captions, "plain"),
                                  (dataclasses.replace(STAGE2, lr=args.stage2_lr, batch_size=args.batch,
                                                       max_steps=args.stage2_steps), instructions,
                                   "vicuna_v1")):
        ds = dataset(recs, template)
        with tempfile.TemporaryDirectory() as out:
            train(model, dataclasses.replace(stage, seed=seed), ds, out, lengths=ds.lengths, has_image=ds.has_image,
                  pad_token_id=tokenizer.pad_token_id, progress=False)
    seconds = time.perf_counter() - tic
    chat = Assistant(model.eval(), tokenizer, processor, max_new_tokens=8)
    held_out = list(range(EVAL_SEED_START, EVAL_SEED_START + args.eval_scenes))
    return {"seed": seed, **evaluate(chat, held_out), "image_tokens": tokens, "train_seconds": round(seconds)}


@torch.no_grad()
def features(model: MiniLlava, processor: ImageProcessor, images: list) -> torch.Tensor:
    """(N, 2C): each image's tower tokens (every view, before the connector), mean- and max-pooled."""
    out = []
    for image in images:
        pixels = processor([image])
        views = pixels["pixel_values"]   # (1, 3, H, W); AnyRes: (1, views, 3, H, W)
        if pixels["image_sizes"] is not None:   # AnyRes: every view of the one image
            views = views[0]
        tokens = model.vision_tower(views).flatten(0, 1)
        out.append(torch.cat([tokens.mean(0), tokens.amax(0)]))
    return torch.stack(out)


def dot_probe(arm: Arm, n_train: int, n_test: int, seeds: int) -> dict:
    """What the tower's tokens hold about the dots, under this arm's view of the image.

    A linear probe on pooled, frozen features predicts which dot colours a fine scene has
    (multi-label). Scored by balanced accuracy (mean of the hit rates on present and absent
    labels; 0.5 = chance). Object colours correlate with dot colours, so even a view without
    any dot scores above chance: the gain over the 64 px view is what the dots add.
    """
    model, _, processor, _ = build(arm, 0)
    scenes = [make_scene(EVAL_SEED_START + 10_000 + i, "fine") for i in range(n_train + n_test)]
    x = features(model, processor, [render(s) for s in scenes])
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    y = torch.tensor([[float(any(o.mark == c for o in s.objects)) for c in COLORS] for s in scenes])
    scores = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x.shape[1], y.shape[1])
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(500):   # full batch
            loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x[:n_train]), y[:n_train])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            guess, truth = probe(x[n_train:]) > 0, y[n_train:] > 0
        hit = (guess & truth).sum(0) / truth.sum(0).clamp(min=1)
        reject = (~guess & ~truth).sum(0) / (~truth).sum(0).clamp(min=1)
        scores.append(round(((hit + reject) / 2).mean().item(), 4))
    return {"runs": scores, **mean_and_std(scores)}


def mean_and_std(values: list[float]) -> dict:
    """{"mean", "std"} over seeds, rounded; the std of a single run is 0."""
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for kind in ("fine", "control"):
        values = [r[kind] for r in runs if kind in r]
        if values:
            out[kind] = mean_and_std(values)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="runs per arm (seeds 0..n-1)")
    parser.add_argument("--scenes", type=int, default=1000, help="fine training scenes")
    parser.add_argument("--stage1-steps", type=int, default=100)
    parser.add_argument("--stage2-steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--stage1-lr", type=float, default=1e-3)
    parser.add_argument("--stage2-lr", type=float, default=3e-4)
    parser.add_argument("--eval-scenes", type=int, default=100, help="held-out fine scenes")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--probe-scenes", type=int, nargs=2, default=(1500, 500), metavar=("TRAIN", "TEST"),
                        help="fine scenes for the dot probe")
    parser.add_argument("--part", choices=("all", "assistant", "probe"), default="all",
                        help="what to (re)measure; the other part of an existing file is kept")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of llava15_gains.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    file = args.out / "llava15_gains.json"
    record = json.loads(file.read_text()) if args.part != "all" and file.exists() else {}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "part")} | {"pinpoints": FINE_PINS}
    if args.part in ("all", "assistant"):
        tic = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            data = records(range(args.scenes), Path(work))
            arms = {}
            for name in args.arms:
                arms[name] = []
                for seed in range(args.seeds):
                    arms[name].append(run_arm(ARMS[name], seed, data, Path(work), args))
                    print(f"{name:<20} seed {seed}: {arms[name][-1]}", flush=True)
        record.update(settings=settings, seconds=round(time.perf_counter() - tic),
                      arms={name: {"config": dataclasses.asdict(ARMS[name]), "runs": runs, **summarize(runs)}
                            for name, runs in arms.items()},
                      comparisons=[list(c) for c in COMPARISONS])
    if args.part in ("all", "probe"):
        record["probe"] = {name: dot_probe(view, *args.probe_scenes, args.seeds) for name, view in VIEWS.items()}
        record["probe_settings"] = {"scenes": list(args.probe_scenes), "seeds": args.seeds}
        print("dot probe (balanced accuracy):", {name: p["mean"] for name, p in record["probe"].items()})
    record["manifest_sha256"] = zoo.sha256(zoo.WEIGHTS_DIR / zoo.MANIFEST)
    args.out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {file}")
    return record


if __name__ == "__main__":
    main()
