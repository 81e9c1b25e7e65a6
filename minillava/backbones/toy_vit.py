"""The CLIP ViT toy tower: transformers' own ``CLIPVisionModel``, trained as toy-clip is.

A candidate for toy-vision (issue 19 §1; ``minillava zoo build --recipe vit``). The shipped
tower is a RegNet: convolutions know for free that a circle is a circle wherever it sits,
and learn the toy world in 1,600 steps. A ViT must learn that from data, but it is what
CLIP is, so the toy assistant on it is a genuine ``LlavaForConditionalGeneration`` (it
exports and serves like a real one), and a position embedding tells each token where it is.

It trains with toy_clip's recipe (its CLIP loss, captions, hard negatives and scene-label
read-out, imported, not copied) plus two read-outs of the patch tokens, each there because
benchmarks/vit_tower.py measured what goes missing without it:

* a per-token read-out of what covers the patch (category, size) and of the dot at an
  object's centre: the scene-level losses let one max-pooled token speak for the image, so
  size and shape reached the tokens slowly (size 0.77 without it, 0.82 with, at 400 steps);
  the dot is asked only of the token under the object's centre, the one that can see it;
* a per-token read-out of its own grid cell: contrastive and max-pooled training make the
  last layer's tokens position-free (a linear probe finds their cell at 0.07-0.31, 0.999 with
  this read-out), though "where is the red circle?" needs exactly that.

Later stages read its penultimate layer (-2) as LLaVA reads CLIP's, without the CLS token
(recipe.feature_layer): 16 tokens at 64 px with patch 16, as many as the RegNet gives.
"""

import dataclasses
import random

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

from minillava.backbones.recipe import IMAGE_SIZE, Recipe
from minillava.backbones.toy_clip import ToyCLIP, _altered_caption, clip_batch_loss, fit, text_config
from minillava.toyworld import CATEGORIES, COLORS, SIZES, Scene

# The per-token read-out's logits, in this order: the category covering the patch (30 + none),
# its size (none, small, large), the colour of the dot under it (none + 6 colours).
N_CATEGORIES, N_SIZES, N_MARKS = len(CATEGORIES) + 1, 1 + len(SIZES), 1 + len(COLORS)
IGNORE = -100   # cross_entropy's ignore_index: no target for this token


def vit_config(patch: int = 16, width: int = 64, depth: int = 4, heads: int = 4, mlp: int = 4) -> CLIPVisionConfig:
    """CLIP's ViT at toy size: 64 px, patch 16 -> 4 x 4 = 16 tokens (+ CLS); patch 8 -> 64 tokens."""
    if IMAGE_SIZE % patch:
        raise ValueError(f"the ViT's patch size must divide the {IMAGE_SIZE} px image; got {patch}")
    return CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=patch, hidden_size=width,
                            intermediate_size=mlp * width, num_hidden_layers=depth,
                            num_attention_heads=heads, num_channels=3)


def recipe_config(recipe: Recipe) -> CLIPVisionConfig:
    """The ViT a recipe asks for (its vit_* fields)."""
    return vit_config(recipe.vit_patch, recipe.vit_width, recipe.vit_depth, recipe.vit_heads)


class ViTCLIP(ToyCLIP):
    """ToyCLIP on a CLIPVisionModel (pooled = CLS after post_layernorm, tokens = patches),
    with the two per-token read-outs of the module docstring. Saves and loads as ToyCLIP does
    (``ViTCLIP.load`` keeps the read-outs; ``ToyCLIP.load`` reads the CLIP parts alone)."""

    def __init__(self, vision: CLIPVisionModel, text: CLIPTextModel, dim: int = 64):
        super().__init__(vision, text, dim)
        width, grid = vision.config.hidden_size, vision.config.image_size // vision.config.patch_size
        self.token_head = nn.Linear(width, N_CATEGORIES + N_SIZES + N_MARKS)
        self.cell_head = nn.Linear(width, grid * grid)

    def readouts(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) patch tokens -> per-token (category, size, dot) logits and grid-cell logits."""
        return self.token_head(tokens), self.cell_head(tokens)


def centre_token(box, grid: int) -> int:
    """Index of the token under a box's centre, on a grid x grid token map."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(grid - 1, int(cy * grid)) * grid + min(grid - 1, int(cx * grid))


