"""The recipe of the toy backbones: every number that decides what gets built.

``FULL`` is the recipe of the shipped weights (``minillava zoo build``); ``QUICK`` runs a few
steps of everything, for tests. Both trainings (toy_clip.train_clip, toy_lm.train_lm) read
their sizes and schedules from here, and report their losses the same way.

``VIT`` is a candidate, not yet shipped (issue 19 §1): FULL with transformers' CLIP ViT as the
toy vision tower instead of the RegNet (toy_vit.py; ``minillava zoo build --recipe vit``);
``QUICK_VIT`` is its smoke test. ``SLOTS`` adds to it a toy-lm pretrained in slots (toy_slots.py;
``--recipe slots``), ``QUICK_SLOTS`` its smoke test.
"""

from dataclasses import dataclass, replace

from minillava.toyworld import VARIANTS

IMAGE_SIZE = 64
# Where later stages read the toy vision tower: its last stage, a 4 x 4 map (16 tokens).
# LLaVA reads CLIP's penultimate layer (-2) because CLIP's last layer is tuned to the
# contrastive objective; the toy tower's last stage is its most informative map, and
# 16 tokens instead of 64 keep the language model's sequences short on a CPU.
VISION_FEATURE_LAYER = -1
LLAVA_FEATURE_LAYER = -2   # CLIP's penultimate layer, as LLaVA reads it
MAX_OBJECTS = VARIANTS["base"].n_objects[1]   # a base scene holds 1..4 objects
VISION_TOWERS = ("regnet", "vit")   # Recipe.vision_tower: toy_clip's RegNet (shipped), toy_vit's CLIP ViT
SLOT_LAYOUTS = ("grid_cells", "grid_cover")   # Recipe.lm_layout: how toy_slots writes a scene


@dataclass(frozen=True)
class Recipe:
    """Sizes and schedules of one build; FULL ships, QUICK is a smoke test."""
    clip_steps: int
    clip_batch: int
    clip_captions: int   # captions per image and step, each a positive of its own
    clip_lr: float
    clip_label_weight: float   # weight of the auxiliary label loss (see toy_clip.scene_labels)
    lm_documents: int
    lm_steps: int
    lm_batch: int
    lm_lr: float
    seed: int = 0
    # The toy vision tower: "regnet" (toy_clip.vision_config, shipped) or "vit" (transformers'
    # CLIP ViT, toy_vit.vit_config). The fields below are read only by the ViT; their defaults
    # are run H's settings (benchmarks/vit_tower.py), except the read-outs, which are off.
    vision_tower: str = "regnet"
    vit_patch: int = 16   # 64 px / 16 = a 4 x 4 grid: 16 tokens, as many as the RegNet's
    vit_width: int = 64
    vit_depth: int = 4
    vit_heads: int = 4
    token_weight: float = 0.0   # per-token read-out: category, size and dot under each patch
    cell_weight: float = 0.0   # per-token read-out: the token's own grid cell
    mark_frac: float = 0.0   # share of training scenes whose objects carry a dot
    # toy-lm pretrained in slots (toy_slots.py): None trains it on the toy text in words only (shipped);
    # a layout first drills reading scenes written as the tower shows them (lm_drill_steps), then
    # trains lm_steps on the toy text with its scenes in that layout.
    lm_layout: str | None = None
    lm_drill_steps: int = 0
    lm_scene_captions: bool = False   # the toy text's captions read their scene first, as stage 1 shows the image
    # (kind, weight) pairs replacing toy_text.DOCUMENT_KINDS' weights in the slot LM's toy text
    lm_mix: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.vision_tower not in VISION_TOWERS:
            raise ValueError(f"unknown vision_tower {self.vision_tower!r}; valid: {', '.join(VISION_TOWERS)}")
        if self.lm_layout is not None and self.lm_layout not in SLOT_LAYOUTS:
            raise ValueError(f"unknown lm_layout {self.lm_layout!r}; valid: None, {', '.join(SLOT_LAYOUTS)}")


