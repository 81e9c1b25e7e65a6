"""Why LLaVA trains in two stages, and why its stage-2 data is a mixture: measured on the toy world.

Two experiments on the shipped toy backbones (toy-vision + toy-lm, a fresh projector). The
arms of an experiment train on the same data for the same number of optimizer steps and are
evaluated, along the way, on the same held-out scenes with the evaluation suite.

order   (chapter 4) the recipe -- stage 1 (projector on captions), then stage 2 (projector +
        LM on the instruction mixture) -- against skipping stage 1, and against training
        everything (tower, projector, LM) at once on captions and instructions together.
        Measured: short-answer VQA accuracy and POPE (random) F1.
mixing  (chapter 7) after one shared stage 1: the full stage-2 mixture against the same mixture
        without its short-answer source (the questions with the format prompt), and without its
        text-only chats. Measured: short-answer VQA accuracy, the length of those answers, and
        exact-match accuracy on text-only knowledge questions.

The stored results were made by these two commands (280 s and 274 s of one CPU thread, the
machine's other core busy; more on a busier machine):

    python benchmarks/order_and_mixing.py order
    python benchmarks/order_and_mixing.py mixing --stage2-steps 250 --eval-every 125

The chapters run the same experiments live at a much smaller budget; these are the larger-budget
numbers they load from minillava/course/results/ (two_stage_order.json, data_mixing.json). One torch
thread: every number is reproducible on one machine.
"""

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from minillava.backbones import gates, zoo
from minillava.chat import Assistant
from minillava.course.cache import RESULTS_DIR
from minillava.data.dataset import InstructionDataset
from minillava.data.mix import Source, mix
from minillava.eval.failures import accuracy_by_topic
from minillava.eval.suite import run_suite
from minillava.pipeline import PipelineConfig, image_processor, toy_pools
from minillava.train import STAGE1, STAGE2, Stage, train

# The stage-2 mixture of `minillava pipeline`: LLaVA-Instruct's three kinds, then the academic and text-only sources.
WEIGHTS = PipelineConfig().mixture


class Toy:
    """The backbones, their processor, and the data sets of one experiment."""

    def __init__(self, scenes: int, folder: Path, seed: int = 0):
        torch.manual_seed(seed)   # the fresh projector
        self.model, self.tokenizer = zoo.pretrained_model()
        self.processor = image_processor("toy-vision", self.model.vision_tower.model)
        self.start = copy.deepcopy(self.model.state_dict())
        self.folder = folder
        self.captions, self.pools = toy_pools(range(scenes), folder)

    def dataset(self, records: list[dict], template: str) -> InstructionDataset:
        return InstructionDataset(records, self.tokenizer, template, lambda im: self.processor([im])["pixel_values"][0],
                                  image_folder=self.folder, tokens_per_image=16)

    def mixture(self, pools: dict, total: int) -> tuple[list[dict], list[dict]]:
        return mix([Source(name, pools[name], w) for name, w in WEIGHTS.items()], total)

    def reset(self) -> None:
        self.model.load_state_dict(self.start)


def evaluate(toy: Toy, scenes: int, knowledge: int = 0, max_new_tokens: int = 32, by_topic: bool = False) -> dict:
    """Held-out scenes: VQA accuracy and answer length, POPE F1 and yes-ratio; text-only knowledge
    accuracy if asked; VQA accuracy per question topic (eval.failures) if ``by_topic``."""
    chat = Assistant(toy.model.eval(), toy.tokenizer, toy.processor, max_new_tokens=max_new_tokens)
    report = run_suite(chat, ["toy_vqa", "pope_random"], scenes, 0, batch_size=64, progress=False)
    vqa, pope = report.results
    words = [len(s["prediction"].split()) for s in vqa.samples]
    metrics = {"vqa_accuracy": vqa.metrics["accuracy"], "answer_words": sum(words) / len(words),
               "pope_f1": pope.metrics["f1"], "pope_yes_ratio": pope.metrics["yes_ratio"]}
    if knowledge:
        questions = gates.knowledge_questions(knowledge)
        answers = chat.chat([[{"role": "user", "content": q}] for q, _ in questions], [])
        metrics["knowledge_accuracy"] = sum(a == truth for a, (_, truth) in zip(answers, questions)) / knowledge
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    if by_topic:
        metrics["vqa_by_topic"] = {t: round(v["accuracy"], 3) for t, v in accuracy_by_topic(vqa.samples).items()}
    return metrics


def run_stage(toy: Toy, stage: Stage, data, out: Path, every: int, offset: int, measure) -> list[dict]:
    """Train ``stage``, stopping every ``every`` steps to measure; points are at global step offset + k."""
    points = []
    stage = dataclasses.replace(stage, save_every=every)
    done = 0
    while done < stage.max_steps:
        result = train(toy.model, stage, data, out, lengths=data.lengths, has_image=data.has_image,
                       pad_token_id=toy.model.config.pad_token_id, progress=False, stop_after=every)
        done = result.steps
        points.append({"step": offset + done, "loss": result.final_loss, **measure()})
        print(f"  {stage.name} step {done}/{stage.max_steps}: {points[-1]}", flush=True)
    return points


