"""Issue 19 §1: a toy vision tower that is transformers' own CLIP ViT (``CLIPVisionModel``).

Trains a CLIPVisionModel-architecture tower with minillava.backbones.toy_vit (toy_clip's recipe:
its CLIP loss with hard negative captions and its auxiliary scene-label read-out; optionally a
per-token read-out, each patch token predicting the category and size of the object that covers
most of it, and one of the token's own grid cell), then measures on held-out scenes:

* gates.linear_probe (presence per label, count) on the mean+max pooled tokens;
* colour / size / shape of an object from the ONE token at its centre (a linear probe on
  that token, 6 / 2 / 5 classes; held-out scenes' objects);
* gates.token_position_probe: a token's grid cell from its features alone;
* object_dot_probe: the colour of one object's dot from the token under its centre (64 px view
  vs its native tile), 6 classes, chance ~ 0.2;
* the fine-detail dot probe (see ``fine_scene``): which dot colours a scene has (balanced
  accuracy over the 6 colours, as benchmarks/llava15_gains.py's dot_probe), from one 64 px
  view of a 128 px image (bicubic, as minillava.image does) and from its 2 x 2 tiles of 64 px
  (plus the 64 px base view, AnyRes-style), tokens mean+max pooled over all views.

    python benchmarks/vit_tower.py --steps 300 --patch 8 --width 64 --depth 4 --tag base

One torch thread. Results are appended as JSON lines to --out (default runs/vit_tower.jsonl).

Findings (2026-12-02, 2-core CPU shared with another job, one thread; wall times are noisy by ~1.5x).
Common to all: width 64, 4 layers, 4 heads, MLP 256, batch 64, 2 captions per image, hard
negatives, label weight 1, seed 0, same training scenes per step, same held-out scenes per probe.
Probe sizes: linear_probe 5000/1000 scenes (presence SE ~0.002, count SE ~0.013); object token
1190 objects (SE ~0.014); grid cell 500 scenes x all tokens (SE < 0.01); dots 1500/500 scenes
(SE ~0.01). "p" = patch size, "tok" = per-token read-out weight, "pos" = per-token grid-cell
read-out weight, "marks" = fraction of training scenes with dots. all-absent presence = 0.923.

| run | change | steps | train s | presence | count | colour | size | shape | grid cell | dots 64 / tiles |
|---|---|---|---|---|---|---|---|---|---|---|
| A | p8, lr 3e-3 (baseline)   | 400  | 136 | 0.935 | 0.751 | 0.999 | 0.772 | 0.428 | 0.074 | 0.554 / 0.566 |
| B | A + tok 1                | 400  | 151 | 0.936 | 0.752 | 1.000 | 0.822 | 0.444 | 0.117 | 0.563 / 0.565 |
| C | B, lr 1e-3               | 400  | 155 | 0.936 | 0.750 | 1.000 | 0.765 | 0.412 | 0.307 | 0.560 / 0.569 |
| D | C, p16 (16 tokens)       | 400  |  52 | 0.935 | 0.769 | 0.992 | 0.831 | 0.425 | 0.118 | 0.556 / 0.546 |
| E | D + pos 1                | 400  |  65 | 0.935 | 0.776 | 0.992 | 0.835 | 0.419 | 0.423 | 0.548 / 0.566 |
| F | E, 6x longer             | 2400 | 327 | 0.935 | 0.869 | 0.992 | 0.933 | 0.471 | 0.999 | 0.560 / 0.558 |
| G | E + marks 0.5 (+ mark read-out per token) | 400 | ~100 | 0.934 | 0.799 | 0.992 | 0.850 | 0.410 | 0.402 | 0.552 / 0.554 |
| H | G, 15x longer            | 6000 | 952 | 0.974 | 0.903 | 0.993 | 0.977 | 0.848 | 0.996 | 0.561 / 0.560 |
| I | H with the centre-only dot target, 3000 steps | 3000 | 439 | 0.939 | 0.870 | 0.995 | 0.931 | 0.497 | 0.999 | 0.553 / 0.549 |
| J | H, 8000 steps, built by `minillava zoo build --recipe vit` (build.make_clip), probed at layer -2 | 8000 | 1532 incl. probes | 0.973 | 0.913 | 0.993 | 0.982 | 0.882 | 0.995 | 0.563 / 0.592 |
| shipped RegNet (reference) | - | 1600 | - | >= 0.95 (gate) | >= 0.95 (gate) | 0.966 | 0.895 | 0.876 | 0.31 (issue) | 0.555 / 0.559 |

Commands: A `--steps 400 --lr 3e-3 --patch 8`; B adds `--token-weight 1`; C `--lr 1e-3`;
D `--patch 16`; E `--pos-weight 1`; F `--steps 2400`; G `--mark-frac 0.5 --dot-px 0 2 3`
(dots identical for toyworld's rule, 2 px and 3 px: 0.552/0.554, 0.552/0.554, 0.551/0.554);
H `--steps 6000 --token-weight 1 --lr 1e-3 --patch 16 --pos-weight 1 --mark-frac 0.5 --dot-px 0 2 3`;
I the same with `--steps 3000` (no --dot-px) and the centre-only dot target of token_targets.

J (2026-12-02, third session; the build recipe VIT with the shipped tokenizer, probes at layer -2, 1532 s
with its probes on a shared core): presence_worst 0.916; count 0.913 still misses 0.97 at 8,000 steps;
object_dot_probe 0.307 (64 px) / 0.500 (tiles), chance ~0.2 -- the centre-only dot target lets the tiles'
tokens name an object's dot at half the time, the scene-level pooled dot probe stays at 0.56 / 0.59.
The assistant on it (`minillava pipeline --vision DIR/toy-vision`, the shipped toy-lm, everything else
default): VQA 0.690 against 0.710 with the RegNet, POPE random F1 0.912 (yes 0.491) against 0.923, CHAIR_s
0.210 against 0.180, 150 s. A better-probing tower alone does not lift the assistant: the LM's reading
of the scene (0.80) is the bottleneck (benchmarks/lm_layouts.py).

H in detail: presence_worst 0.940; dots with 2 px / 3 px dots 0.557 / 0.558 and 0.558 / 0.560;
object_dot_probe 0.196 (64 px) / 0.236 (tiles), chance ~ 0.2; at layer -2 (LLaVA's) colour 0.993,
size 0.976, shape 0.839, grid cell 0.996. Its own per-token dot read-out, on held-out base scenes
with dots on every object (1746 object tokens), never names a dot (0.000: it learnt "no dot").
That read-out's target was wrong (the dot's colour on every token the object covered, though only
the token under the centre can see it); token_targets now labels only that token. Supervised alone
(a throwaway diagnostic script, not kept: all scenes dotted, 732 held-out centre tokens, chance ~0.2): old target
p16 400 steps 0.151, p8 400 0.161; centre target p16 400 0.206, p16 1600 0.592, p8 800 0.645 --
dots ARE learnable by the CLIP ViT, slowly, like shape. Inside a CLIP run (I: the fixed target,
3000 steps, so two changes against H) object_dot_probe rises to 0.333 from the tiles against 0.222
from the 64 px view (2220 objects, SE ~0.01): the dots start to reach the tokens at native scale
only; the scene-level pooled probe stays at 0.55 / 0.55 and shape has not clicked by step 3000 of a
3000-step schedule (0.497; H, 6000-step schedule, clicked between 3000 and 3600).
The loss fell from 6.68 (step 3000) to 5.44 (3600) to 3.63 (6000): shape "clicks" late, after
~3000 steps of 64 scenes (~190k images), which no 400-step trial can show.

What it says:
* At 6000 steps (16 min on one shared core, p16, per-token category/size/cell read-outs) the CLIP
  ViT passes presence (0.974), colour (0.993), size (0.977) and grid cell (0.996); count 0.903
  misses 0.97 and the dots fail (below). Before ~3000 steps it looks hopeless (F, 2400 steps).
* The CLIP ViT learns colour at once and where it is (grid cell 0.999 with the per-token cell
  read-out at 2400 steps; 0.07-0.31 without it: contrastive + max-pooled presence training makes
  the last layer's tokens position-free, though an untrained ViT's tokens hold 0.75-0.79 of it),
  size and count slowly, and SHAPE hardly at all: the token under an object's centre names its
  shape at 0.41-0.47 (prior of circles ~ 0.33), against the RegNet's 0.88. Presence (30 colour x
  shape labels) therefore stays at 0.935, just above "all absent" (0.923), in every run.
* It is not the CLIP loss: trained on the per-token category alone (a throwaway diagnostic script, not kept; no
  text tower), shape from the token reaches 0.43 (p16, 400 steps), 0.40 (p8), 0.44 (lr 3e-3),
  0.45 (width 128), 0.51 (p16, 1600 steps). A patch embedding is linear in the pixels: telling a
  circle from a square that can sit anywhere inside (or across) 16 px patches is a shift-invariance
  the ViT must learn from data, which a convolution has for free (the RegNet docstring's reason);
  it does, given ~6000 steps (H: 0.848).
* Fine detail: no tower read the dots. The 64 px view carries nothing (the dot is 1-2 px, bicubic
  blended: 0.55 on every tower = object-colour correlation); but the tiles did not either (0.55-0.57),
  even with dots in pretraining and a per-token dot read-out (G). A pixel-count oracle
  (a throwaway diagnostic script, not kept: log pixel counts per palette colour, linear probe) gets 0.55 from the 64 px
  view and 0.78 from the tiles: the information is in the tiles, but a scene-level "which dot
  colours" label is confounded with object colours, so >= 0.90 needs a tower whose tokens say
  "a dot of colour c here" (per-object probe, object_dot_probe: RegNet 0.200 / 0.205, chance).
"""

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minillava.backbones import gates, toy_vit, zoo
from minillava.backbones.recipe import IMAGE_SIZE, VIT, Recipe
from minillava.backbones.toy_clip import scene_pixels
from minillava.backbones.toy_vit import centre_token
from minillava.image import CLIP_MEAN, CLIP_STD, normalize
from minillava.toyworld import COLORS, HELDOUT_SEEDS, SHAPES, SIZES, Obj, Scene, _place, _sample_categories, render
from minillava.vision import VisionTower
from PIL import Image, ImageDraw