# The language model's rate is a third of CLIP's on purpose: at 3e-3 a toy-lm learns to copy
# a word of the scene by its kind (a colour, a size) but never which object it belongs to
# ("the size of the *red square*", among four objects); at 1e-3 that binding emerges with
# enough steps (benchmarks/lm_reading.py measures both).
FULL = Recipe(clip_steps=1600, clip_batch=64, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
              lm_documents=40_000, lm_steps=5000, lm_batch=32, lm_lr=1e-3)
QUICK = Recipe(clip_steps=12, clip_batch=16, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
               lm_documents=200, lm_steps=12, lm_batch=8, lm_lr=1e-3)
# The ViT candidate: run H of benchmarks/vit_tower.py (patch 16, width 64, 4 layers, lr 1e-3, both
# per-token read-outs, dots on half the scenes), which passed presence, colour, size and grid cell
# at 6,000 steps and whose shape read-out only "clicked" after ~3,000. 8,000 steps is the
# recommendation (margin for count, 0.903 at 6,000), not yet measured.
VIT = replace(FULL, vision_tower="vit", clip_steps=8000, clip_lr=1e-3, token_weight=1.0, cell_weight=1.0,
              mark_frac=0.5)
QUICK_VIT = replace(QUICK, vision_tower="vit", clip_lr=1e-3, token_weight=1.0, cell_weight=1.0, mark_frac=0.5)
# The slots candidate (issue 19): the ViT, and toy-lm pretrained to read scenes written as the ViT shows
# them (toy_slots.py): a 4,000-step reading drill in grid_cells, then 3,000 steps of the toy text with
# its scenes in slots. benchmarks/lm_slots.py and benchmarks/bench_pipeline.py hold every variant tried;
# this one, as benchmarks/lm_slots.py built it (ViT, seeds 0-2 of the pipeline): POPE F1 0.954-0.963,
# looking gap 0.295-0.333, size read from the image 0.88-0.91, against the shipped backbones' 0.916-0.933,
# 0.217-0.255 and 0.33-0.46. Built here (another random initialisation) it answers as well but its detailed
# descriptions collapse to a few words (benchmarks/bench_pipeline.py). The cause (seventh session): the LM takes
# CHAIR's unseen request for another question, from pretraining on; so its text also asks for descriptions in
# toy_text.DETAIL_WORDINGS (lm_mix), which made both LM seeds describe for every wording. Still not shippable:
# seed 0's assistant then answered "No" to every POPE question (F1 0.0; seed 1: 0.943).
SLOTS = replace(VIT, lm_layout="grid_cells", lm_drill_steps=4000, lm_steps=3000, lm_mix=(("detail_any", 1.0),))
QUICK_SLOTS = replace(QUICK_VIT, lm_layout="grid_cells", lm_drill_steps=12, lm_mix=SLOTS.lm_mix)
RECIPES = {"full": (FULL, QUICK), "vit": (VIT, QUICK_VIT),   # `minillava zoo build --recipe NAME [--quick]`
           "slots": (SLOTS, QUICK_SLOTS)}
WARMUP_RATIO = 0.03   # both trainings warm up over 3 % of their steps, then decay (train.set_lr)


def feature_layer(vision_config) -> int:
    """Where later stages read a toy vision tower, by its kind (its config): one answer for the
    zoo's toy-vision and any folder a build wrote.

    The RegNet's last stage (VISION_FEATURE_LAYER, see above); a ViT's penultimate layer, as LLaVA
    reads CLIP's (its CLS token is dropped by VisionTower's default "patch" selection).
    """
    return VISION_FEATURE_LAYER if vision_config.model_type == "regnet" else LLAVA_FEATURE_LAYER


# ----------------------------------------------------------------------------
# Reading a training's losses

def log_progress(log, name: str, step: int, total: int, losses: list[float]) -> None:
    """About ten lines per training, each the mean loss since the one before."""
    every = max(1, total // 10)
    if (step + 1) % every == 0 or step + 1 == total:
        recent = losses[-every:]
        log(f"{name} step {step + 1}/{total}  loss {sum(recent) / len(recent):.3f}")


def final_loss(losses: list[float]) -> float:
    """The mean of the last tenth of the losses: one batch alone is too noisy to compare."""
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)
