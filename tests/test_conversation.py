"""Tests for minillava.conversation: exact renderings, label masks, mismatch detection, Jinja export."""

import copy
import dataclasses
import random

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from minillava.backbones.toy_text import lm_documents
from minillava.backbones.zoo import load_tokenizer
from minillava.conversation import (
    IGNORE_INDEX, IMAGE_MARKER, TEMPLATES, TokenizationMismatchError, get_template, to_messages)
from minillava.data.rules import conversation_qa, detailed_description
from minillava.toyworld import make_scene

from tiny_tokenizer import train_tokenizer, well_behaved

SETTINGS = settings(max_examples=25, deadline=None)
WORDS = ["the", "cat", "dog", "sits", "on", "a", "red", "mat", "What", "color", "is", "it", "?",
         "yes", "no", ",", ".", "42", "3.5", "it's", "USER", "ASSISTANT", "user", "image", "{x}"]
# What each template supervises around one answer, written out from LLaVA's code, and
# whether the sample starts with BOS.
ANSWER_WRAP = {"plain": ("", "\n"), "vicuna_v1": (" ", "</s>"), "llava_v1": (" ", "</s>"),
               "llama_2": (" ", " </s>"), "chatml": ("", "<|im_end|>"), "llama_3": ("", "<|eot_id|>")}
HAS_BOS = {"plain": True, "vicuna_v1": True, "llava_v1": True, "llama_2": True, "chatml": False,
           "llama_3": True}


def sample_corpus(seed=0):
    rng = random.Random(seed)
    text = lambda: " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
    return [t.render([{"role": "user", "content": text()}, {"role": "assistant", "content": text()}])
            for _ in range(40) for t in TEMPLATES.values()]


@pytest.fixture(scope="session")
def tok():
    """A well-behaved byte-level BPE (Llama-3/Qwen layout) with the template words merged."""
    return well_behaved(sample_corpus())


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# ---------------------------------------------------------------- rendering

SYSTEM = "You are terse."
CONV = [{"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is shown? <image>"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What color?"},
        {"role": "assistant", "content": "Black."}]
EXPECTED = {
    "vicuna_v1": "You are terse. USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>"
                 "USER: What color? ASSISTANT: Black.</s>",
    "llava_v1": "You are terse. USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>"
                "USER: What color? ASSISTANT: Black.</s>",
    "llama_2": "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\n<image>\nWhat is shown? [/INST] A cat. </s>"
               "<s>[INST] What color? [/INST] Black. </s>",
    "chatml": "<|im_start|>system\nYou are terse.<|im_end|><|im_start|>user\n<image>\nWhat is shown?"
              "<|im_end|><|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\nWhat color?<|im_end|>"
              "<|im_start|>assistant\nBlack.<|im_end|>",
    "llama_3": "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is shown?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat color?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nBlack.<|eot_id|>",
}
GENERATION_END = {"vicuna_v1": "USER: What color? ASSISTANT:",
                  "llava_v1": "USER: What color? ASSISTANT:",
                  "llama_2": "</s><s>[INST] What color? [/INST]",
                  "chatml": "<|im_start|>user\nWhat color?<|im_end|><|im_start|>assistant\n",
                  "llama_3": "<|start_header_id|>user<|end_header_id|>\n\nWhat color?<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n"}


def test_registry_has_every_template_and_rejects_unknown_names():
    assert set(TEMPLATES) == set(ANSWER_WRAP)
    assert get_template("vicuna_v1") is TEMPLATES["vicuna_v1"]
    with pytest.raises(ValueError, match="choose one of.*vicuna_v1"):
        get_template("vicuna")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_two_turn_render_with_system_prompt(name):
    template = get_template(name)
    assert template.render(CONV) == EXPECTED[name]
    assert template.render(CONV[1:], system=SYSTEM) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(GENERATION_END))
def test_generation_prompt_opens_the_assistant_turn(name):
    rendered = get_template(name).render(CONV[:-1], add_generation_prompt=True)
    assert rendered.endswith(GENERATION_END[name])
    assert not rendered.endswith(" ")


def test_default_system_prompts_and_generation_prompt_verbatim():
    question = [{"role": "user", "content": "<image>\nWhat is shown?"}]
    assert get_template("vicuna_v1").render(question, add_generation_prompt=True) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. "
        "USER: <image>\nWhat is shown? ASSISTANT:")
    assert get_template("llava_v1").render(question).startswith(
        "A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions. USER: ")
    assert get_template("chatml").render(question).startswith(
        "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
        "The assistant gives helpful and honest answers.<|im_end|><|im_start|>user\n")
    # an empty system prompt drops the system block altogether
    assert get_template("llama_2").render(question, system="") == (
        "[INST] <image>\nWhat is shown? [/INST]")