def recipe_from(args) -> Recipe:
    """The command line's run as a Recipe: toy_vit trains it (the build's VIT is run H's settings)."""
    return dataclasses.replace(VIT, clip_steps=args.steps, clip_batch=args.batch, clip_lr=args.lr,
                               clip_label_weight=args.label_weight, seed=args.seed, vit_patch=args.patch,
                               vit_width=args.width, vit_depth=args.depth, vit_heads=args.heads,
                               token_weight=args.token_weight, cell_weight=args.pos_weight,
                               mark_frac=args.mark_frac)


# ----------------------------------------------------------------------------
# Probes

@torch.no_grad()
def object_token_probe(vision, n_train: int = 2000, n_test: int = 500, steps: int = 300, layer: int = -1) -> dict:
    """Colour, size and shape of each object from the one token under its box centre."""
    tower = VisionTower(vision.eval(), feature_layer=layer)
    scenes = gates.held_out_scenes(n_train + n_test, offset=400_000)
    tokens = torch.cat([tower(scene_pixels(scenes[i:i + 500])) for i in range(0, len(scenes), 500)])
    grid = int(tokens.shape[1] ** 0.5)
    rows, labels, split = [], [], 0
    for b, s in enumerate(scenes):
        if b == n_train:
            split = len(rows)
        for o in s.objects:
            rows.append(tokens[b, centre_token(o.box, grid)])
            labels.append((list(COLORS).index(o.color), SIZES.index(o.size), SHAPES.index(o.shape)))
    x, y = torch.stack(rows), torch.tensor(labels)
    out = {}
    with torch.enable_grad():
        for j, (name, n) in enumerate((("colour", len(COLORS)), ("size", 2), ("shape", len(SHAPES)))):
            logits = gates.fit_linear_probe(x, split, n, lambda z, j=j: F.cross_entropy(z, y[:split, j]), steps)
            out[name] = (logits.argmax(-1) == y[split:, j]).float().mean().item()
    out["objects_tested"] = len(rows) - split
    return out


