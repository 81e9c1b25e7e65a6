"""Streaming generation in the core: ``MiniLlava.generate_steps``, ``Assistant.replies`` / ``stream``.

What a chat prints piece by piece and what a server sends chunk by chunk must join into the
very answer ``Assistant.chat`` gives: checked on the shipped toy backbones (fluent answers
that end with a special ``</s>``) and on a random model whose templates end their answers
with a special token (chatml) or with a plain newline (the multi-token stop-string path).
"""

import pytest
import torch

from minillava.backbones.zoo import tiny_backbones, tiny_random_model
from minillava.chat import Assistant, Reply, _release, load_assistant
from minillava.conversation import IMAGE_MARKER
from minillava.image import ImageProcessor
from minillava.model import MiniLlava, MiniLlavaConfig
from minillava.toyworld import make_scene, render
from tiny_assistant import DESCRIBE, save_tiny_assistant
from tiny_tokenizer import well_behaved

QUESTIONS = [DESCRIBE, "What is in the image?", "How many shapes are there?", "What colour is the circle?"]
CORPUS = [c for seed in range(20) for c in make_scene(seed).captions()] + QUESTIONS


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The shipped toy backbones with a fresh projector, saved and loaded as a server loads it."""
    return load_assistant(save_tiny_assistant(tmp_path_factory.mktemp("toy") / "assistant", max_new_tokens=16))


@pytest.fixture(scope="module")
def tok():
    return well_behaved(CORPUS)


def random_assistant(tok, template="vicuna_v1", max_new_tokens=12, **config):
    tower, lm = tiny_backbones(vocab_size=len(tok))
    config = MiniLlavaConfig(image_token_id=tok.convert_tokens_to_ids(IMAGE_MARKER), pad_token_id=tok.pad_token_id,
                             **config)
    return Assistant(MiniLlava(config, tower, lm).eval(), tok, ImageProcessor("pad", 32), template=template,
                     max_new_tokens=max_new_tokens)


def ask_messages(question, image=True):
    return [{"role": "user", "content": f"{IMAGE_MARKER}\n{question}" if image else question}]


def test_generate_is_its_steps_stacked_and_a_caller_that_stops_stops_the_model():
    model = tiny_random_model()
    ids = torch.tensor([[1, 5, 99, 6, 7], [0, 0, 1, 8, 9]])
    mask, pixels = (ids != 0).long(), torch.randn(1, 3, 32, 32)
    for sampling in ({}, {"temperature": 0.8, "top_p": 0.9}):
        steps = model.generate_steps(ids, pixels, mask, max_new_tokens=10, eos_token_id=2,
                                     generator=torch.Generator().manual_seed(1), **sampling)
        got = torch.stack(list(steps), dim=1)
        want = model.generate(ids, pixels, mask, max_new_tokens=10, eos_token_id=2,
                              generator=torch.Generator().manual_seed(1), **sampling)
        assert torch.equal(got, want) and want.shape == (2, 10)
    calls = []
    hook = model.language_model.register_forward_hook(lambda *args: calls.append(1))
    steps = model.generate_steps(ids, pixels, mask, max_new_tokens=10)
    taken = [next(steps) for _ in range(3)]
    steps.close()
    hook.remove()
    # The prompt, then one call per token after the first: the 4th..10th tokens never cost a forward pass.
    assert len(taken) == 3 and len(calls) == 3


def test_stream_joins_into_chats_answer_on_the_toy_assistant(toy):
    for seed, question in enumerate(QUESTIONS):
        image = render(make_scene(seed))
        pieces = list(toy.stream(ask_messages(question), [image]))
        assert "".join(pieces) == toy.ask(image, question) != ""
        assert len(pieces) > 2   # streamed, not one piece at the end


@pytest.mark.parametrize("template", ["vicuna_v1", "chatml", "plain"])
def test_stream_joins_into_chats_answer_whatever_ends_the_turn(tok, template):
    """chatml ends a turn with a special token; plain with "\\n", a stop string decoded each step."""
    assistant = random_assistant(tok, template, max_new_tokens=20)
    conversations = [ask_messages(q) for q in QUESTIONS]
    images = [render(make_scene(seed)) for seed in range(len(QUESTIONS))]
    answers = assistant.chat(conversations, images)
    for conversation, image, answer in zip(conversations, images, answers):
        assert "".join(assistant.stream(conversation, [image])) == answer
    *_, last = assistant.replies(conversations, images)   # batched, as the server runs it
    assert [reply.text for reply in last] == answers


def test_replies_keep_each_conversations_own_limit_and_stop_strings(toy):
    images = [render(make_scene(seed)) for seed in (1, 2, 3)]
    conversations = [ask_messages(DESCRIBE)] * 3
    full = toy.chat(conversations, images)
    word = full[1].split()[2]   # a word in the middle of the second answer
    seen = []   # per step: each reply's (new_text, text, finish_reason) at that moment
    for replies in toy.replies(conversations, images, max_new_tokens=[16, 16, 3], stops=[[], [word], []]):
        seen.append([(r.new_text, r.text, r.finish_reason) for r in replies])
    first, second, third = replies
    assert first.text == full[0] and first.finish_reason == "stop"
    assert second.text == full[1][:full[1].index(word)].strip() and second.finish_reason == "stop"
    assert third.finish_reason == "length" and third.completion_tokens == 3
    assert third.text == toy.tokenizer.decode(toy.tokenizer.encode(full[2], add_special_tokens=False)[:3]).strip()
    # Counts: the end-of-turn token is generated (and counted), never shown.
    assert first.completion_tokens == len(toy.tokenizer.encode(full[0], add_special_tokens=False)) + 1
    assert first.prompt_tokens == toy.prompt_length(conversations[0], images[:1])
    # Each step's new text extends the text; a finished reply stays as it is while the others go on.
    for row in range(3):
        assert "".join(step[row][0] for step in seen) == replies[row].text
        assert all(a[row][1] + b[row][0] == b[row][1] for a, b in zip(seen, seen[1:]))
    assert all(step[2] == ("", third.text, "length") for step in seen[3:]) and len(seen) > 3
    assert "".join(toy.stream(conversations[1], images[1:2], stop=word)) == second.text


def test_text_is_held_back_until_no_later_token_can_change_it():
    stops = ["</s>", "STOP"]
    assert _release("  A red ", False, stops) == "A red"        # the space may be stripped or glued
    assert _release("A red </", False, stops) == "A red"        # could become </s>
    assert _release("A red ST", False, stops) == "A red"        # could become STOP
    assert _release("A red S.", False, stops) == "A red S."      # cannot any more
    assert _release("caf\ufffd", False, stops) == "caf"          # half of a multi-byte character
    assert _release("  A red </", True, stops) == "A red </"     # finished: shown as chat strips it
    reply = Reply(prompt_tokens=3)
    assert reply.text == "" and reply.finish_reason is None and reply.completion_tokens == 0


def test_prompt_length_is_the_spliced_length(tok, toy):
    """What the server bounds by the context and reports as prompt_tokens is what the model reads."""
    image = render(make_scene(4))
    messages = ask_messages(DESCRIBE)
    ids = torch.tensor([toy.prompt_ids(messages)])
    with torch.no_grad():   # toy-vision is convolutional: its token count comes from the processor's size
        spliced = toy.model(ids, toy.processor([image])["pixel_values"]).attention_mask.shape[1]
    assert toy.prompt_length(messages, [image]) == spliced
    text_only = ask_messages(DESCRIBE, image=False)
    assert toy.prompt_length(text_only, []) == len(toy.prompt_ids(text_only))
    pins = [(32, 32), (32, 64), (64, 32), (64, 64)]
    anyres = random_assistant(tok, image_mode="anyres", image_grid_pinpoints=pins)
    anyres.processor = ImageProcessor("anyres", 32, pinpoints=pins)
    for size in ((64, 128), (64, 64), (40, 30)):
        image = render(make_scene(1), *size)
        pixels = anyres.processor([image])
        ids = torch.tensor([anyres.prompt_ids(messages)])
        with torch.no_grad():
            spliced = anyres.model(ids, **pixels).attention_mask.shape[1]
        assert anyres.prompt_length(messages, [image]) == spliced


def test_context_length_is_the_tighter_of_the_two_limits(tok, toy):
    assert toy.context_length == toy.model.language_model.config.max_position_embeddings == 1024
    assert random_assistant(tok, max_length=100).context_length == 100
