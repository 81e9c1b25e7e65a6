"""Tests for minillava.backbones.zoo: the shipped toy backbones (quality gates) and the loading door.

The quality gates load the weights shipped in minillava/backbones/weights/ and test them on
held-out scenes and questions; nothing here touches the network.
"""

import shutil

import pytest
import torch
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (CLIPConfig, CLIPModel, CLIPVisionModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, RegNetModel, SiglipConfig, SiglipModel, SiglipVisionModel)

from minillava.backbones import gates, zoo
from minillava.backbones.toy_clip import scene_pixels, vision_config
from minillava.backbones.toy_lm import answer
from minillava.backbones.toy_text import lm_documents
from minillava.conversation import IGNORE_INDEX, IMAGE_MARKER, get_template
from minillava.model import MiniLlava
from minillava.toyworld import make_scene


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# The toy-lm's reading gate (gates.scene_reading): accuracy with the question's own scene
# written out, and how much of it is lost with another scene's text, overall and per topic.
# Measured on the shipped toy-lm (150 scenes): 0.79 own, gap 0.38; topic gaps 0.41 to 0.81,
# except size (-0.11) and relation (0.00): it does not yet read which size belongs to the
# named object, nor compare two objects' positions (issue 6's closing notes).
OWN_SCENE_GATE, GAP_GATE, TOPIC_GAP_GATE = 0.75, 0.3, 0.3
READ_TOPICS = ("presence", "count", "colour", "shape", "position")


@pytest.fixture(scope="module")
def tokenizer():
    return zoo.load_tokenizer("toy-lm")


# ---------------------------------------------------------------- what is shipped

def test_available_names_and_intact_files():
    assert zoo.available() == ["toy-clip", "toy-lm", "toy-vision"]
    for name in zoo.available():
        assert zoo.path(name).is_dir()
    total = sum(f.stat().st_size for f in zoo.WEIGHTS_DIR.rglob("*") if f.is_file())
    assert total <= 20 * 2 ** 20, f"shipped weights take {total / 2 ** 20:.1f} MB, more than 20 MB"


def test_loaded_types_and_shapes():
    vision, lm = zoo.load("toy-vision"), zoo.load("toy-lm")
    assert isinstance(vision, RegNetModel) and isinstance(lm, LlamaForCausalLM)
    assert not vision.training and not lm.training
    tower = zoo.pretrained_model()[0].vision_tower
    features = tower(scene_pixels([make_scene(s) for s in range(3)]))
    assert features.shape == (3, 16, 64)   # 16 patch tokens of width 64 per 64x64 image


def test_the_same_files_load_with_plain_transformers():
    assert isinstance(RegNetModel.from_pretrained(zoo.path("toy-vision")), RegNetModel)
    assert isinstance(LlamaForCausalLM.from_pretrained(zoo.path("toy-lm")), LlamaForCausalLM)
    assert isinstance(PreTrainedTokenizerFast.from_pretrained(zoo.path("toy-lm")), PreTrainedTokenizerFast)


# ---------------------------------------------------------------- the shipped tokenizer