def fine_scene(seed: int, canvas: int = 128, sides=(16, 24), n_objects=(3, 6), dot_px: int | None = None) -> Scene:
    """A fine-detail scene on a canvas x canvas native canvas, objects ``sides`` px, each with a dot.

    Built from toyworld's own sampling (categories, placement); variant "fine" so that the
    objects carry marks. dot_px: None = toyworld's rule (15 % of the side, >= 2 px).
    """
    rng = random.Random(f"vit-fine-{seed}")
    background = rng.choice(["white", "gray", "black"])
    objects = []
    for name in _sample_categories(rng, rng.randint(*n_objects)):
        color, shape = name.split()
        side = rng.uniform(*sides)
        box = _place(rng, side / canvas, side / canvas, [o.box for o in objects])
        if box is None:
            continue
        mark = rng.choice([c for c in COLORS if c != color])
        objects.append(Obj(shape, color, "small", box, mark))
    return Scene(seed, objects, background, canvas, canvas, "fine")


def render_fine(scene: Scene, dot_px: int | None = None) -> Image.Image:
    """toyworld.render at native size; dot_px: every dot exactly dot_px wide instead of toyworld's rule."""
    if dot_px is None:
        return render(scene)
    image = render(dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, mark=None) for o in scene.objects)))
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        x1, y1, x2, y2 = o.pixel_box(scene.height, scene.width)
        x, y = (x1 + x2 - dot_px) // 2, (y1 + y2 - dot_px) // 2
        draw.ellipse((x, y, x + dot_px - 1, y + dot_px - 1), fill=COLORS[o.mark])
    return image


