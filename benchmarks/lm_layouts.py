"""Which written-scene layout (and LM shape) lets a toy LM read a scene? Issue 19, section 1.

A fresh toy-lm (toy_lm.train_lm's loop, toy_lm.lm_config's shape unless told otherwise, the shipped
tokenizer) is trained on a READING DRILL: each document is one training scene written out in a
LAYOUT, then eight of rules.short_answer_qa's one-word questions about it (all topics). It is
measured on held-out scenes (gates.held_out_scenes, offset 300,000, as gates.scene_reading) written
in the same layout, up to eight questions per scene, by topic (eval.failures.topic).

Scoring is teacher-forced exact match: a question counts as right when the argmax at every answer
token and at the closing </s> is the answer's token. That is exactly what greedy decoding followed
by exact match decides (gates.scene_reading), in one forward pass instead of eight.

Layouts (``LAYOUTS``; "default" is rules.scene_text byte for byte, nothing in minillava changes):

    default   On a gray background, from left to right: a large yellow square at the bottom, a small ...
    after     On a gray background, from left to right: yellow square: large, bottom; yellow diamond: ...
    lines     On a gray background, from left to right:\\n- yellow square: large, bottom\\n- ...
    shape_first  ... from left to right: square: yellow, large, bottom; diamond: yellow, small, top; ...

    python benchmarks/lm_layouts.py --layout default --steps 1500
    python benchmarks/lm_layouts.py --layout after --steps 1500

One torch thread. Findings (2026-12-02, one CPU core) are listed at the end of this docstring.

FINDINGS
--------
Every row: the reading drill over 20,000 training scenes, batch 32, lr 1e-3, seed 0, scored on the same
1,600 questions of 200 held-out scenes (colour 223, count 223, position 172, presence 476, relation 146,
shape 168, size 192 questions; standard error about 0.012 overall, 0.03-0.04 per topic). Wall time on one
core of a 2-core machine shared with another training (about 0.4-0.5 s a step at width 128).

    python benchmarks/lm_layouts.py --layout L --steps 1500 --scenes 20000 --eval-scenes 200 [--heads H] [--width W]

    arm                      overall  presence count shape colour size position relation  loss   train s
    default, 2L x 4H x 128    0.674    0.94    0.96  0.63  0.42  0.52   0.33     0.44    0.272   757
    after,   2L x 4H x 128    0.656    0.82    0.94  0.61  0.43  0.54   0.42     0.51    0.304   573
    default, 2L x 8H x 128    0.671    0.89    0.93  0.65  0.44  0.55   0.38     0.45    0.285   613
    shape_first, 2L x 4H      0.637    0.78    0.94  0.70  0.38  0.54   0.38     0.48    0.339   562
    default, 3000 steps       0.710    0.97    0.99  0.73  0.44  0.53   0.43     0.40    0.230  1153
    default, --supervise all  0.601    0.75    0.71  0.66  0.44  0.59   0.32     0.45   (0.257) 1203
    after,   --supervise all  0.587    0.64    0.73  0.63  0.44  0.75   0.33     0.46   (0.255)  964

    default, 6000 steps       0.922    1.00    0.97  1.00  0.72  1.00   0.88     0.77    0.068  2879
    after,   6000 steps       0.798    0.98    0.99  0.79  0.50  0.71   0.77     0.55    0.177  2763

(2026-12-02, second session: the last three rows. The --supervise all rows' loss is over every token, so
not comparable. The 6,000-step row over 40,000 training scenes, ``--eval-every 1000``.)

THE BINDING IS A MATTER OF THE SCHEDULE'S LENGTH. With 6,000 steps (the learning rate's cosine spread over
6,000), the same 2-layer, width-128 LM binds: size 0.52 -> 1.00, shape 1.00, position 0.88, overall 0.922
(1,600 questions, SE ~0.007). The 3,000-step run above decays its rate to zero by step 3,000 and ends at
0.710; this one, still near its peak rate there, is already at size 0.90 by step 3,000. Its curve on the
first 400 questions (50 scenes; per-topic SE 0.03-0.08):

    step     colour count position presence relation shape size
    1000      0.54   0.91   0.28     0.82     0.37    0.74  0.52
    2000      0.35   0.97   0.58     0.97     0.66    0.88  0.72
    3000      0.60   0.98   0.62     0.96     0.76    0.95  0.90
    4000      0.56   1.00   0.68     1.00     0.81    1.00  0.98
    5000      0.63   0.98   0.88     1.00     0.76    1.00  1.00

THE ISSUE'S LAYOUT HYPOTHESIS, AT FULL LENGTH: REJECTED. "after" (attributes after the object words,
"yellow square: large, bottom") trained exactly as the 6,000-step default row reads at 0.798 against 0.922:
size 0.71 against 1.00, colour 0.50, relation 0.55, shape 0.79, all worse; only count and presence are level.
Its curve never showed the size lookup the default learnt by step 3,000 (size 0.48, 0.48, 0.46, 0.44, 0.46 at
steps 1,000-5,000 on the 400-question check).
Command: ``python benchmarks/lm_layouts.py --layout after --steps 6000 --scenes 40000 --eval-every 1000``.

Left below target (>= 0.93 every topic): colour 0.72 (its questions include "What colours are the
diamonds?", answered with every colour in scene order, and the background), relation 0.77 (left/right,
above/below, yes/no and "which is larger" between two named objects), position 0.88 (with "which object
is the leftmost"). Those are the questions that need two lookups or a list; the single lookups are solved.

* At 1,500 drill steps (48,000 scenes, 384,000 reading answers) neither layout binds an attribute to its
  object: size is at chance (0.5) and colour-of-a-named-shape at 0.42-0.43 in both, as in the issue's
  670-step trial. "after" reads position +0.10 and relation +0.08 better (2-3 standard errors) but presence
  0.12 worse; overall no advantage (-0.02). The unbound topics (presence, count) are learnt by step 300.
* "shape_first" (every attribute after the shape word, colour included, so that "What colour is the
  circle?" is a plain copy-the-next-word lookup): no binding either (colour 0.38, size 0.54), presence
  0.16 worse than default, shape +0.08; overall 0.637. Putting the value after the key does not by itself
  make the 2-layer LM learn the lookup at this budget.
* Eight heads of 16 instead of four of 32 (same parameters, same cost): no change (0.671; every topic
  within 1.5 standard errors of the baseline).
* Twice the steps (3,000, 96,000 scenes, about two epochs) does not start the binding either: colour 0.44,
  size 0.53 (chance), relation 0.40; only the unbound topics gain (presence 0.97, count 0.99, shape 0.73),
  and the training loss still falls (0.272 -> 0.230) by learning what needs no binding. At this width and
  rate the binding is not a matter of a few thousand more steps.
* The proxy is faithful in kind: the shipped toy-lm (5,000 steps of the full mix) shows the same profile
  (colour and size about 0.5, position and relation weak, presence and count high).
* Hypothesis (b), one token per toy-world word, already holds for today's tokenizer wherever the word
  follows a space, which is everywhere in the written scene, the questions and the answers: every colour,
  shape, size, position word, "yes"/"no" and relation word is one token (" dot" is two). Without the
  leading space they split ("green" -> g re en), so a layout must keep a space before each word
  (the "after" and "lines" layouts do). Nothing to gain there.
* The written text can decide almost every question (``text_ceiling``): 0.993 of relation questions and
  all of the others; the few left are "above/below" pairs whose centres share a third of the image.
  The >= 0.93 targets are not blocked by the text.
* Supervising every token of the drill (``--supervise all``: the scene and the questions too, as a base LM's
  pretraining sees text; the questions repeat the scene's object words, which is the copying induction heads
  learn from) is worse overall in both layouts (0.601 and 0.587 against 0.674 and 0.656): presence falls to
  0.64-0.75 and count to 0.71-0.73, the capacity going into predicting the scene. It starts ONE binding, in
  the "after" layout only: size, written two tokens after its object's name ("red diamond: small"), rises
  to 0.745 against 0.54 answer-only (192 questions, ~6 standard errors; 0.74 already at step 600 of a 400-
  question check, ``--eval-every 300``) -- a copy *after* the matched name is learnt, one *before* it
  (colour, 0.44) is not. Rejected as the recipe (overall worse); kept as the first sign of a binding.
* Stopped before their score (the cores went to other runs): "after" at lr 2e-3 for 4,000 steps (loss
  over answers 0.41 at step 1,600, above the 1e-3 arm's 0.30 at 1,500 steps) and "shape_first" with
  --supervise all (step 300: nothing bound, as every arm at that point).
* Three layers on the drill (``--layers 3 --steps 6000 --scenes 40000 --eval-every 1000``, 2026-12-02, third
  session; cut off by the session's end after step 2,000, final score never seen): step 1,000 colour 0.56 count
  0.91 position 0.33 presence 0.73 relation 0.39 shape 0.74 size 0.52; step 2,000 colour 0.44 count 0.97
  position 0.48 presence 0.94 relation 0.54 shape 0.84 size 0.48 -- no faster than two layers (at step 2,000:
  size 0.72, relation 0.66).
* THE 6,000-STEP DRILL DOES NOT REPEAT ITS 0.922 (2026-12-03). The same command as the 6,000-step row
  (``--steps 6000 --scenes 40000``, only --save added and no --eval-every, whose scoring should change nothing
  the training sees), on this session's machine and environment (torch 2.13.0, transformers 5.24.0; the first
  run's versions were not recorded), reads at 0.863: colour 0.785,
  count 0.964, position 0.587, presence 0.977, relation 0.719, shape 0.839, size 0.932; final loss 0.125
  against 0.068. One thread and fixed seeds make a run repeatable on one machine, not across machines; the
  binding is a late, abrupt transition, so small numeric differences move it. Treat one run's topic scores
  as +-0.1 and compare arms over seeds.
* THE MIX DOES NOT BIND SIZE, EVEN MOSTLY DRILL (2026-12-03). ``--mix short_answer=40 --steps 10000 --scenes 80000
  --eval-every 2000 --save DIR``: the toy text's own mix (toy_text.lm_documents) with short-answer documents at
  weight 40 instead of 5 (78 % of the documents; each is 4-8 of the drill's questions with its written scene),
  the rest as shipped, 10,000 steps (twice the shipped schedule), 4,914 s of training. Final, same 1,600
  questions: 0.820 -- presence 0.987, count 0.996, shape 0.994, colour 0.686, position 0.622, relation 0.616,
  size 0.536 (chance). Its curve (400 questions): size 0.52, 0.52, 0.52, 0.56 at steps 2,000-8,000, where the
  drill alone had size 0.72 by step 2,000 and 0.98 by 4,000; relation rose late (0.37, 0.46, 0.68, 0.85).
  Reading answers a step are about 150 here (0.78 x 6 x 32) against 256 in the drill, so by step 8,000 this run
  had seen about 1.2 million, more than the drill by its step 4,000 (1.0 million, size 0.98 there). Too few
  reading answers do not explain it; the suspects are the mixed-in documents (full-sentence answers that copy
  a size by its kind, knowledge) and the shorter documents (4-8 questions against 8). Not yet separated.
* A CURRICULUM KEEPS THE BINDING (2026-12-03, fourth session). The 6,000-step drill's LM (the 0.863 run, saved),
  trained further on the shipped toy text: ``--init DRILL --mix '' --steps 3000 --scenes 40000 --eval-every 1000``
  (1,171 s). Final, same 1,600 questions: 0.847 -- presence 0.975, count 0.955, shape 0.798, colour 0.749,
  position 0.570, relation 0.664, size 0.948; world knowledge 0.97 (the shipped LM's mix is learnt back). Its
  curve (400 questions): size 0.92, 0.92 at steps 1,000 and 2,000: the mix does not unlearn a binding it could
  not teach. As an assistant this LM is worse than the shipped one (benchmarks/bench_pipeline.py: VQA 0.60).
* Not measured (no time left on one core): "lines", lr 2e-3, width 256, 3-4 layers on the drill, a
  curriculum from one-object scenes, a run long enough (GPU) to see whether the binding ever starts.
"""

