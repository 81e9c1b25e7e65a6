"""The recipe of the toy backbones: every number that decides what gets built.

``FULL`` is the recipe of the shipped weights (``minillava zoo build``); ``QUICK`` runs a few
steps of everything, for tests. Both trainings (toy_clip.train_clip, toy_lm.train_lm) read
their sizes and schedules from here, and report their losses the same way.
"""

from dataclasses import dataclass

from minillava.toyworld import VARIANTS

IMAGE_SIZE = 64
# Where later stages read the toy vision tower: its last stage, a 4 x 4 map (16 tokens).
# LLaVA reads CLIP's penultimate layer (-2) because CLIP's last layer is tuned to the
# contrastive objective; the toy tower's last stage is its most informative map, and
# 16 tokens instead of 64 keep the language model's sequences short on a CPU.
VISION_FEATURE_LAYER = -1
MAX_OBJECTS = VARIANTS["base"].n_objects[1]   # a base scene holds 1..4 objects


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


# The language model's rate is a third of CLIP's on purpose: at 3e-3 a toy-lm learns to copy
# a word of the scene by its kind (a colour, a size) but never which object it belongs to
# ("the size of the *red square*", among four objects); at 1e-3 that binding emerges with
# enough steps (benchmarks/lm_reading.py measures both).
FULL = Recipe(clip_steps=1600, clip_batch=64, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
              lm_documents=40_000, lm_steps=5000, lm_batch=32, lm_lr=1e-3)
QUICK = Recipe(clip_steps=12, clip_batch=16, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
               lm_documents=200, lm_steps=12, lm_batch=8, lm_lr=1e-3)
WARMUP_RATIO = 0.03   # both trainings warm up over 3 % of their steps, then decay (train.set_lr)


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
