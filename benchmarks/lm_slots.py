"""Does a toy LM bind when each object of the written scene is ONE position? Issue 19, the slot hypothesis.

Why ask. An image reaches the language model as one token per patch, each a vector that holds
everything about what is under it; a written scene spreads an object over several words ("a large
yellow square at the bottom"). The toy LM learns its lookups over words: a drill-trained LM that
reads size from the text at 0.93-0.95 still answers size at chance from image tokens
(benchmarks/bench_pipeline.py, the curriculum rows). So what it must learn is a lookup over
*compound* positions: find the position whose vector contains "green" and "square", read "large"
out of the same vector. This script asks whether the toy LM learns that lookup, and how fast, when
each object of the written scene is one SLOT: a single position whose input vector is the sum of
its words' embeddings (size, colour, shape, place), the same table the words use.

    On a gray background, from left to right: <slot:large yellow square bottom><slot:small red circle top left>.

Everything else is benchmarks/lm_layouts.py's reading drill, scored the same way on the same
held-out scenes (teacher-forced exact match, 1,600 questions on 200 scenes):

    python benchmarks/lm_slots.py --steps 1500 --eval-every 500

Each slot is an added token of the tokenizer (one id per combination of size, colour, shape and
place: 2 x 8 x 5 x 9), so the batches and the scoring are lm_layouts' own; only the embedding is
wrapped (SlotEmbedding) so that a slot's id embeds as the sum of its words'. One torch thread.

FINDINGS (2026-12-03, one core of a 2-core CPU shared with another job; SE about 0.012 overall, 0.03-0.04 a topic)
------------------------------------------------------------------------------------------------------------

    arm                                  overall presence count shape colour size position relation loss  train s
    words (lm_layouts default), 1500      0.674    0.94   0.96  0.63  0.42  0.52   0.33     0.44   0.272   757
    slots, drill, 1500, 20,000 scenes     0.592    0.73   0.73  0.66  0.45  0.53   0.36     0.45   0.357   797
    slots, shipped mix, 3000, 40,000      0.712    0.96   0.76  1.00  0.57  0.56   0.29     0.42   0.189  1027
    slots, drill, 6000, 40,000            0.933    1.00   1.00  1.00  0.69  0.95   0.92     0.90   0.062  3178
    words (lm_layouts default), 6000      0.863    0.98   0.96  0.84  0.79  0.93   0.59     0.72   0.125  (this machine)
    grid (--layout grid), drill, 6000     0.876    1.00   0.99  1.00  0.91  1.00   0.26     0.68   0.126  3670
    grid, then the shipped mix, 3000      0.866    0.99   0.97  1.00  0.91  0.95   0.28     0.66   0.168  1098  (knowledge 0.94)
    objects, mix with --scene-captions    0.907    0.99   0.96  1.00  0.68  0.94   0.88     0.76   0.107  1180  (knowledge 0.965)
    grid_cells, drill, 4000               0.884    1.00   1.00  1.00  0.87  1.00   0.45     0.58   0.109  2423
    grid_cells, then the shipped mix      0.889    1.00   0.98  1.00  0.91  0.93   0.49     0.64   0.148  1167  (knowledge 0.985)
    grid_cells, mix with --scene-captions 0.886    1.00   0.98  1.00  0.92  0.93   0.45     0.65   0.120   955  (knowledge 0.975)
    halves*: grid_cells drill +1,500      0.906    1.00   0.99  1.00  0.89  1.00   0.61     0.62   0.072   871
    halves*: then mix, --scene-captions   0.913    1.00   0.98  1.00  0.92  0.94   0.72     0.62   0.099  1147  (knowledge 0.985)
    grid_cover: grid_cells drill +1,500   0.884    1.00   0.94  0.99  0.89  1.00   0.49     0.62   0.116   844
    grid_cover: then the shipped mix      0.875    1.00   0.92  0.99  0.90  0.96   0.52     0.55   0.156  1033  (knowledge 0.99)

    python benchmarks/lm_slots.py --steps 1500 --scenes 20000 --eval-every 500
    python benchmarks/lm_slots.py --mix '' --steps 3000 --scenes 40000 --eval-every 1000 --save DIR

* AT FULL LENGTH THE SLOTS READ BEST (``--steps 6000 --scenes 40000 --eval-every 1000 --save DIR``): 0.933, the
  best written-scene reading of any toy LM so far, against 0.863 for words trained the same way on this machine
  (0.922 on another): position 0.92 against 0.59, relation 0.90 against 0.72, size 0.95, count and shape 1.00.
  Colour (0.69) lags: its questions include "What colours are the diamonds?", a list to be read out of
  several slots. The curve (400 questions) -- size 0.48, 0.92, 0.92, 0.90, 0.92 at steps 1,000-5,000; position
  0.45, 0.78, 0.83, 0.85, 0.95 -- binds size by step 2,000, where the words drill had 0.72.
* THE GRID LAYOUT (``--layout grid --steps 6000 --scenes 40000 --eval-every 1000``; fifth session): the scene
  as the tower shows it, 16 slots in raster order, objects under their centres, empty cells holding the
  background colour, no place words. Every topic but place is read at 0.91-1.00 -- colour 0.906, the best of
  any toy LM (the object layout's list questions "What colours are the diamonds?" are now one slot each; the
  background is a slot) -- but the place is NOT learnt from the index: position 0.26 (0.13, 0.25, 0.20, 0.25,
  0.23 at steps 1,000-5,000), relation 0.68. A RoPE transformer of this size does not learn where in a run of
  16 identical-looking positions a slot stands; an image token's place must be IN the token (a ViT's position
  embedding), which ``--layout grid_cells`` tests.
* GRID CELLS (``--layout grid_cells --steps 4000``): each slot also holds its cell's own learnt vector, as a
  ViT adds a position embedding. Place is then learnt, slowly (0.25, 0.35, 0.55 at steps 1,000-3,000; 0.45 on
  the full 1,600 questions at 4,000), toward a ceiling below 1: the 4 x 4 cells do not nest in the world's
  3 x 3 places (an object centred in the second column may be "left" or "centre").
* HALVES* (sixth session): places that are the canvas's four quadrants nest in the 4 x 4 token grid: with
  ``toyworld.PLACE_EDGES = (0.5, 0.5)`` (left/right and top/bottom halves, four places, each 2 x 2 cells; set
  by ``benchmarks/with_edges.py 0.5``, nothing shipped changes) the place IS a function of the cell. From the 4,000-step
  grid_cells drill, 1,500 more drill steps in the halves world read position at 0.61 (0.55, 0.75 at steps
  500, 1,000 on 400 questions) where the thirds world's drill stopped at 0.45; then the mix with scene
  captions, 0.72. What is left of position is mostly the "which object is the leftmost" questions, which a
  cell cannot settle when two objects share a column. (Quarters, PLACE_EDGES = (0.25, 0.75), nest too, but
  make "centre" the answer of half the where-questions: rejected untried beyond 500 steps.)
* GRID_COVER (``--layout grid_cover``): an object in every cell it covers, as the tower's tokens show it (the
  grid_cells assistant describes a large object once per token it covers: "a large orange square in the
  bottom left ... a large orange square in the bottom right"). 1,500 drill steps from the grid_cells drill:
  count 0.94 (the LM learns that neighbouring equal slots are one object), size 1.00.
* ``--scene-captions`` (with ``--mix``): the caption documents read their slot scene first, unsupervised,
  where stage 1 puts the image. Reading is unchanged (0.907 against 0.915); as an assistant it is the best
  slot LM at the default stages (benchmarks/bench_pipeline.py).
* At 1,500 steps (the rate decayed to zero by then), one position per object does NOT make the binding come sooner: at 1,500 drill steps size is at chance
  (0.53) and colour-of-a-named-shape at 0.45, as with words; presence and count are worse (0.73: a count
  must now add up slots whose vectors contain the shape, not copy number words). Its 400-question check at
  step 1,000: size 0.60, presence 0.64. Hypothesis rejected for text reading at this budget.
* Trained on the shipped toy text with its scenes in slots (3,000 steps), the LM keeps its other skills
  (world knowledge 0.975) and reads shape perfectly (1.00: "which shape is green" is one slot's shape) but
  binds nothing: size 0.56, position 0.29, relation 0.42.
* As an assistant (``minillava pipeline --language DIR``, default stages) it is worse than the shipped LM:
  RegNet VQA 0.69, POPE F1 0.58 (yes 0.44), descriptions that name almost no object (5 mentions in 100:
  CHAIR_s 0.01 says nothing); CLIP ViT (run J) VQA 0.665, POPE 0.61. Size 0.30 and position 0.17 by the
  looking test. Rows in benchmarks/bench_pipeline.py.
* THE SLOT CURRICULUM: the 6,000-step slot drill, then the shipped mix in slots (``--init DRILL --mix ''
  --steps 3000 --scenes 40000 --eval-every 1000 --save DIR``, 1,038 s): 0.915 -- presence 0.998, count 0.96,
  shape 1.00, size 0.943, position 0.89, relation 0.795, colour 0.704; world knowledge 0.995. As an assistant
  under the default stages it is the first that reads size from the image: 0.818 (RegNet) and 0.893 (ViT) on
  benchmarks/where_lost.py's 1,200 size questions, against 0.515 ("small" every time) for the shipped LM; VQA
  0.730 / 0.735, looking gap 0.308 / 0.277; POPE F1 0.851 / 0.824. Rows in benchmarks/bench_pipeline.py.
"""

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from minillava.backbones import gates, toy_lm, toy_slots, zoo
from minillava.backbones.recipe import FULL, final_loss
from minillava.backbones.toy_slots import SlotEmbedding, centre_scene, slot_token
from minillava.toyworld import COLORS, SHAPES, SIZES, Scene

