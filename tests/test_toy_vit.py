"""Tests for minillava.backbones.toy_vit: the CLIP ViT toy tower, a one-switch build option.

A QUICK_VIT build (seconds) goes through the same doors as the shipped RegNet: zoo.load and
pretrained_model on its folder, `minillava pipeline` on it, and `minillava export` of the
assistant, which (unlike the RegNet's) is a genuine LlavaForConditionalGeneration.
"""

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPVisionModel, LlavaForConditionalGeneration

from minillava.backbones import build, recipe, toy_clip, toy_vit, zoo
from minillava.backbones.recipe import FULL, QUICK, QUICK_VIT, VIT, Recipe
from minillava.chat import load_assistant
from minillava.cli import main
from minillava.conversation import IMAGE_MARKER
from minillava.toyworld import CATEGORIES, COLORS, Obj, Scene, make_scene, render

GRID = 4   # 64 px, patch 16


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_the_shipped_recipes_keep_the_regnet_and_its_defaults():
    """FULL and QUICK build today's RegNet: every field the ViT added keeps its default, so the
    default build cannot switch towers silently. VIT differs from FULL only where run H did."""
    added = [f for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING]   # seed and the ViT's
    assert {"vision_tower", "vit_patch", "token_weight", "cell_weight", "mark_frac"} < {f.name for f in added}
    for shipped in (FULL, QUICK):
        assert {f.name: getattr(shipped, f.name) for f in added} == {f.name: f.default for f in added}
        assert shipped.vision_tower == "regnet" and shipped.token_weight == shipped.cell_weight == shipped.mark_frac == 0
    changed = {f.name for f in dataclasses.fields(Recipe) if getattr(VIT, f.name) != getattr(FULL, f.name)}
    assert changed == {"vision_tower", "clip_steps", "clip_lr", "token_weight", "cell_weight", "mark_frac"}
    assert (VIT.clip_steps, VIT.clip_lr, VIT.vit_patch, VIT.vit_width, VIT.vit_depth) == (8000, 1e-3, 16, 64, 4)
    assert recipe.RECIPES["full"] == (FULL, QUICK) and recipe.RECIPES["vit"] == (VIT, QUICK_VIT)
    assert recipe.RECIPES["slots"] == (recipe.SLOTS, recipe.QUICK_SLOTS)
    with pytest.raises(ValueError, match="unknown vision_tower 'vgg'; valid: regnet, vit"):
        dataclasses.replace(FULL, vision_tower="vgg")
    with pytest.raises(ValueError, match="trains through toy_vit.train_clip"):
        toy_clip.train_clip(None, QUICK_VIT)


def test_token_targets_on_a_hand_made_scene():
    """A large red circle with a blue dot over the top-left 2 x 2 tokens, a small green square
    filling 25 % of the bottom-right token; every other token is empty."""
    circle = Obj("circle", "red", "large", (0.0, 0.0, 0.5, 0.5), mark="blue")
    square = Obj("square", "green", "small", (0.75, 0.75, 0.875, 0.875))
    sliver = Obj("triangle", "yellow", "small", (0.55, 0.0, 0.6, 0.15))   # 12 % of token 2: too little
    cats, sizes, marks = toy_vit.token_targets([Scene(0, (circle, square, sliver), "white", 64, 64)], GRID)
    none = len(CATEGORIES)
    expected_cats = [none] * 16
    for k in (0, 1, 4, 5):
        expected_cats[k] = CATEGORIES.index("red circle")
    expected_cats[15] = CATEGORIES.index("green square")
    assert cats[0].tolist() == expected_cats
    assert sizes[0].tolist() == [2 if k in (0, 1, 4, 5) else 1 if k == 15 else 0 for k in range(16)]
    # the dot only at the token under each object's centre: the circle's (0.25, 0.25) is token 5;
    # the square has no dot (0); the sliver's centre (0.575, 0.1) is token 2, also no dot
    expected_marks = [-100] * 16
    expected_marks[5], expected_marks[15], expected_marks[2] = 1 + list(COLORS).index("blue"), 0, 0
    assert marks[0].tolist() == expected_marks


def test_with_marks_dots_every_object_of_a_share_of_the_scenes():
    scenes = [make_scene(s) for s in range(200)]
    assert all(toy_vit.with_marks(s, 0.0) == s for s in scenes)
    dotted = [toy_vit.with_marks(s, 0.5) for s in scenes]
    changed = [d for d, s in zip(dotted, scenes) if d != s]
    assert 70 < len(changed) < 130 and dotted == [toy_vit.with_marks(s, 0.5) for s in scenes]   # seeded
    assert all(o.mark not in (None, o.color) for d in changed for o in d.objects)
    assert render(changed[0]) != render(make_scene(changed[0].seed))


