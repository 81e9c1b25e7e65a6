"""Tests for minillava.backbones.toy_text: the toy documents and the tokenizer learnt from them.

The shipped tokenizer is tested in test_zoo.py; here it is trained on the spot from a few
hundred documents (seconds).
"""

import random

import pytest
from hypothesis import given, settings, strategies as st

from minillava.backbones import toy_text
from minillava.conversation import IGNORE_INDEX, IMAGE_MARKER, TokenizationMismatchError, get_template
from minillava.data import rules
from minillava.toyworld import make_scene

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def documents():
    return toy_text.lm_documents(300)


@pytest.fixture(scope="module")
def tokenizer(documents):
    return toy_text.train_tokenizer(toy_text.tokenizer_texts(documents))


# ---------------------------------------------------------------- the toy text

def test_documents_are_reproducible_and_cover_every_kind(documents):
    assert toy_text.lm_documents(300) == documents
    assert toy_text.lm_documents(300, seed=1) != documents
    rendered = [get_template(t).render(m) for t, m in documents]
    # one marker per kind: written-scene QA, short answers, detail, reasoning, brief, caption, chats
    assert any(rules.FORMAT_PROMPT in r for r in rendered)
    assert any(t == "plain" for t, _ in documents)
    assert any("corners" in r and "background" not in r for r in rendered)
    assert not any(IMAGE_MARKER in r for r in rendered)   # the LM only ever reads written scenes


def test_mix_weights_reweight_the_kinds_and_reject_unknown_ones(documents):
    assert toy_text.lm_documents(300, weights={}) == documents   # no override: the recipe's mix
    only_captions = toy_text.lm_documents(50, weights={k: 0 for k in toy_text.DOCUMENT_KINDS if k != "caption"})
    assert {template for template, _ in only_captions} == {"plain"}
    with pytest.raises(ValueError, match="unknown document kinds.*valid: conversation"):
        toy_text.lm_documents(5, weights={"drill": 1})


def _detail_requests(documents) -> set[str]:
    """The request of every detail document (its first user turn after the written scene)."""
    return {m[0]["content"].split("\n")[-1] for _, m in documents
            if len(m) == 2 and m[1]["content"].startswith(("The image shows", "This is a simple picture"))}


def test_detail_wordings_leave_chairs_wording_unseen_and_are_off_in_the_shipped_mix(documents):
    from minillava.data.prompts import DETAIL_INSTRUCTIONS
    from minillava.eval.scenes import DESCRIBE_PROMPT
    assert DESCRIBE_PROMPT not in toy_text.DETAIL_WORDINGS and set(DETAIL_INSTRUCTIONS) < set(toy_text.DETAIL_WORDINGS)
    assert len(set(toy_text.DETAIL_WORDINGS)) == len(toy_text.DETAIL_WORDINGS) > 100
    shipped = _detail_requests(documents)
    assert shipped and shipped <= set(DETAIL_INSTRUCTIONS)   # the shipped mix asks in stage 2's six wordings
    any_wording = _detail_requests(toy_text.lm_documents(300, weights={"detail": 0, "detail_any": 4}))
    assert any_wording <= set(toy_text.DETAIL_WORDINGS) and len(any_wording - set(DETAIL_INSTRUCTIONS)) > 20


def test_written_scene_opens_the_first_user_turn():
    annotation = make_scene(3).annotation()
    turn = toy_text.written_scene_turn(annotation, "Is there a red circle?")
    assert turn == rules.scene_text(annotation) + "\nIs there a red circle?"
    # the same place LLaVA puts "<image>\n"
    _, write = toy_text.DOCUMENT_KINDS["conversation"][1:]
    messages = write(annotation, random.Random(0))
    assert messages[0]["content"].startswith(rules.scene_text(annotation) + "\n")
    assert all(rules.scene_text(annotation) not in m["content"] for m in messages[1:])


# ---------------------------------------------------------------- the tokenizer

def test_tokenizer_special_tokens(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in toy_text.SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert tokenizer.encode("<image>\nWhat is shown?", add_special_tokens=False)[0] == 3
    for marker in toy_text.CHAT_MARKERS:
        assert len(tokenizer.encode(marker, add_special_tokens=False)) == 1
    # byte-level: words never seen in training still round-trip, with no unknown token
    text = "Zebra 1234 ünïcode!"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_is_reproducible(documents, tokenizer):
    again = toy_text.train_tokenizer(toy_text.tokenizer_texts(documents))
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
    monkeypatch.setattr(toy_text, "SPLIT_PATTERN", r"[\s\S]+")   # the whole text is one "word"
    merged = toy_text.train_tokenizer(toy_text.tokenizer_texts(documents[:100]))
    with pytest.raises(TokenizationMismatchError):
        for template, messages in documents:
            get_template(template).tokenize(messages, merged)


def test_chat_template_renders_vicuna(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "How many corners does a square have?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        get_template("vicuna_v1").render(messages, add_generation_prompt=True)