import argparse
import dataclasses
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from minillava.backbones import gates, toy_lm, toy_text, zoo
from minillava.backbones.recipe import FULL, final_loss
from minillava.conversation import get_template, label_tokens
from minillava.splicing import IGNORE_INDEX
from minillava.data import rules
from minillava.eval.failures import topic
from minillava.toyworld import TRAIN_SEEDS, Scene, article, make_scene


def _place(o) -> str:
    return rules.position_words(o).split(" the ", 1)[1]


def _name(o) -> str:
    head = f"{o.color} {o.shape}"
    return head + (f" with {article(o.mark)} {o.mark} dot" if o.mark else "")


def _after(annotation: dict, sep: str = "; ", lead: str = " ") -> str:
    scene = Scene.from_annotation(annotation)
    objs = sorted(scene.objects, key=lambda o: o.box[0])
    items = [f"{_name(o)}: {o.size}, {_place(o)}" for o in objs]
    return f"On a {scene.background} background, from left to right:{lead}{sep.join(items)}."


def _shape_first(annotation: dict) -> str:
    scene = Scene.from_annotation(annotation)
    objs = sorted(scene.objects, key=lambda o: o.box[0])
    mark = lambda o: f" with {article(o.mark)} {o.mark} dot" if o.mark else ""  # noqa: E731
    items = [f"{o.shape}{mark(o)}: {o.color}, {o.size}, {_place(o)}" for o in objs]
    return f"On a {scene.background} background, from left to right: {'; '.join(items)}."