def test_plain_keeps_image_and_caption_and_drops_the_instruction():
    sample = [{"from": "human", "value": "Describe the image concisely.\n<image>"},
              {"from": "gpt", "value": "A black cat on a mat."}]
    plain = get_template("plain")
    assert plain.render(sample) == "<image>A black cat on a mat.\n"
    assert plain.render(sample[:1], add_generation_prompt=True) == "<image>"
    with pytest.raises(ValueError, match="one user turn and one caption"):
        plain.render(sample + sample)
    with pytest.raises(ValueError, match="no system prompt"):
        plain.render(sample, system="Be brief.")


def test_llava_json_form_is_converted():
    conversations = [{"from": "system", "value": "S"}, {"from": "human", "value": "<image>\nHi"},
                     {"from": "gpt", "value": "Hello"}]
    assert to_messages(conversations) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "<image>\nHi"},
        {"role": "assistant", "content": "Hello"}]
    assert get_template("vicuna_v1").render(conversations) == "S USER: <image>\nHi ASSISTANT: Hello</s>"
    with pytest.raises(ValueError, match="unknown 'from' 'bot'"):
        to_messages([{"from": "bot", "value": "x"}])


@pytest.mark.parametrize("user_texts, first, rest", [
    (["What is this? <image>", "And now?"], "<image>\nWhat is this?", "And now?"),
    (["What is <image> this?", "x"], "<image>\nWhat is  this?", "x"),
    (["Compare.", "<image> and <image>"], "<image>\n<image>\nCompare.", "and"),
    (["<image>", "Why?"], "<image>", "Why?"),
])
def test_image_markers_move_to_the_start_of_the_first_user_turn(user_texts, first, rest):
    messages = to_messages([{"role": "user", "content": user_texts[0]},
                            {"role": "assistant", "content": "a"},
                            {"role": "user", "content": user_texts[1]}])
    assert [messages[0]["content"], messages[2]["content"]] == [first, rest]


def test_to_messages_does_not_modify_its_input():
    conversation = [{"role": "user", "content": "Hi <image>"}]
    to_messages(conversation)
    assert conversation == [{"role": "user", "content": "Hi <image>"}]


@pytest.mark.parametrize("messages, error", [
    ([], "empty conversation"),
    ([{"role": "assistant", "content": "a"}], "turn 0 has role 'assistant'"),
    ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}], "turn 1 has role 'user'"),
    ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}], "turn 1 has role 'system'"),
    ([{"role": "system", "content": "s"}], "no user message"),
    ([{"role": "user", "content": None}], "content must be a string"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "<image>"}], "assistant turn"),
])
def test_bad_conversations_raise_clear_errors(messages, error):
    with pytest.raises(ValueError, match=error):
        get_template("vicuna_v1").render(messages)


def test_other_misuse_raises():
    vicuna = get_template("vicuna_v1")
    with pytest.raises(ValueError, match="given twice"):
        vicuna.render(CONV, system="other")
    with pytest.raises(ValueError, match="ends with a user turn"):
        vicuna.render(CONV, add_generation_prompt=True)


# ---------------------------------------------------------------- random conversations

@st.composite
def conversations(draw, max_rounds=4, end_with_answer=True):
    """1-max_rounds rounds, optional system prompt, 0-2 images anywhere in the user turns."""
    text = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
    rounds = draw(st.integers(1, max_rounds))
    messages = []
    for i in range(rounds):
        messages.append({"role": "user", "content": draw(text)})
        if end_with_answer or i < rounds - 1:
            messages.append({"role": "assistant", "content": draw(text)})
    for _ in range(draw(st.integers(0, 2))):
        turn = draw(st.sampled_from(messages[::2]))
        words = turn["content"].split(" ")
        words.insert(draw(st.integers(0, len(words))), IMAGE_MARKER)
        turn["content"] = " ".join(words)
    system = draw(st.sampled_from([None, "", "Be brief ."]))
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def plain_safe(name, messages):
    """The plain template takes one round and no system prompt."""
    if name != "plain":
        return messages
    return [m for m in messages if m["role"] != "system"][:2]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@SETTINGS
@given(sample=conversations())
def test_labels_supervise_exactly_the_answers(tok, name, sample):
    messages = plain_safe(name, sample)
    n_images = sum(m["content"].count(IMAGE_MARKER) for m in messages)
    template = get_template(name)
    out = template.tokenize(messages, tok)
    ids, labels = out["input_ids"], out["labels"]
    assert len(ids) == len(labels)
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))

    pre, post = ANSWER_WRAP[name]
    answers = "".join(pre + m["content"] + post for m in messages if m["role"] == "assistant")
    assert decode(tok, [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]) == answers
    # the ids spell out the whole prompt, BOS first where the template wants it
    assert decode(tok, ids) == ("<s>" if HAS_BOS[name] else "") + template.render(messages)
    if HAS_BOS[name]:
        assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX

    image_id = tok.convert_tokens_to_ids(IMAGE_MARKER)
    positions = [p for p, i in enumerate(ids) if i == image_id]
    assert len(positions) == n_images
    assert all(labels[p] == IGNORE_INDEX for p in positions)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@SETTINGS