import lm_layouts

PLACES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")


def slot_words(o) -> tuple[str, ...]:
    return (o.size, o.color, o.shape, *lm_layouts._place(o).split())


def slot_scene(annotation: dict) -> str:
    """The written scene with every object one slot, left to right."""
    scene = Scene.from_annotation(annotation)
    objs = sorted(scene.objects, key=lambda o: o.box[0])
    return f"On a {scene.background} background, from left to right: " + \
        "".join(slot_token(slot_words(o)) for o in objs) + "."


# The grid layouts are minillava.backbones.toy_slots' (what recipe.SLOTS ships); "objects" and "grid" are
# the rejected ones, kept so that their rows below can be rerun.
SCENES = {"objects": slot_scene, "grid": lambda ann: centre_scene(ann, cells=False), **toy_slots.LAYOUTS}


def slot_combos(layout: str) -> list[tuple[str, ...]]:
    """Every slot the layout can write, in a fixed order (so a saved LM's slot ids stay valid for --init)."""
    if layout == "objects":
        return [(size, colour, shape, *place.split())
                for size, colour, shape, place in itertools.product(SIZES, COLORS, SHAPES, PLACES)]
    return toy_slots.slot_combos(cells=layout != "grid")


def add_slots(tokenizer, layout: str = "objects") -> tuple[int, torch.Tensor]:
    """Add one token per slot to the tokenizer (and per cell word, for the layouts that have them)."""
    return toy_slots.add_slots(tokenizer, slot_combos(layout), cells=layout in toy_slots.LAYOUTS)


