"""toy-clip: a vision tower and a text tower trained together with CLIP's contrastive loss.

CLIP learns to map an image and its caption to nearby unit vectors, from 400M pairs. The
toy CLIP learns the same on rendered toy scenes and their captions, with two shortcuts a
CPU needs: hard negative captions (one object's colour or shape changed) and an auxiliary
read-out of the scene's own labels (which categories, how many objects). Later stages keep
only its vision tower (``toy-vision``), as LLaVA keeps only CLIP's.
"""

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, CLIPTextConfig, CLIPTextModel, PretrainedConfig, RegNetConfig, RegNetModel

from minillava.backbones.recipe import IMAGE_SIZE, MAX_OBJECTS, WARMUP_RATIO, Recipe, log_progress
from minillava.image import CLIP_MEAN, CLIP_STD, normalize
from minillava.toyworld import CATEGORIES, COLORS, SHAPES, TRAIN_SEEDS, Scene, make_scene, render
from minillava.train import set_lr


def vision_config() -> RegNetConfig:
    """A three-stage RegNet: 64 px -> 32 (stem) -> 16 -> 8 -> 4.

    Small convolutions with batch norm learn which colour sits on which shape faster
    on a CPU than a ViT of the same cost, which has to assemble shapes from 8-pixel
    patches by attention. hidden_states[-1] is the 4 x 4 map of the last stage: 16
    patch tokens of width 64 (recipe.VISION_FEATURE_LAYER); [-2] is the 8 x 8 map before it.
    """
    return RegNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 64],
                        depths=[1, 1, 1], groups_width=8, layer_type="x")