@given(sample=conversations(end_with_answer=False), data=st.data())
def test_jinja_export_renders_like_render(tok, name, sample, data):
    messages = plain_safe(name, sample)
    generation = data.draw(st.booleans()) and messages[-1]["role"] == "user"
    template = get_template(name)
    jinja = tok.apply_chat_template(to_messages(messages), chat_template=template.to_jinja(),
                                    tokenize=False, add_generation_prompt=generation)
    assert jinja == template.render(messages, add_generation_prompt=generation)


def test_jinja_export_as_the_tokenizers_chat_template(tok):
    template = get_template("vicuna_v1")
    tok_copy = copy.deepcopy(tok)
    tok_copy.chat_template = template.to_jinja()
    messages = to_messages(CONV[:-1])
    assert tok_copy.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        "You are terse. USER: <image>\nWhat is shown? ASSISTANT: A cat.</s>USER: What color? ASSISTANT:"


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@SETTINGS
@given(sample=conversations())
def test_image_position_does_not_change_the_rendering(name, sample):
    messages = plain_safe(name, sample)
    template = get_template(name)
    assert template.render(messages) == template.render(to_messages(messages))
    first_user = next(m for m in to_messages(messages) if m["role"] == "user")["content"]
    n_images = first_user.count(IMAGE_MARKER)
    assert first_user.startswith("\n".join([IMAGE_MARKER] * n_images))
    assert template.render(messages).count(IMAGE_MARKER) == n_images


# ---------------------------------------------------------------- tokenize edge cases

def test_a_token_straddling_an_answer_start_over_whitespace_is_supervised(tok):
    """The edge rule: "Ġyes" holds the prompt's trailing space and the answer's first word.
    A template that cuts after the space ("ASSISTANT: " + "yes</s>") labels like vicuna_v1,
    which cuts before it; the old segment-wise check refused it."""
    vicuna = get_template("vicuna_v1")
    cut_late = dataclasses.replace(vicuna, assistant_header="ASSISTANT: ", answer_format="{content}</s>")
    conversation = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "yes"}]
    assert cut_late.render(conversation) == vicuna.render(conversation)
    answer = tok.encode(" yes</s>", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(answer)[0] == "Ġyes"   # one token across the cut
    labels = vicuna.tokenize(conversation, tok)["labels"]
    assert labels[-len(answer):] == answer and labels[-len(answer) - 1] == IGNORE_INDEX
    assert cut_late.tokenize(conversation, tok) == vicuna.tokenize(conversation, tok)
    with pytest.raises(SegmentsDisagree):   # the previous method, kept below as the reference
        segmentwise_labels(cut_late, conversation, tok)


def test_truncation_and_nothing_to_supervise(tok):
    vicuna = get_template("vicuna_v1")
    full = vicuna.tokenize(CONV, tok)
    cut = vicuna.tokenize(CONV, tok, max_length=len(full["input_ids"]) - 3)
    assert cut["input_ids"] == full["input_ids"][:-3] and cut["labels"] == full["labels"][:-3]
    with pytest.raises(ValueError, match="cuts off every answer token"):
        vicuna.tokenize(CONV, tok, max_length=5)
    with pytest.raises(ValueError, match="ends with an assistant answer"):
        vicuna.tokenize(CONV[:-1], tok)


def test_tokenizer_without_image_token_is_refused():
    plain_tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(
        {"<unk>": 0, "USER:": 1}, unk_token="<unk>")), unk_token="<unk>")
    with pytest.raises(ValueError, match="one token per image.*add_special_tokens"):
        get_template("plain").tokenize([{"role": "user", "content": "<image>"},
                                        {"role": "assistant", "content": "x"}], plain_tok)


# ---------------------------------------------------------------- the tokenization mismatch pitfall

class SegmentsDisagree(Exception):
    pass


def segmentwise_labels(template, messages, tokenizer, system=None):
    """The previous method, kept as a reference: tokenise each segment alone, concatenate, and
    refuse the sample when that disagrees with the whole prompt tokenised at once."""
    segments = template._segments(messages, False, system)
    prefix = [tokenizer.bos_token_id] if template.bos and tokenizer.bos_token_id is not None else []
    ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
    for text, supervised in segments:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if supervised else [IGNORE_INDEX] * len(piece)
    whole = prefix + tokenizer.encode("".join(text for text, _ in segments), add_special_tokens=False)
    if whole != ids:
        raise SegmentsDisagree(f"segments {ids} vs whole {whole}")
    return {"input_ids": ids, "labels": labels}


