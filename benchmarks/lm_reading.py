"""Does the toy language model read a written scene? Issue 6's weak link, measured.

The plan of the toy backbones (minillava/backbones/) is LLaVA's: a language model that answers
questions about a scene it is *told*, so that stage 1 only has to make images readable as such
words. This script checks the premise. It asks the shipped toy-lm short-answer questions about
held-out scenes written out in its prompt, once with the question's own scene and once with
another scene's text: what the model reads from the scene is the difference, per topic.

It can also train a fresh toy-lm (toy_lm.lm_config, toy_lm.train_lm) on one narrow task and
measure it the same way, to tell *which* kind of reading the architecture learns quickly:

    background   "What colour is the background?": the answer sits at a fixed place, the first
                 words of the scene ("On a gray background, ...")
    attributes   size and colour questions ("What size is the red diamond?"): the model has to
                 find the object named in the question and read the word beside it

    python benchmarks/lm_reading.py                                  # the shipped toy-lm
    python benchmarks/lm_reading.py --lm /tmp/candidate/toy-lm       # a toy-lm built elsewhere
    python benchmarks/lm_reading.py --train background --steps 400
    python benchmarks/lm_reading.py --train attributes --steps 800

One torch thread: every number is reproducible on one machine.
"""

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch

from minillava.backbones import gates, toy_lm, zoo
from minillava.backbones.recipe import FULL, final_loss
from minillava.backbones.toy_text import document_messages
from minillava.data import rules
from minillava.eval.failures import topic
from minillava.toyworld import TRAIN_SEEDS, make_scene


def _background(annotation: dict, rng: random.Random) -> list[tuple[str, str]]:
    return [(f"What colour is the background?\n{rules.FORMAT_PROMPT}", annotation["background"])]


def _attributes(annotation: dict, rng: random.Random) -> list[tuple[str, str]]:
    pairs = rules.short_answer_qa(annotation, rng, 30)
    return [(q, a) for q, a in pairs if topic(q) in ("size", "colour")][:4]


TASKS = {"short answers": lambda annotation, rng: rules.short_answer_qa(annotation, rng, 2),
         "background": _background, "attributes": _attributes}


def chats(task: str, seeds, seed: int = 0) -> list[tuple[str, list[dict]]]:
    """Documents of one task: each scene written into the first user turn, then its questions."""
    rng = random.Random(f"lm-reading-{task}-{seed}")
    documents = []
    for s in seeds:
        annotation = make_scene(s).annotation()
        pairs = TASKS[task](annotation, rng)
        if pairs:
            documents.append(("vicuna_v1", document_messages(pairs, annotation)))
    return documents


def reading(lm, tokenizer, task: str, n_scenes: int, one_object: bool = False) -> dict:
    """gates.scene_reading (the zoo's gate) on the questions of ``task``."""
    return gates.scene_reading(lm, tokenizer, n_scenes, TASKS[task], one_object)


def train_on(task: str, tokenizer, scenes: int, steps: int, batch: int, lr: float, layers: int = 2,
             heads: int = 4, one_object: bool = False):
    """A fresh toy-lm trained on ``task`` alone, with the shipped LM's loop and, by default, its shape."""
    seeds = [s for s in TRAIN_SEEDS[:scenes] if not one_object or len(make_scene(s).objects) == 1]
    samples = toy_lm.tokenize_documents(chats(task, seeds), tokenizer)
    config = toy_lm.lm_config(tokenizer)
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = layers, heads, heads
    config.head_dim = config.hidden_size // heads
    recipe = dataclasses.replace(FULL, lm_steps=steps, lm_batch=batch, lm_lr=lr)
    lm, losses = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda line: print(line, flush=True),
                                 config=config)
    return lm, final_loss(losses)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", choices=["background", "attributes"], default=None,
                        help="train a fresh toy-lm on this task instead of measuring the shipped one")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scenes", type=int, default=12_000, help="training scenes (with --train)")
    parser.add_argument("--eval-scenes", type=int, default=300)
    parser.add_argument("--lm", default="toy-lm",
                        help="the LM to measure (a zoo name or a folder with its tokenizer), e.g. a candidate "
                             "toy-lm trained by build.make_lm before it replaces the shipped one")
    parser.add_argument("--layers", type=int, default=2, help="layers of the fresh LM (with --train)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads of the fresh LM (with --train)")
    parser.add_argument("--one-object", action="store_true",
                        help="train and measure on one-object scenes only: nothing to tell apart, no binding")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    tokenizer = zoo.load_tokenizer(args.lm)
    if args.train:
        lm, last_loss = train_on(args.train, tokenizer, args.scenes, args.steps, args.batch, args.lr,
                                 args.layers, args.heads, args.one_object)
        record = {"lm": f"fresh, {args.layers} layers x {args.heads} heads, trained on {args.train}"
                        + " (one-object scenes)" * args.one_object,
                  "steps": args.steps, "lr": args.lr, "final_loss": last_loss,
                  "reading": reading(lm, tokenizer, args.train, args.eval_scenes, args.one_object)}
    else:
        name = "shipped toy-lm" if args.lm == "toy-lm" else args.lm
        record = {"lm": name, "reading": reading(zoo.load(args.lm), tokenizer, "short answers", args.eval_scenes)}
    record["seconds"] = round(time.perf_counter() - start, 1)
    r = record["reading"]
    print(f"{record['lm']}: {r['questions']} questions, accuracy {r['own scene']['accuracy']:.3f} with its own "
          f"scene, {r['another scene']['accuracy']:.3f} with another scene's text (gap {r['gap']:+.3f})")
    for name, gap in r["gap_by_topic"].items():
        print(f"  {name:<10} own {r['own scene']['by_topic'][name]:.2f}  gap {gap:+.2f}")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
