"""Tests for minillava.backbones.pretrain: the toy text, the tokenizer, the contrastive loss, a quick build.

The quality of the *shipped* backbones is tested in test_zoo.py; here everything is
built on the spot from a few hundred documents and a few training steps (seconds).
"""

import math
import random
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import LlamaForCausalLM, RegNetModel

from minillava.backbones import pretrain, zoo
from minillava.cli import main
from minillava.conversation import IGNORE_INDEX, IMAGE_MARKER, TokenizationMismatchError, get_template
from minillava.toyworld import make_scene

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def documents():
    return pretrain.lm_documents(300)


@pytest.fixture(scope="module")
def tokenizer(documents):
    return pretrain.train_tokenizer(pretrain.tokenizer_texts(documents))


# ---------------------------------------------------------------- the toy text

def test_documents_are_reproducible_and_cover_every_kind(documents):
    assert pretrain.lm_documents(300) == documents
    assert pretrain.lm_documents(300, seed=1) != documents
    rendered = [get_template(t).render(m) for t, m in documents]
    # one marker per kind: written-scene QA, short answers, detail, reasoning, brief, caption, chats
    assert any(pretrain.rules.FORMAT_PROMPT in r for r in rendered)
    assert any(t == "plain" for t, _ in documents)
    assert any("corners" in r and "background" not in r for r in rendered)
    assert not any(IMAGE_MARKER in r for r in rendered)   # the LM only ever reads written scenes


def test_written_scene_opens_the_first_user_turn():
    annotation = make_scene(3).annotation()
    turn = pretrain.written_scene_turn(annotation, "Is there a red circle?")
    assert turn == pretrain.rules.scene_text(annotation) + "\nIs there a red circle?"
    # the same place LLaVA puts "<image>\n"
    _, write = pretrain.DOCUMENT_KINDS["conversation"][1:]
    messages = write(annotation, random.Random(0))
    assert messages[0]["content"].startswith(pretrain.rules.scene_text(annotation) + "\n")
    assert all(pretrain.rules.scene_text(annotation) not in m["content"] for m in messages[1:])


# ---------------------------------------------------------------- the tokenizer

def test_tokenizer_special_tokens(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in pretrain.SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.encode("<image>\nWhat is shown?", add_special_tokens=False)[0] == 3
    for marker in pretrain.CHAT_MARKERS:
        assert len(tokenizer.encode(marker, add_special_tokens=False)) == 1
    # byte-level: words never seen in training still round-trip, with no unknown token
    text = "Zebra 1234 ünïcode!"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_is_reproducible(documents, tokenizer):
    again = pretrain.train_tokenizer(pretrain.tokenizer_texts(documents))
    assert again.get_vocab() == tokenizer.get_vocab()


WORDS = ["red", "circle", "Is", "there", "a", "blue", "square", "?", ".", ",", "yes", "No", "2", "12",
         "left", "of", "the", "image", "Hello!", "corners", "zebra", "USER", "ASSISTANT:", "it's"]


@st.composite
def conversations(draw):
    text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
    messages = []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text)}]
    if draw(st.booleans()):
        messages[0]["content"] = IMAGE_MARKER + "\n" + messages[0]["content"]
    return messages


@pytest.mark.parametrize("name", ["vicuna_v1", "plain"])
@SETTINGS
@given(messages=conversations())
def test_tokenizer_passes_the_template_check(tokenizer, name, messages):
    if name == "plain":
        messages = messages[:2]
    out = get_template(name).tokenize(messages, tokenizer)   # raises TokenizationMismatchError if not
    supervised = [i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE_INDEX]
    wrap = (" ", "</s>") if name == "vicuna_v1" else ("", "\n")
    answers = "".join(wrap[0] + m["content"] + wrap[1] for m in messages if m["role"] == "assistant")
    assert tokenizer.decode(supervised) == answers


def test_a_tokenizer_without_word_boundaries_fails_the_same_check(documents, monkeypatch):
    """The check above can fail: without the pre-tokenizer's word split, BPE merges
    "ASSISTANT:" with the answer's first word and the label mask cannot be placed."""
    monkeypatch.setattr(pretrain, "SPLIT_PATTERN", r"[\s\S]+")   # the whole text is one "word"
    merged = pretrain.train_tokenizer(pretrain.tokenizer_texts(documents[:100]))
    with pytest.raises(TokenizationMismatchError):
        for template, messages in documents:
            get_template(template).tokenize(messages, merged)