LAYOUTS = {
    "default": rules.scene_text,
    "after": _after,
    "lines": lambda ann: _after(ann, sep="\n- ", lead="\n- "),
    # the shape first, then every attribute after it, colour included (measured: worse, see FINDINGS)
    "shape_first": lambda ann: _shape_first(ann),
}


def drill(annotation: dict, rng: random.Random, layout: str, n: int = 8) -> list[dict]:
    pairs = rules.short_answer_qa(annotation, rng, n)
    messages = []
    for i, (q, a) in enumerate(pairs):
        if i == 0:
            q = LAYOUTS[layout](annotation) + "\n" + q
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


def training_samples(layout: str, scenes: int, tokenizer, seed: int = 0, supervise: str = "answers") -> list[dict]:
    """supervise: "answers" (Vicuna's masking, as toy_lm), "all" (every token, as a base LM's pretraining:
    the questions repeat the scene's object words, so predicting them is the copying that induction heads
    do) or "questions" (every token after the written scene: that copying, without spending the model on
    predicting the scene itself, which is random)."""
    rng = random.Random(f"lm-layouts-{seed}")
    template = get_template("vicuna_v1")
    samples = []
    for scene_seed in TRAIN_SEEDS[:scenes]:
        annotation = make_scene(scene_seed).annotation()
        messages = drill(annotation, rng, layout)
        sample = template.tokenize(messages, tokenizer)
        if supervise == "all":
            sample["labels"] = list(sample["input_ids"])
        elif supervise == "questions":   # everything after the written scene and its newline
            text, scene = template.render(messages), LAYOUTS[layout](annotation)
            after_scene = text.index(scene) + len(scene) + 1
            ids, flags = label_tokens(text, [(after_scene, len(text))], tokenizer, bos=template.bos)
            assert ids == sample["input_ids"]
            sample["labels"] = [i if f else IGNORE_INDEX for i, f in zip(ids, flags)]
        samples.append(sample)
    return samples