def text_config(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


HEADS_FILE = "heads.safetensors"   # ToyCLIP's own weights: projections, temperature, label read-outs


class ToyCLIP(nn.Module):
    """CLIP at toy scale: a vision tower, a text tower, a projection each, one temperature.

    An image and a caption are each mapped to a unit vector of size ``dim``; their dot
    product, times exp(logit_scale), is how well they match.
    """

    def __init__(self, vision: nn.Module, text: CLIPTextModel, dim: int = 64):
        super().__init__()
        self.vision, self.text = vision, text
        # A conv tower lists its stages' widths; a ViT (CLIPVisionModel) has one hidden_size.
        width = getattr(vision.config, "hidden_sizes", [getattr(vision.config, "hidden_size", None)])[-1]
        self.visual_projection = nn.Linear(width, dim, bias=False)
        self.text_projection = nn.Linear(text.config.hidden_size, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))   # CLIP's initial temperature
        # The auxiliary read-outs (see scene_labels): is each category somewhere in the image
        # (asked of every patch token, the answer is the most confident one: the projector later
        # reads tokens, so each token should know what sits on it), and how many objects.
        self.presence_head = nn.Linear(width, len(CATEGORIES))
        self.count_head = nn.Linear(width, MAX_OBJECTS)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dim) unit vectors, from the tower's pooled output."""
        return self.image_embeds_and_labels(pixel_values)[0]

    def image_embeds_and_labels(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (B, dim) unit vectors and (B, 30 + 4) label logits (presence, count)."""
        return self.image_features(pixel_values)[:2]

    def image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image_embeds_and_labels, and the last layer's (B, h * w, C) patch tokens they were read
        from (for read-outs of their own: toy_vit's per-token ones)."""
        out = self.vision(pixel_values)
        pooled = out.pooler_output.flatten(1)   # a conv tower pools to (B, C, 1, 1); a ViT's is its CLS
        if out.last_hidden_state.dim() == 4:
            tokens = out.last_hidden_state.flatten(2).transpose(1, 2)   # (B, C, h, w) -> (B, h * w, C)
        else:
            tokens = out.last_hidden_state[:, 1:]   # a ViT: (B, 1 + h * w, C), CLS first
        labels = torch.cat([self.presence_head(tokens).amax(1), self.count_head(pooled)], dim=-1)
        return F.normalize(self.visual_projection(pooled), dim=-1), labels, tokens

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids ending in </s> -> (B, dim) unit vectors, from the state at </s>."""
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def save(self, folder: Path) -> None:
        """vision/ and text/ as transformers folders, the projections and temperature beside them."""
        self.vision.save_pretrained(folder / "vision")
        self.text.save_pretrained(folder / "text")
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith(("vision.", "text."))}
        save_file({k: v.contiguous() for k, v in heads.items()}, str(folder / HEADS_FILE))

    @classmethod
    def load(cls, folder: Path) -> "ToyCLIP":
        vision = AutoModel.from_pretrained(folder / "vision", local_files_only=True)
        text = CLIPTextModel.from_pretrained(folder / "text", local_files_only=True)
        heads = load_file(str(folder / HEADS_FILE))
        model = cls(vision, text, dim=heads["visual_projection.weight"].shape[0])
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not name.startswith(("vision.", "text.")):
                    param.copy_(heads[name])
        return model.eval()


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric contrastive loss; image i belongs with text i.

    image, text: (B, D) unit vectors. hard_negatives: (H, D) extra captions that match
    no image -- each a true caption with one object's colour or shape changed. In-batch
    negatives of a small batch rarely differ in a single word, so without them the
    encoder can get away with a bag of colours and a bag of shapes; a caption that
    names the wrong colour *on the right shape* forces it to bind the two.
    """
    candidates = text if hard_negatives is None else torch.cat([text, hard_negatives])
    logits = logit_scale.exp().clamp(max=100) * image @ candidates.T   # (B, B + H)
    target = torch.arange(len(image))
    image_to_text = F.cross_entropy(logits, target)
    text_to_image = F.cross_entropy(logits[:, :len(text)].T, target)
    return (image_to_text + text_to_image) / 2


def _altered_caption(scene: Scene, which: int, rng: random.Random) -> str | None:
    """Caption number ``which`` of the scene with one object recoloured or reshaped.

    None when the change does not show in that caption (e.g. a colour change in the
    shape-count caption).
    """
    i = rng.randrange(len(scene.objects))
    obj = scene.objects[i]
    if rng.random() < 0.5:
        obj = dataclasses.replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
    else:
        obj = dataclasses.replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    altered = dataclasses.replace(scene, objects=scene.objects[:i] + (obj,) + scene.objects[i + 1:])
    caption = altered.captions()[which]
    return None if caption == scene.captions()[which] else caption


def scene_labels(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """What is in each scene: (B, 30) presence of every category (0/1) and (B,) object count - 1.

    CLIP learns these from captions alone, given 400M pairs. In the few minutes a CPU
    gives the toy CLIP, captions teach colours and shapes but bind them slowly, and never
    teach "how many" well (a probe on a contrastive-only tower stayed near the all-absent
    prior). So the tower also trains a linear read-out of its pooled features against the
    scene's own annotation -- the supervised shortcut a toy world can afford. Its weight
    is ``Recipe.clip_label_weight``; 0 gives pure CLIP.
    """
    present = torch.tensor([[c in {o.name for o in s.objects} for c in CATEGORIES] for s in scenes]).float()
    return present, torch.tensor([len(s.objects) - 1 for s in scenes])


def label_loss(logits: torch.Tensor, present: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, 30 + MAX_OBJECTS) logits -> presence BCE plus count cross-entropy.

    The BCE is summed over the 30 categories, not averaged: each is a question of its
    own, and averaged, the rare "present" answers get so little gradient that the
    read-out settles on "absent" for everything (right 92 % of the time).
    """
    k = len(CATEGORIES)
    presence = F.binary_cross_entropy_with_logits(logits[:, :k], present, reduction="none").sum(1).mean()
    return presence + F.cross_entropy(logits[:, k:], count)


def scene_pixels(scenes: list[Scene]) -> torch.Tensor:
    """Scenes -> (B, 3, 64, 64) pixels, normalised as minillava.image does for CLIP."""
    return normalize(np.stack([np.asarray(render(s, IMAGE_SIZE, IMAGE_SIZE)) for s in scenes]), CLIP_MEAN, CLIP_STD)


def caption_batch(tokenizer, captions: list[str]) -> dict:
    """Captions -> padded input_ids / attention_mask, each ending in </s> (where CLIP pools)."""
    return tokenizer([c + tokenizer.eos_token for c in captions], padding=True, return_tensors="pt",
                     add_special_tokens=False)


def embed_captions(model: ToyCLIP, tokenizer, captions: list[str], chunk: int = 96) -> torch.Tensor:
    """Captions -> (N, dim) unit vectors, in the order given.

    A padded batch costs as much as its longest caption times its size, and the five
    kinds of caption differ in length by a factor of three: embedding them in chunks of
    similar length costs about a third less.
    """
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    chunks = [order[i:i + chunk] for i in range(0, len(order), chunk)]
    embeds = torch.cat([model.text_embeds(**caption_batch(tokenizer, [captions[i] for i in c])) for c in chunks])
    return embeds[torch.argsort(torch.tensor(order))]


def train_clip(tokenizer, recipe: Recipe, log=print,
               vision: PretrainedConfig | None = None) -> tuple[ToyCLIP, list[float]]:
    """Contrastive pretraining on fresh scenes every step; returns the model and its losses.

    vision: the tower's config, default ``vision_config()`` (the RegNet); a
    ``CLIPVisionConfig`` trains transformers' CLIP ViT in the same loop, without toy_vit's
    per-token read-outs (a recipe with ``vision_tower="vit"`` trains through toy_vit.train_clip).
    """
    if recipe.vision_tower != "regnet":
        raise ValueError(f"train_clip trains the RegNet; a {recipe.vision_tower!r} recipe trains through "
                         "toy_vit.train_clip (build.make_clip picks it)")
    torch.manual_seed(recipe.seed)
    tower = RegNetModel(vision_config()) if vision is None else AutoModel.from_config(vision)
    model = ToyCLIP(tower, CLIPTextModel(text_config(tokenizer)))
    rng = random.Random(f"clip-{recipe.seed}")
    losses = fit(model, recipe, lambda scenes: clip_batch_loss(model, tokenizer, scenes, rng, recipe)[0], log)
    return model.eval(), losses


def clip_batch_loss(model: ToyCLIP, tokenizer, scenes: list[Scene], rng: random.Random, recipe: Recipe,
                    alter=_altered_caption) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one batch: CLIP's, against hard negatives, plus the label read-out's.

    Each image is matched with ``recipe.clip_captions`` of its five captions in turn (the
    vision tower, the costly half, runs once for all of them), against hard negative
    captions of the batch (``alter`` makes them). Also returns the patch tokens the image
    side was read from.
    """
    B, K = len(scenes), recipe.clip_captions
    picks = [rng.sample(range(5), K) for _ in scenes]
    captions = [s.captions()[p[k]] for k in range(K) for s, p in zip(scenes, picks)]
    altered = [alter(s, p[k], rng) for k in range(K) for s, p in zip(scenes, picks)]
    text = embed_captions(model, tokenizer, captions + [c for c in altered if c])
    positives, hard = text[:K * B].view(K, B, -1), text[K * B:]
    images, label_logits, tokens = model.image_features(scene_pixels(scenes))
    loss = sum(clip_loss(images, positives[k], model.logit_scale, hard) for k in range(K)) / K
    loss = loss + recipe.clip_label_weight * label_loss(label_logits, *scene_labels(scenes))
    return loss, tokens


def fit(model: nn.Module, recipe: Recipe, batch_loss, log=print) -> list[float]:
    """The training loop of a toy CLIP: AdamW, warm-up then decay, ``recipe.clip_steps`` steps.

    Step s sees training scenes [s * B, (s + 1) * B), B = recipe.clip_batch, fresh ones every
    step; ``batch_loss(scenes)`` gives their loss. Returns the losses, one per step.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.clip_lr, weight_decay=0.01)
    losses, B = [], recipe.clip_batch
    for step in range(recipe.clip_steps):
        set_lr(optimizer, recipe.clip_lr, step, recipe.clip_steps, WARMUP_RATIO)
        loss = batch_loss([make_scene(s) for s in TRAIN_SEEDS[step * B:(step + 1) * B]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        log_progress(log, "clip", step, recipe.clip_steps, losses)
    return losses