def save(lm, tokenizer, folder: Path) -> None:
    """The LM as a plain LlamaForCausalLM (its word table holds the slots' rows, unused), and the tokenizer."""
    wrapped = lm.model.embed_tokens
    lm.model.embed_tokens = wrapped.base
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lm.model.embed_tokens = wrapped


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layout", choices=list(SCENES), default="objects",
                        help="objects: one slot per object, with its place words; grid: one slot per image token")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="draws a fresh LM's weights and the batch order")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scenes", type=int, default=40_000)
    parser.add_argument("--eval-scenes", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=0, help="also score the first 400 questions every N steps")
    parser.add_argument("--mix", default=None, help="train on the toy text's mix (toy_text.lm_documents, these kind "
                        "weights replacing its own, '' for none) with its scenes in slots, instead of the drill")
    parser.add_argument("--scene-captions", action="store_true",
                        help="with --mix: caption documents read their scene first (stage 1's layout, slots for the image)")
    parser.add_argument("--init", type=Path, default=None, help="train this saved slot LM further (a --save)")
    parser.add_argument("--save", type=Path, default=None, help="save the trained LM and tokenizer here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    tokenizer = zoo.load_tokenizer("toy-lm")
    first_slot, combos = add_slots(tokenizer, args.layout)
    lm_layouts.LAYOUTS["slots"] = SCENES[args.layout]   # so that lm_layouts' drill and held-out questions write slots
    if args.mix is not None:
        documents = toy_slots.mix_documents(args.scenes, SCENES[args.layout], weights=lm_layouts.mix_weights(args.mix))
        samples = toy_lm.tokenize_documents(documents, tokenizer)
        if args.scene_captions:
            changed = toy_slots.scene_captions(documents, samples, SCENES[args.layout], tokenizer)
            print(f"{changed} caption documents read their scene", flush=True)
    else:
        samples = lm_layouts.training_samples("slots", args.scenes, tokenizer)
    items = lm_layouts.eval_items("slots", args.eval_scenes, tokenizer)
    assert any(i >= first_slot for s in samples[:50] for i in s["input_ids"]), "the slots did not tokenise as slots"
    # a fresh LM's vocab_size is len(tokenizer): the slots included; its weights drawn from --seed
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM.from_pretrained(args.init) if args.init else LlamaForCausalLM(toy_lm.lm_config(tokenizer))
    if model.get_input_embeddings().num_embeddings != len(tokenizer):   # --init from another layout's LM
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.model.embed_tokens = SlotEmbedding(model.model.embed_tokens, first_slot, combos)
    recipe = dataclasses.replace(FULL, lm_steps=args.steps, lm_lr=args.lr, lm_batch=args.batch, seed=args.seed)
    prep = time.perf_counter() - start

    def progress(step, lm):
        print(json.dumps({"step": step, **lm_layouts.score(lm, items[:400], tokenizer.pad_token_id)["by_topic"]}),
              flush=True)

    lm, losses = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda line: print(line, flush=True),
                                 every=(args.eval_every, progress) if args.eval_every else None, init=model)
    train_s = time.perf_counter() - start - prep
    record = {"layout": f"slots ({args.layout})", "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "final_loss": round(final_loss(losses), 4), "train_seconds": round(train_s, 1),
              "mix": args.mix, "scene_captions": args.scene_captions, "init": str(args.init) if args.init else None,
              **lm_layouts.score(lm, items, tokenizer.pad_token_id)}
    if args.mix is not None:   # the mix teaches more than reading: is the world knowledge there too?
        record["knowledge"] = gates.knowledge_accuracy(lm, tokenizer)
    print(json.dumps(record), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if args.save:
        save(lm, tokenizer, args.save)
    return record


if __name__ == "__main__":
    main()