def toy_samples():
    """The course's data: the toy LM's documents and image conversations from the data rules."""
    rng = random.Random(0)
    samples = list(lm_documents(150))
    for seed in range(60):
        annotation = make_scene(seed).annotation()
        pairs = conversation_qa(annotation, rng, n=rng.randint(1, 3))
        messages = [{"role": role, "content": text} for q, a in pairs
                    for role, text in (("user", q), ("assistant", a))]
        messages[0]["content"] = IMAGE_MARKER + "\n" + messages[0]["content"]
        samples += [(name, messages) for name in ("vicuna_v1", "llava_v1", "llama_2", "chatml", "llama_3")]
        samples.append(("plain", [{"role": "user", "content": IMAGE_MARKER},
                                  {"role": "assistant", "content": detailed_description(annotation, rng)}]))
    return samples


def test_toy_tokenizer_labels_are_exactly_the_previous_methods():
    """The chapters' stored outputs rest on the shipped toy tokenizer's labels: unchanged."""
    toy = load_tokenizer("toy-lm")
    samples = toy_samples()
    assert {name for name, _ in samples} == set(TEMPLATES) and len(samples) > 500
    for name, messages in samples:
        template = get_template(name)
        assert template.tokenize(messages, toy) == segmentwise_labels(template, messages, toy), (name, messages)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@SETTINGS
@given(sample=conversations())
def test_well_behaved_labels_equal_the_previous_methods(tok, name, sample):
    messages = plain_safe(name, sample)
    template = get_template(name)
    assert template.tokenize(messages, tok) == segmentwise_labels(template, messages, tok)


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


MISMATCH_MESSAGES = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "yes"},
                     {"role": "user", "content": "red"}, {"role": "assistant", "content": "no"}]


def test_a_token_holding_prompt_and_answer_text_raises_with_position_and_token():
    """What truly cannot be aligned: with no word split, BPE merges across the answer's edge
    (a token holds ':' of "ASSISTANT:" and the answer's leading space or word)."""
    bad = train_tokenizer(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), sample_corpus())
    vicuna = get_template("vicuna_v1")
    text = vicuna.render(MISMATCH_MESSAGES, system="")
    answer_start = text.index(" yes")
    encoded = bad(text, add_special_tokens=False, return_offsets_mapping=True)
    # the first token that covers both text[answer_start - 1] (':') and text[answer_start] (' ')
    position = next(i for i, (a, z) in enumerate(encoded["offset_mapping"]) if a < answer_start < z)

    with pytest.raises(TokenizationMismatchError) as caught:
        vicuna.tokenize(MISMATCH_MESSAGES, bad, system="")
    message = str(caught.value)
    assert caught.value.position == position + 1   # after BOS
    a, z = encoded["offset_mapping"][position]
    assert f"token {text[a:z]!r} at position {position + 1}" in message
    assert "'vicuna_v1'" in message and type(bad).__name__ in message and "start of an answer" in message
    assert "template that matches" in message and isinstance(caught.value, ValueError)


def test_a_word_start_marker_only_at_the_start_no_longer_breaks_the_labels():
    """SentencePiece with the word-start marker only at the start of a text (transformers'
    legacy=False): "USER" after "</s>" is "▁USER" alone but "USER" in the prompt, so the
    previous method refused the sample. The labels come from the whole prompt now."""
    sp_like = train_tokenizer(pre_tokenizers.Metaspace(prepend_scheme="first"), sample_corpus(), byte_level=False)
    vicuna = get_template("vicuna_v1")
    segments = ["USER: the cat ASSISTANT:", " yes</s>", "USER: red ASSISTANT:", " no</s>"]
    enc = lambda text: sp_like.encode(text, add_special_tokens=False)
    assert [i for s in segments for i in enc(s)] != enc("".join(segments))   # the pitfall is real
    with pytest.raises(SegmentsDisagree):
        segmentwise_labels(vicuna, MISMATCH_MESSAGES, sp_like, system="")

    out = vicuna.tokenize(MISMATCH_MESSAGES, sp_like, system="")
    assert out["input_ids"] == [sp_like.bos_token_id] + enc("".join(segments))
    supervised = [i for i, label in zip(out["input_ids"], out["labels"]) if label != IGNORE_INDEX]
    assert sp_like.convert_ids_to_tokens(supervised) == (
        sp_like.convert_ids_to_tokens(enc(" yes</s>")) + sp_like.convert_ids_to_tokens(enc(" no</s>")))