def test_chat_template_renders_vicuna(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "How many corners does a square have?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        get_template("vicuna_v1").render(messages, add_generation_prompt=True)


# ---------------------------------------------------------------- the contrastive loss

def test_clip_loss_is_low_when_pairs_match_and_hard_negatives_raise_it():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(4.6)   # exp(4.6) ~ 100, CLIP's cap
    matched = pretrain.clip_loss(emb, emb, scale)
    shuffled = pretrain.clip_loss(emb, emb.roll(1, 0), scale)
    assert matched < 0.01 and shuffled > 5
    # A hard negative as close to each image as its own caption makes image -> text a coin
    # flip (ln 2); text -> image has no hard negatives, so it stays near 0.
    with_twins = pretrain.clip_loss(emb, emb, scale, hard_negatives=emb.clone())
    assert with_twins.item() == pytest.approx(math.log(2) / 2, abs=0.01)


def test_scene_labels_are_the_annotation():
    scenes = [make_scene(s) for s in range(50)]
    present, count = pretrain.scene_labels(scenes)
    assert present.shape == (50, len(pretrain.CATEGORIES)) and count.shape == (50,)
    for scene, row, n in zip(scenes, present, count):
        names = {o.name for o in scene.objects}
        assert {c for c, p in zip(pretrain.CATEGORIES, row) if p} == names
        assert n + 1 == len(scene.objects) <= pretrain.MAX_OBJECTS


def test_label_loss_rewards_the_right_labels_and_counts_each_category_fully():
    present, count = pretrain.scene_labels([make_scene(s) for s in range(8)])
    k = len(pretrain.CATEGORIES)
    sure = torch.cat([(present * 2 - 1) * 20, torch.nn.functional.one_hot(count, pretrain.MAX_OBJECTS) * 20], dim=1)
    assert pretrain.label_loss(sure, present, count) < 1e-3
    # "absent" everywhere, the prior: every present category costs its full BCE (summed, not averaged)
    absent = torch.cat([torch.full((8, k), -20.0), torch.zeros(8, pretrain.MAX_OBJECTS)], dim=1)
    expected = 20 * present.sum(1).mean() + math.log(pretrain.MAX_OBJECTS)
    assert pretrain.label_loss(absent, present, count).item() == pytest.approx(expected.item(), rel=1e-3)


def _vit(position_scale: float) -> "CLIPVisionModel":  # noqa: F821
    """A random 4 x 4-patch ViT whose position embeddings are scaled by ``position_scale``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    vit = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=64, patch_size=16))
    with torch.no_grad():
        table = vit.embeddings.position_embedding.weight
        table.copy_(torch.randn_like(table) * position_scale)
    return vit


def test_token_position_probe_finds_position_embeddings_and_only_them():
    # Tokens that carry a strong position embedding are told apart every time; without one,
    # a ViT's tokens are the same function of their patch wherever it is, so only content is left.
    placed = pretrain.token_position_probe(_vit(1.0), n_train=100, n_test=50, layer=-1)
    unplaced = pretrain.token_position_probe(_vit(0.0), n_train=100, n_test=50, layer=-1)
    assert placed["accuracy"] > 0.95 and placed["chance"] == 1 / 16
    assert unplaced["accuracy"] < 0.3
    assert len(placed["by_token"]) == 4 and all(len(row) == 4 for row in placed["by_token"])


def test_altered_caption_changes_one_object():
    scene = make_scene(5)
    seen_none = False
    for i in range(40):
        which = i % 5
        caption = pretrain._altered_caption(scene, which, random.Random(i))
        if caption is None:   # the change does not show in this kind of caption
            seen_none = True
            continue
        original = scene.captions()[which]
        assert caption != original
        assert len(caption.split()) - len(original.split()) in (-1, 0, 1)   # "an orange" vs "a red"
    assert seen_none


# ---------------------------------------------------------------- a quick build, through the CLI

@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    lines = []
    report = pretrain.build(out, pretrain.QUICK, processes=1, log=lines.append)
    return out, report, lines


def test_quick_build_lowers_both_losses(quick_build):
    _, report, lines = quick_build
    for name in ("clip_loss", "lm_loss"):
        first, last = report[name]
        assert last < first, f"{name}: {first:.3f} -> {last:.3f}"
    assert any(line.startswith("clip step") for line in lines) and any(line.startswith("lm step") for line in lines)


def test_quick_build_writes_loadable_folders(quick_build, monkeypatch):
    out, _, _ = quick_build
    assert isinstance(zoo.load(str(out / "toy-vision")), RegNetModel)
    assert isinstance(zoo.load(str(out / "toy-lm")), LlamaForCausalLM)
    tokenizer = zoo.load_tokenizer(str(out / "toy-lm"))
    assert tokenizer.convert_tokens_to_ids(IMAGE_MARKER) == 3
    # the manifest covers every file, and zoo.path accepts the folder once pointed at it
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", out)
    for name in zoo.available():
        assert zoo.path(name) == out / name
    clip = zoo.load("toy-clip")
    images = pretrain.scene_pixels([make_scene(s) for s in range(4)])
    assert clip.image_embeds(images).shape == (4, 64)


def test_cli_quick_build_needs_an_output_folder():
    with pytest.raises(SystemExit, match="--out"):
        main(["zoo", "build", "--quick"])


def test_cli_quick_build(tmp_path, capsys):
    main(["zoo", "build", "--quick", "--out", str(tmp_path), "--processes", "1"])
    printed = capsys.readouterr().out
    losses = re.search(r"clip loss (\S+) -> (\S+), lm loss (\S+) -> (\S+),", printed)
    clip_first, clip_last, lm_first, lm_last = map(float, losses.groups())
    assert clip_last < clip_first and lm_last < lm_first
    assert (tmp_path / zoo.MANIFEST).is_file()