def test_shipped_tokenizer_special_tokens(tokenizer):
    assert tokenizer.convert_tokens_to_ids(IMAGE_MARKER) == 3
    assert tokenizer.encode("<image>\nHi", add_special_tokens=False)[0] == 3
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert zoo.load("toy-lm").config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("name", ["vicuna_v1", "plain"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_shipped_tokenizer_passes_the_template_check(tokenizer, name, data):
    """Real toy turns (written scenes, questions, answers) tokenise without a mismatch."""
    template, messages = data.draw(st.sampled_from(lm_documents(60, seed=7)))
    if data.draw(st.booleans()):   # the same turn with an image in front, as stage 2 has it
        messages = [dict(messages[0], content=IMAGE_MARKER + "\n" + messages[0]["content"])] + messages[1:]
    if name == "plain":
        messages = messages[:2]
    out = get_template(name).tokenize(messages, tokenizer)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    supervised = tokenizer.decode([i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE_INDEX])
    assert all(a in supervised for a in answers)


# ---------------------------------------------------------------- quality gates

def test_gate_linear_probe_reads_presence_and_count():
    # (its time, about 20 s on one thread, is measured by benchmarks/bench_zoo.py, not asserted here)
    result = gates.linear_probe(zoo.load("toy-vision"))
    # "absent" for every label is already right most of the time: the probe must do better
    assert result["presence"] >= 0.95 > result["presence_all_absent"], result
    assert result["count"] >= 0.95, result


def test_gate_linear_probe_fails_on_a_random_tower():
    """The same gate, on an untrained tower of the same shape, does not pass."""
    torch.manual_seed(0)
    result = gates.linear_probe(RegNetModel(vision_config()), n_train=1500, n_test=500)
    assert result["presence"] < 0.95


def test_gate_image_to_caption_retrieval(tokenizer):
    assert gates.retrieval_accuracy(zoo.load("toy-clip"), tokenizer) >= 0.80


def test_gate_knowledge_questions(tokenizer):
    assert gates.knowledge_accuracy(zoo.load("toy-lm"), tokenizer) >= 0.90


def test_gate_lm_reads_a_written_scene(tokenizer):
    """The skill stage 2 builds on: answers come from the scene's text, not from the question.

    Each question is asked after its own scene and after another scene's: a model that
    answered from the question alone would score the same twice.
    """
    result = gates.scene_reading(zoo.load("toy-lm"), tokenizer, n_scenes=150)
    assert result["own scene"]["accuracy"] >= OWN_SCENE_GATE and result["gap"] >= GAP_GATE, result
    assert all(result["gap_by_topic"][t] >= TOPIC_GAP_GATE for t in READ_TOPICS), result["gap_by_topic"]


def test_gate_reading_fails_on_a_guesser(monkeypatch):
    """The same measurement gives a model that does not read no gap, and one that does a full one."""
    def read_background(lm, tokenizer, prompts, max_new_tokens):
        # The scene's first words name the background: "On a gray background, ..."
        return [p.split(" background")[0].split()[-1] for p in prompts]

    background = lambda annotation, rng: [("What colour is the background?", annotation["background"])]  # noqa: E731
    monkeypatch.setattr(gates, "answer", read_background)   # where scene_reading looks it up
    result = gates.scene_reading(None, None, n_scenes=30, questions=background)
    assert result["own scene"]["accuracy"] == 1.0 and result["gap"] > 0.4
    monkeypatch.setattr(gates, "answer", lambda lm, tokenizer, prompts, max_new_tokens: ["gray"] * len(prompts))
    guess = gates.scene_reading(None, None, n_scenes=30, questions=background)
    assert guess["gap"] == 0.0 and guess["own scene"]["accuracy"] < OWN_SCENE_GATE


def test_batched_answers_equal_one_by_one(tokenizer):
    lm = zoo.load("toy-lm")
    questions = ["How many corners does a triangle have?", "What is the opposite of above?", "Hello!"]
    assert answer(lm, tokenizer, questions) == [answer(lm, tokenizer, [q])[0] for q in questions]


def test_pretrained_model_runs_a_training_step(tokenizer):
    model, tok = zoo.pretrained_model()
    assert model.config.image_token_id == tok.convert_tokens_to_ids(IMAGE_MARKER)
    sample = get_template("vicuna_v1").tokenize(
        [{"role": "user", "content": "<image>\nIs there a red circle?"}, {"role": "assistant", "content": "Yes."}], tok)
    out = model(torch.tensor([sample["input_ids"]]), scene_pixels([make_scene(0)]),
                labels=torch.tensor([sample["labels"]]))
    out.loss.backward()
    assert out.logits.shape[1] == len(sample["input_ids"]) - 1 + 16   # <image> became 16 tokens
    assert model.projector.linear_1.weight.grad is not None


# ---------------------------------------------------------------- bad input

def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown zoo name 'toy-llm'; available: toy-clip, toy-lm, toy-vision"):
        zoo.load("toy-llm")
    with pytest.raises(ValueError, match="available: toy-clip"):
        zoo.path("clip")
    with pytest.raises(FileNotFoundError, match="no folder at"):
        zoo.load("./no/such/folder")


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
    """A copy of the shipped weights that a test may break, with the zoo pointed at it."""
    shutil.copytree(zoo.WEIGHTS_DIR, tmp_path / "weights")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    return tmp_path / "weights"


def test_corrupt_file_is_named_with_the_rebuild_command(weights_copy):
    file = weights_copy / "toy-lm" / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])   # truncated, as by an interrupted copy
    with pytest.raises(ValueError, match=r"toy-lm/model\.safetensors is corrupt.*minillava zoo build"):
        zoo.load("toy-lm")
    assert isinstance(zoo.load("toy-vision"), RegNetModel)   # the others still load


def test_missing_file_is_named_with_the_rebuild_command(weights_copy):
    (weights_copy / "toy-vision" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"toy-vision/config\.json is missing.*minillava zoo build"):
        zoo.load("toy-vision")
    (weights_copy / zoo.MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing.*minillava zoo build"):
        zoo.load("toy-lm")


# ---------------------------------------------------------------- real backbones, same door

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="module")
def real_style_checkpoints(tmp_path_factory):
    """Tiny stand-ins for CLIP ViT-L/14, SigLIP and Vicuna, saved as their hub folders are."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=dict(SMALL, vocab_size=99), projection_dim=16,
                                vision_config=dict(SMALL, image_size=32, patch_size=8)))
    siglip = SiglipModel(SiglipConfig(text_config=dict(SMALL, vocab_size=99),
                                      vision_config=dict(SMALL, image_size=32, patch_size=8)))
    # a word-level tokenizer without <image> and without a padding token, as LLaMA's comes
    words = ["<unk>", "<s>", "</s>", "Hi", "there"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(root / "vicuna")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(words), num_key_value_heads=2, **SMALL)).save_pretrained(root / "vicuna")
    clip.save_pretrained(root / "clip")
    siglip.save_pretrained(root / "siglip")
    return root, clip, siglip


def test_real_style_checkpoints_load_through_the_same_door(real_style_checkpoints):
    root, clip, siglip = real_style_checkpoints
    tower = zoo.load(str(root / "clip"))   # a two-tower checkpoint gives its vision tower
    assert isinstance(tower, CLIPVisionModel)
    assert torch.equal(tower.get_input_embeddings().weight, clip.vision_model.embeddings.patch_embedding.weight)
    assert isinstance(zoo.load(str(root / "siglip")), SiglipVisionModel)
    assert isinstance(zoo.load(str(root / "vicuna")), LlamaForCausalLM)


def test_pretrained_model_adds_the_image_token(real_style_checkpoints):
    root, _, _ = real_style_checkpoints
    model, tok = zoo.pretrained_model(str(root / "siglip"), str(root / "vicuna"))
    image_id = tok.convert_tokens_to_ids(IMAGE_MARKER)
    assert image_id == 5 and model.config.image_token_id == image_id
    assert model.language_model.get_input_embeddings().num_embeddings == 6
    assert model.config.vision_feature_layer == -2 and model.config.pad_token_id == tok.eos_token_id
    ids = torch.tensor([tok.encode("<image>\nHi", add_special_tokens=False)])
    logits = model(ids, torch.randn(1, 3, 32, 32)).logits
    assert logits.shape[1] == ids.shape[1] - 1 + 16   # SigLIP: no CLS, 4 x 4 patches