def eval_items(layout: str, n_scenes: int, tokenizer, per_scene: int = 8):
    """(topic, sample) for up to per_scene questions on each held-out scene, one question per chat."""
    rng = random.Random("lm-layouts-eval")
    template = get_template("vicuna_v1")
    items = []
    for scene in gates.held_out_scenes(n_scenes, offset=300_000):
        ann = scene.annotation()
        for q, a in rules.short_answer_qa(ann, rng, per_scene):
            messages = [{"role": "user", "content": LAYOUTS[layout](ann) + "\n" + q},
                        {"role": "assistant", "content": a}]
            items.append((topic(q), template.tokenize(messages, tokenizer)))
    return items


@torch.no_grad()
def score(lm, items, pad_id: int, chunk: int = 200) -> dict:
    right = defaultdict(list)
    lm.eval()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        width = max(len(s["input_ids"]) for _, s in part)
        ids = torch.tensor([s["input_ids"] + [pad_id] * (width - len(s["input_ids"])) for _, s in part])
        labels = torch.tensor([s["labels"] + [IGNORE_INDEX] * (width - len(s["labels"])) for _, s in part])
        mask = (torch.arange(width)[None] < torch.tensor([len(s["input_ids"]) for _, s in part])[:, None]).long()
        pred = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
        target = labels[:, 1:]
        ok = ((pred == target) | (target == IGNORE_INDEX)).all(1)
        for (t, _), good in zip(part, ok.tolist()):
            right[t].append(float(good))
    every = [v for vs in right.values() for v in vs]
    return {"accuracy": sum(every) / len(every), "questions": len(every),
            "by_topic": {t: round(sum(v) / len(v), 3) for t, v in sorted(right.items())},
            "n_by_topic": {t: len(v) for t, v in sorted(right.items())}}