def test_the_command_builds_the_candidate_only_where_told(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--recipe vit builds a candidate: give --out DIR"):
        main(["zoo", "build", "--recipe", "vit"])   # never over the shipped weights by accident
    main(["zoo", "build", "--recipe", "vit", "--quick", "--out", str(tmp_path), "--processes", "1"])
    assert "clip loss" in capsys.readouterr().out
    assert isinstance(zoo.load(str(tmp_path / "toy-vision")), CLIPVisionModel)


@pytest.fixture(scope="module")
def vit_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit-zoo")
    lines = []
    report = build.build(out, QUICK_VIT, processes=1, log=lines.append)
    return out, report, lines


def test_a_quick_vit_build_trains_every_read_out_and_saves_a_clip_vit(vit_zoo):
    out, report, lines = vit_zoo
    first, last = report["clip_loss"]
    assert last < first and any(line.startswith("clip step 12/12") for line in lines)
    assert set(json.loads((out / zoo.MANIFEST).read_text())) == set(zoo.SHIPPED)
    clip = toy_vit.ViTCLIP.load(out / "toy-clip")   # the per-token read-outs come back too
    pixels = toy_clip.scene_pixels([make_scene(s) for s in range(2)])
    with torch.no_grad():
        tokens = clip.image_features(pixels)[2]
        tok, cell = clip.readouts(tokens)
        plain = toy_clip.ToyCLIP.load(out / "toy-clip")   # ToyCLIP reads the CLIP parts alone
        assert torch.allclose(plain.image_embeds(pixels), clip.image_embeds(pixels), atol=1e-6)
    assert tokens.shape == (2, 16, 64) and tok.shape == (2, 16, 31 + 3 + 7) and cell.shape == (2, 16, 16)
    processor = json.loads((out / "toy-vision" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 64, "width": 64} and processor["image_processor_type"] == "CLIPImageProcessor"


def test_its_toy_vision_is_read_at_layer_minus_2_without_cls_from_a_folder_or_the_zoo(vit_zoo, monkeypatch):
    out, _, _ = vit_zoo
    tower = zoo.load(str(out / "toy-vision"))
    assert isinstance(tower, CLIPVisionModel)
    model, _ = zoo.pretrained_model(str(out / "toy-vision"), str(out / "toy-lm"))
    assert model.config.vision_feature_layer == -2 and model.vision_tower.num_patches == 16
    pixels = toy_clip.scene_pixels([make_scene(7)])
    with torch.no_grad():
        hidden = tower(pixels, output_hidden_states=True).hidden_states
        assert torch.equal(model.vision_tower(pixels), hidden[-2][:, 1:])   # penultimate layer, CLS dropped
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", out)   # as if it shipped: the zoo name picks the same layer
    assert zoo.pretrained_model()[0].config.vision_feature_layer == -2
    monkeypatch.undo()
    assert zoo.pretrained_model()[0].config.vision_feature_layer == -1   # the shipped RegNet: its last stage


@pytest.fixture(scope="module")
def vit_assistant(vit_zoo, tmp_path_factory):
    """A 2-step `minillava pipeline` (no evaluation) on the quick ViT zoo's folders."""
    zoo_folder, _, _ = vit_zoo
    out = tmp_path_factory.mktemp("vit-pipeline")
    main(["pipeline", "--out", str(out), "--vision", str(zoo_folder / "toy-vision"), "--language",
          str(zoo_folder / "toy-lm"), "--no-eval", "--device", "cpu", "--scenes", "8", "--stage1-steps", "2",
          "--stage2-steps", "2", "--stage1-batch", "2", "--stage2-batch", "2"])
    return out


def test_the_pipeline_runs_on_the_vit_tower(vit_assistant):
    used = json.loads((vit_assistant / "config.json").read_text())
    assert used["vision"].endswith("toy-vision") and used["eval"] is False
    assert len((vit_assistant / "stage2" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (vit_assistant / "assistant" / "model.safetensors").is_file()


def test_its_assistant_exports_to_transformers_llava_with_the_same_logits(vit_assistant, tmp_path):
    main(["export", str(vit_assistant / "assistant"), str(tmp_path / "hf")])
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path / "hf", local_files_only=True)
    processor = AutoProcessor.from_pretrained(tmp_path / "hf", local_files_only=True, backend="pil")
    assert type(hf) is LlavaForConditionalGeneration and hf.config.vision_feature_layer == -2
    assistant = load_assistant(vit_assistant / "assistant")
    image, question = render(make_scene(11)), "What colour is the circle?"
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    theirs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    ids = torch.tensor([assistant.prompt_ids([{"role": "user", "content": f"{IMAGE_MARKER}\n{question}"}])])
    pixels = assistant.processor([image])["pixel_values"]
    assert torch.equal(theirs["pixel_values"], pixels)
    assert (theirs["input_ids"] == assistant.model.config.image_token_id).sum() == 16
    with torch.no_grad():
        ours = assistant.model(ids, pixels).logits
        their_logits = hf(**theirs).logits
    assert ours.shape == their_logits.shape
    assert torch.allclose(ours, their_logits, atol=1e-4), (ours - their_logits).abs().max()
