"""Tests for minillava.backbones.toy_clip: the contrastive loss, the label read-out, the hard negatives.

The shipped toy-clip is measured in test_zoo.py (retrieval, linear probe); a quick training
run is in test_build.py.
"""

import math
import random

import pytest
import torch

from minillava.backbones import toy_clip
from minillava.backbones.recipe import MAX_OBJECTS
from minillava.toyworld import CATEGORIES, make_scene


def test_clip_loss_is_low_when_pairs_match_and_hard_negatives_raise_it():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(4.6)   # exp(4.6) ~ 100, CLIP's cap
    matched = toy_clip.clip_loss(emb, emb, scale)
    shuffled = toy_clip.clip_loss(emb, emb.roll(1, 0), scale)
    assert matched < 0.01 and shuffled > 5
    # A hard negative as close to each image as its own caption makes image -> text a coin
    # flip (ln 2); text -> image has no hard negatives, so it stays near 0.
    with_twins = toy_clip.clip_loss(emb, emb, scale, hard_negatives=emb.clone())
    assert with_twins.item() == pytest.approx(math.log(2) / 2, abs=0.01)


def test_scene_labels_are_the_annotation():
    scenes = [make_scene(s) for s in range(50)]
    present, count = toy_clip.scene_labels(scenes)
    assert present.shape == (50, len(CATEGORIES)) and count.shape == (50,)
    for scene, row, n in zip(scenes, present, count):
        names = {o.name for o in scene.objects}
        assert {c for c, p in zip(CATEGORIES, row) if p} == names
        assert n + 1 == len(scene.objects) <= MAX_OBJECTS


def test_label_loss_rewards_the_right_labels_and_counts_each_category_fully():
    present, count = toy_clip.scene_labels([make_scene(s) for s in range(8)])
    k = len(CATEGORIES)
    sure = torch.cat([(present * 2 - 1) * 20, torch.nn.functional.one_hot(count, MAX_OBJECTS) * 20], dim=1)
    assert toy_clip.label_loss(sure, present, count) < 1e-3
    # "absent" everywhere, the prior: every present category costs its full BCE (summed, not averaged)
    absent = torch.cat([torch.full((8, k), -20.0), torch.zeros(8, MAX_OBJECTS)], dim=1)
    expected = 20 * present.sum(1).mean() + math.log(MAX_OBJECTS)
    assert toy_clip.label_loss(absent, present, count).item() == pytest.approx(expected.item(), rel=1e-3)


def test_altered_caption_changes_one_object():
    scene = make_scene(5)
    seen_none = False
    for i in range(40):
        which = i % 5
        caption = toy_clip._altered_caption(scene, which, random.Random(i))
        if caption is None:   # the change does not show in this kind of caption
            seen_none = True
            continue
        original = scene.captions()[which]
        assert caption != original
        assert len(caption.split()) - len(original.split()) in (-1, 0, 1)   # "an orange" vs "a red"
    assert seen_none


def test_train_clip_takes_a_clip_vit_tower(tmp_path):
    """Issue 19's optional hook: a CLIPVisionConfig trains transformers' CLIP ViT in the same loop,
    its CLS pooled, its patch tokens read out; it saves and loads like the RegNet."""
    import dataclasses

    from transformers import CLIPVisionConfig, CLIPVisionModel

    from minillava.backbones import zoo
    from minillava.backbones.recipe import QUICK
    from minillava.vision import VisionTower

    torch.set_num_threads(1)
    tokenizer = zoo.load_tokenizer("toy-lm")
    config = CLIPVisionConfig(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2)
    clip, losses = toy_clip.train_clip(tokenizer, dataclasses.replace(QUICK, clip_steps=3, clip_batch=8),
                                       log=lambda _: None, vision=config)
    assert isinstance(clip.vision, CLIPVisionModel) and len(losses) == 3 and all(math.isfinite(x) for x in losses)
    embeds, labels = clip.image_embeds_and_labels(toy_clip.scene_pixels([make_scene(s) for s in range(2)]))
    assert embeds.shape == (2, 64) and labels.shape == (2, len(CATEGORIES) + MAX_OBJECTS)
    clip.save(tmp_path)
    again = toy_clip.ToyCLIP.load(tmp_path)
    pixels = toy_clip.scene_pixels([make_scene(3)])
    with torch.no_grad():
        assert torch.allclose(again.image_embeds(pixels), clip.image_embeds(pixels), atol=1e-5)
        assert VisionTower(again.vision, feature_layer=-1)(pixels).shape == (1, 16, 32)   # CLS dropped