def mix_weights(text: str) -> dict[str, float]:
    """--mix's "short_answer=40,detail=1" -> {"short_answer": 40.0, "detail": 1.0} ('' -> {}: the mix as shipped)."""
    return {k: float(w) for k, w in (part.split("=") for part in text.split(",") if part)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layout", choices=list(LAYOUTS), default="default")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scenes", type=int, default=40_000)
    parser.add_argument("--eval-scenes", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=0, help="also score the first 400 questions every N steps")
    parser.add_argument("--supervise", choices=("answers", "all", "questions"), default="answers",
                        help="which tokens the drill trains on (see training_samples)")
    parser.add_argument("--show", action="store_true", help="print one scene in the layout and exit")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="also save the trained LM and tokenizer here")
    parser.add_argument("--init", type=Path, default=None,
                        help="train this saved LM further (e.g. a drill's --save) instead of a fresh one")
    parser.add_argument("--mix", default=None, help="train on the toy text's mix instead of the drill (default layout "
                        "only), with these kind weights replacing DOCUMENT_KINDS', e.g. short_answer=16,detail=1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.show:
        print(LAYOUTS[args.layout](make_scene(TRAIN_SEEDS[0]).annotation()))
        return {}
    start = time.perf_counter()
    tokenizer = zoo.load_tokenizer("toy-lm")
    if args.mix is not None:   # the toy text itself (toy_text.lm_documents), reweighted
        if args.layout != "default" or args.supervise != "answers":
            parser.error("--mix trains on the toy text as toy_lm does: default layout, answers supervised")
        samples = toy_lm.tokenize_documents(toy_text.lm_documents(args.scenes, weights=mix_weights(args.mix)),
                                            tokenizer)
    else:
        samples = training_samples(args.layout, args.scenes, tokenizer, supervise=args.supervise)
    items = eval_items(args.layout, args.eval_scenes, tokenizer)
    config = toy_lm.lm_config(tokenizer)
    config.num_hidden_layers = args.layers
    config.num_attention_heads = config.num_key_value_heads = args.heads
    config.hidden_size, config.intermediate_size = args.width, 3 * args.width
    config.head_dim = args.width // args.heads
    recipe = dataclasses.replace(FULL, lm_steps=args.steps, lm_batch=args.batch, lm_lr=args.lr)
    prep = time.perf_counter() - start

    def progress(step, model):
        print(json.dumps({"step": step, **score(model, items[:400], tokenizer.pad_token_id)["by_topic"]}), flush=True)

    init = LlamaForCausalLM.from_pretrained(args.init) if args.init else None
    lm, losses = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda line: print(line, flush=True),
                                 config=config, every=(args.eval_every, progress) if args.eval_every else None,
                                 init=init)
    train_s = time.perf_counter() - start - prep
    result = score(lm, items, tokenizer.pad_token_id)
    if args.mix is not None:   # the mix teaches more than reading: is the world knowledge there too?
        result["knowledge"] = gates.knowledge_accuracy(lm, tokenizer)
    record = {"layout": args.layout, "steps": args.steps, "batch": args.batch, "lr": args.lr,
              "layers": args.layers, "heads": args.heads, "width": args.width, "supervise": args.supervise, "mix": args.mix,
              "init": str(args.init) if args.init else None,
              "final_loss": round(final_loss(losses), 4), "train_seconds": round(train_s, 1),
              "seconds": round(time.perf_counter() - start, 1), **result}
    print(json.dumps(record), flush=True)
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    if args.save:
        lm.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
    return record


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------
# How much of each topic can the written text decide at all?

_ROW = {"top": 0, "bottom": 2}


def _row(o) -> int:
    words = _place(o).split()
    return _ROW.get(words[0], 1)


def decidable(annotation: dict, question: str) -> bool:
    """False when the default written scene does not hold the answer: an "above"/"below" question (or
    "highest"/"lowest") about objects whose centres fall in the same third of the image, which the
    coarse position words ("at the top") cannot order. Left/right is decided by the left-to-right order."""
    scene = Scene.from_annotation(annotation)
    by_name = {o.name: o for o in scene.objects}
    q = question.split("\n")[0]
    if q.startswith("Which object is the highest") or q.startswith("Which object is the lowest"):
        rows = sorted(_row(o) for o in scene.objects)
        return (rows[0] < rows[1]) if "highest" in q else (rows[-1] > rows[-2])
    if q.startswith("Is the ") and (" above " in q or " below " in q):
        names = [n for n in by_name if f"the {n} " in q + " " or f"the {n}?" in q]
        if len(names) == 2:
            a, b = (by_name[n] for n in names)
            return _row(a) != _row(b)
    return True


def text_ceiling(n_scenes: int = 200, per_scene: int = 8) -> dict:
    """Share of eval_items' questions, by topic, that the default written scene can decide."""
    rng = random.Random("lm-layouts-eval")
    ok = defaultdict(list)
    for scene in gates.held_out_scenes(n_scenes, offset=300_000):
        ann = scene.annotation()
        for q, _ in rules.short_answer_qa(ann, rng, per_scene):
            ok[topic(q)].append(float(decidable(ann, q)))
    return {t: round(sum(v) / len(v), 3) for t, v in sorted(ok.items())}