def token_targets(scenes: list[Scene], grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-token read-out's targets, each (B, grid * grid):

    category index (30 = none) and size index (0 none, 1 small, 2 large) of the object covering
    the largest part of each patch (none if it covers < 15 % of it); the dot's colour (0 none,
    1 + colour) only at the token under each object's centre, IGNORE elsewhere. An earlier rule
    (the dot's colour on every token the object covered) taught the read-out "no dot": only the
    centre token can see a 2-4 px dot.
    """
    cats = torch.full((len(scenes), grid * grid), len(CATEGORIES))
    sizes = torch.zeros((len(scenes), grid * grid), dtype=torch.long)
    marks = torch.full((len(scenes), grid * grid), IGNORE)
    cell = 1 / grid
    for b, s in enumerate(scenes):
        for k in range(grid * grid):
            r, c = divmod(k, grid)
            px1, py1 = c * cell, r * cell
            best, area = None, 0.15 * cell * cell
            for o in s.objects:
                x1, y1, x2, y2 = o.box
                a = max(0, min(x2, px1 + cell) - max(x1, px1)) * max(0, min(y2, py1 + cell) - max(y1, py1))
                if a > area:
                    best, area = o, a
            if best is not None:
                cats[b, k] = CATEGORIES.index(best.name)
                sizes[b, k] = 1 + SIZES.index(best.size)
        for o in s.objects:
            marks[b, centre_token(o.box, grid)] = 0 if o.mark is None else 1 + list(COLORS).index(o.mark)
    return cats, sizes, marks


def with_marks(scene: Scene, p: float) -> Scene:
    """With probability p (seeded by the scene), the scene with a dot of another colour on every
    object (toyworld draws it: 15 % of the side, >= 2 px); else unchanged. The fine-detail
    questions ask about dots, so the tower must have seen some."""
    rng = random.Random(f"vit-marks-{scene.seed}")
    if rng.random() >= p:
        return scene
    objs = [dataclasses.replace(o, mark=rng.choice([c for c in COLORS if c != o.color])) for o in scene.objects]
    return dataclasses.replace(scene, objects=tuple(objs))


def safe_altered(scene: Scene, which: int, rng: random.Random) -> str | None:
    """toy_clip's hard negative; None when the recolouring gives an object its own dot's colour."""
    try:
        return _altered_caption(scene, which, rng)
    except ValueError:
        return None


def readout_loss(model: ViTCLIP, tokens: torch.Tensor, scenes: list[Scene], recipe: Recipe) -> torch.Tensor:
    """The per-token read-outs' loss: token_weight x (category + size [+ dot, if scenes have dots])
    + cell_weight x grid cell. A weight of 0 leaves its read-out out."""
    tok, cell = model.readouts(tokens)
    grid = model.vision.config.image_size // model.vision.config.patch_size
    loss = tokens.new_zeros(())
    if recipe.token_weight:
        cats, sizes, marks = token_targets(scenes, grid)
        a, b = N_CATEGORIES, N_CATEGORIES + N_SIZES
        token_loss = (F.cross_entropy(tok[..., :a].flatten(0, 1), cats.flatten())
                      + F.cross_entropy(tok[..., a:b].flatten(0, 1), sizes.flatten()))
        if recipe.mark_frac:
            token_loss = token_loss + F.cross_entropy(tok[..., b:].flatten(0, 1), marks.flatten(),
                                                      ignore_index=IGNORE)
        loss = loss + recipe.token_weight * token_loss
    if recipe.cell_weight:
        cells = torch.arange(grid * grid).repeat(len(scenes))
        loss = loss + recipe.cell_weight * F.cross_entropy(cell.flatten(0, 1), cells)
    return loss


def train_clip(tokenizer, recipe: Recipe, log=print) -> tuple[ViTCLIP, list[float]]:
    """toy_clip.train_clip's training with the ViT of ``recipe``: the same CLIP and label losses on
    the same scenes (a share of them dotted, ``recipe.mark_frac``), plus the per-token read-outs."""
    torch.manual_seed(recipe.seed)
    model = ViTCLIP(CLIPVisionModel(recipe_config(recipe)), CLIPTextModel(text_config(tokenizer)))
    rng = random.Random(f"clip-{recipe.seed}")

    def batch_loss(scenes):
        scenes = [with_marks(s, recipe.mark_frac) for s in scenes]
        loss, tokens = clip_batch_loss(model, tokenizer, scenes, rng, recipe, alter=safe_altered)
        return loss + readout_loss(model, tokens, scenes, recipe)

    losses = fit(model, recipe, batch_loss, log)
    return model.eval(), losses