def _views(image: Image.Image, tile: int = IMAGE_SIZE) -> dict:
    """{"64": one bicubic 64 px view, "tiles": base view + the 2 x 2 (or n x n) native tiles}."""
    low = np.asarray(image.resize((tile, tile), Image.BICUBIC))
    n = image.width // tile
    arr = np.asarray(image)
    tiles = [arr[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(n) for c in range(n)]
    return {"64": low[None], "tiles": np.stack([low] + tiles)}


@torch.no_grad()
def dot_probe(vision, n_train: int = 1500, n_test: int = 500, steps: int = 500, layer: int = -1,
              dot_px: int | None = None, **scene_kw) -> dict:
    """Balanced accuracy of a linear probe asked which dot colours a fine scene has, per view."""
    tower = VisionTower(vision.eval(), feature_layer=layer)
    scenes = [fine_scene(HELDOUT_SEEDS[500_000 + i], **scene_kw) for i in range(n_train + n_test)]
    y = torch.tensor([[float(any(o.mark == c for o in s.objects)) for c in COLORS] for s in scenes])
    feats = {"64": [], "tiles": []}
    for s in scenes:
        for name, v in _views(render_fine(s, dot_px)).items():
            tokens = tower(normalize(v, CLIP_MEAN, CLIP_STD)).flatten(0, 1)
            feats[name].append(torch.cat([tokens.mean(0), tokens.amax(0)]))
    out = {}
    with torch.enable_grad():
        for name, f in feats.items():
            logits = gates.fit_linear_probe(torch.stack(f), n_train, len(COLORS),
                                            lambda z: F.binary_cross_entropy_with_logits(z, y[:n_train]), steps)
            guess, truth = logits > 0, y[n_train:] > 0
            hit = (guess & truth).sum(0) / truth.sum(0).clamp(min=1)
            reject = (~guess & ~truth).sum(0) / (~truth).sum(0).clamp(min=1)
            out[name] = ((hit + reject) / 2).mean().item()
    out["scenes_tested"] = n_test
    return out


@torch.no_grad()
def object_dot_probe(vision, n_train: int = 1500, n_test: int = 500, steps: int = 300, layer: int = -1,
                     dot_px: int | None = None, **scene_kw) -> dict:
    """Per object: the colour of its dot (6 classes; never the object's own, so chance ~ 1/5), from the
    one token under the object's centre: in the 64 px view, and in the native tile that holds it."""
    tower = VisionTower(vision.eval(), feature_layer=layer)
    scenes = [fine_scene(HELDOUT_SEEDS[600_000 + i], **scene_kw) for i in range(n_train + n_test)]
    rows, labels, split = {"64": [], "tiles": []}, [], 0
    for b, s in enumerate(scenes):
        if b == n_train:
            split = len(labels)
        v = _views(render_fine(s, dot_px))
        low = tower(normalize(v["64"], CLIP_MEAN, CLIP_STD))[0]
        tiles = tower(normalize(v["tiles"][1:], CLIP_MEAN, CLIP_STD))
        g, n = int(low.shape[0] ** 0.5), int((len(v["tiles"]) - 1) ** 0.5)
        for o in s.objects:
            cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
            rows["64"].append(low[centre_token(o.box, g)])
            tx, ty = min(n - 1, int(cx * n)), min(n - 1, int(cy * n))
            lx, ly = cx * n - tx, cy * n - ty
            rows["tiles"].append(tiles[ty * n + tx, min(g - 1, int(ly * g)) * g + min(g - 1, int(lx * g))])
            labels.append(list(COLORS).index(o.mark))
    y, out = torch.tensor(labels), {}
    with torch.enable_grad():
        for name, r in rows.items():
            logits = gates.fit_linear_probe(torch.stack(r), split, len(COLORS),
                                            lambda z: F.cross_entropy(z, y[:split]), steps)
            out[name] = (logits.argmax(-1) == y[split:]).float().mean().item()
    out["objects_tested"] = len(labels) - split
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--label-weight", type=float, default=1.0)
    p.add_argument("--token-weight", type=float, default=0.0)
    p.add_argument("--pos-weight", type=float, default=0.0, help="each token predicts its grid cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--probe-scale", type=float, default=1.0, help="fraction of the gates' probe scenes")
    p.add_argument("--fine-sides", type=int, nargs=2, default=(16, 24))
    p.add_argument("--dot-px", type=int, nargs="*", default=[0], help="fine dots: 0 = toyworld's rule, else px")
    p.add_argument("--mark-frac", type=float, default=0.0, help="training scenes with dots on their objects")
    p.add_argument("--skip-dots", action="store_true")
    p.add_argument("--tag", default="")
    p.add_argument("--out", default="runs/vit_tower.jsonl")
    p.add_argument("--save", default="")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = zoo.load_tokenizer("toy-lm")
    t0 = time.perf_counter()
    model, _ = toy_vit.train_clip(tokenizer, recipe_from(args))
    train_s = time.perf_counter() - t0
    if args.save:
        model.save(Path(args.save))
    s = args.probe_scale
    t1 = time.perf_counter()
    lp = gates.linear_probe(model.vision, n_train=int(5000 * s), n_test=int(1000 * s), layer=args.layer)
    obj = object_token_probe(model.vision, int(2000 * s), int(500 * s), layer=args.layer)
    pos = gates.token_position_probe(model.vision, n_train=int(2500 * s), n_test=int(500 * s), layer=args.layer)
    dots = {} if args.skip_dots else {
        f"dot_px={d or 'rule'}": {k: round(v, 3) for k, v in dot_probe(
            model.vision, int(1500 * s), int(500 * s), layer=args.layer, dot_px=d or None,
            sides=tuple(args.fine_sides)).items()} for d in args.dot_px}
    if not args.skip_dots:
        dots["object_dot"] = {k: round(v, 3) for k, v in object_dot_probe(
            model.vision, int(1500 * s), int(500 * s), layer=args.layer, sides=tuple(args.fine_sides)).items()}
    record = {"tag": args.tag, "args": vars(args), "train_s": round(train_s, 1),
              "probe_s": round(time.perf_counter() - t1, 1),
              "params_vision": sum(q.numel() for q in model.vision.parameters()),
              "linear_probe": {k: round(v, 3) for k, v in lp.items()},
              "object_token": {k: round(v, 3) for k, v in obj.items()},
              "grid_cell": round(pos["accuracy"], 3), "dots": dots}
    print(json.dumps(record))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