def order(args, work: Path) -> dict:
    toy = Toy(args.scenes, work / "data")
    total = args.stage1_steps + args.stage2_steps
    mixture, table = toy.mixture(toy.pools, total * args.stage2_batch)
    captions, instructions = toy.dataset(toy.captions, "plain"), toy.dataset(mixture, "vicuna_v1")
    everything = toy.dataset(toy.captions + mixture, "vicuna_v1")   # captions read as brief-description chats
    stage1 = dataclasses.replace(STAGE1, lr=args.stage1_lr, batch_size=args.stage1_batch, max_steps=args.stage1_steps)
    stage2 = dataclasses.replace(STAGE2, lr=args.stage2_lr, batch_size=args.stage2_batch)

    def measure():
        return evaluate(toy, args.eval_scenes)

    arms = {}
    toy.reset()
    start = [{"step": 0, "loss": None, **measure()}]
    print("recipe: stage 1 then stage 2", flush=True)
    arms["recipe"] = start + run_stage(toy, stage1, captions, work / "recipe-1", args.eval_every, 0, measure)
    arms["recipe"] += run_stage(toy, dataclasses.replace(stage2, max_steps=args.stage2_steps), instructions,
                                work / "recipe-2", args.eval_every, args.stage1_steps, measure)
    print("skip stage 1: stage 2 for every step", flush=True)
    toy.reset()
    arms["skip stage 1"] = start + run_stage(toy, dataclasses.replace(stage2, max_steps=total), instructions,
                                             work / "skip", args.eval_every, 0, measure)
    print("all at once: tower + projector + LM on captions and instructions", flush=True)
    toy.reset()
    at_once = dataclasses.replace(stage2, name="all at once", trainable=("vision_tower", "projector", "language_model"),
                                  max_steps=total)
    arms["all at once"] = start + run_stage(toy, at_once, everything, work / "all", args.eval_every, 0, measure)
    return {"arms": arms, "mixture": table}


def mixing(args, work: Path) -> dict:
    toy = Toy(args.scenes, work / "data")
    total = args.stage2_steps * args.stage2_batch
    stage1 = dataclasses.replace(STAGE1, lr=args.stage1_lr, batch_size=args.stage1_batch, max_steps=args.stage1_steps)
    stage2 = dataclasses.replace(STAGE2, lr=args.stage2_lr, batch_size=args.stage2_batch, max_steps=args.stage2_steps)
    toy.reset()
    print("shared stage 1", flush=True)
    train(toy.model, stage1, toy.dataset(toy.captions, "plain"), work / "stage1", progress=False)
    aligned = copy.deepcopy(toy.model.state_dict())
    variants = {"full mixture": toy.pools, "no short-answer data": {**toy.pools, "vqa": []},
                "no text-only chats": {**toy.pools, "text": []}}

    def measure():
        return evaluate(toy, args.eval_scenes, args.knowledge)

    arms, tables = {"after stage 1": [{"step": 0, "loss": None, **measure()}]}, {}
    for name, pools in variants.items():
        print(name, flush=True)
        weights = {source: w if pools[source] else 0 for source, w in WEIGHTS.items()}
        records, tables[name] = mix([Source(s, pools[s], weights[s]) for s in WEIGHTS], total)
        toy.model.load_state_dict(aligned)
        arms[name] = run_stage(toy, stage2, toy.dataset(records, "vicuna_v1"), work / name.replace(" ", "-"),
                               args.eval_every, 0, measure)
    return {"arms": arms, "mixtures": tables}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", default=["order", "mixing"], choices=["order", "mixing"])
    parser.add_argument("--scenes", type=int, default=600, help="training scenes")
    parser.add_argument("--stage1-steps", type=int, default=150)
    parser.add_argument("--stage1-batch", type=int, default=32)
    parser.add_argument("--stage1-lr", type=float, default=3e-3)
    parser.add_argument("--stage2-steps", type=int, default=150)
    parser.add_argument("--stage2-batch", type=int, default=16)
    parser.add_argument("--stage2-lr", type=float, default=3e-4)
    parser.add_argument("--eval-every", type=int, default=150, help="optimizer steps between evaluations")
    parser.add_argument("--eval-scenes", type=int, default=50, help="held-out scenes per evaluation task")
    parser.add_argument("--knowledge", type=int, default=100, help="text-only knowledge questions (mixing)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON files go")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = {"order": ("two_stage_order.json", order), "mixing": ("data_mixing.json", mixing)}
    for name in args.experiments:
        file, experiment = files[name]
        tic = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            result = experiment(args, Path(work))
        settings = {k: v for k, v in vars(args).items() if k not in ("experiments", "out")}
        record = {"experiment": name, "settings": settings, "seconds": round(time.perf_counter() - tic),
                  "manifest_sha256": zoo.sha256(zoo.WEIGHTS_DIR / zoo.MANIFEST), **result}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / file).write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {record['seconds']} s -> {args.out / file}")


if __name__ == "__main__":
    main()
