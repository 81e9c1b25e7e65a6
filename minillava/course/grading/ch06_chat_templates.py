"""Chapter 6, chat templates: a conversation rendered as Vicuna text, and the labels that mask its prompt."""

import copy
import numbers
from typing import Any

import torch

from minillava.backbones import zoo
from minillava.conversation import IGNORE_INDEX, get_template
from minillava.course.grading.core import GradingError, check, expect_type, your_code


def _first_char_difference(got: Any, expected: str, what: str, hint: str) -> None:
    """Require two strings to be equal; otherwise show both around the first differing character."""
    expect_type(got, str, what=what, hint=hint)
    if got == expected:
        return
    at = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
    window = slice(max(0, at - 25), at + 25)   # enough context to recognise the spot
    raise GradingError(f"{what}: first difference at character {at} (of {len(expected)} expected)",
                       expected=repr(expected[window]), got=repr(got[window]), hint=hint)


# Conversations that separate right from plausibly wrong renderings: default and overridden system
# prompts, one to three rounds, open and closed, <image> at the start, middle, end or alone, braces.
_VICUNA_CASES = (
    ([{"role": "user", "content": "<image>\nWhat is shown?"}], True),
    ([{"role": "user", "content": "What is shown?"}, {"role": "assistant", "content": "A red circle."}], False),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What colour is it? <image>"},
      {"role": "assistant", "content": "Red."}, {"role": "user", "content": "And its shape?"},
      {"role": "assistant", "content": "A circle."}], False),
    ([{"role": "user", "content": "Describe <image> briefly."}, {"role": "assistant", "content": "Two squares."},
      {"role": "user", "content": "How many corners in all?"}], True),
    ([{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "<image>"},
      {"role": "assistant", "content": "circle"}], False),
    ([{"role": "user", "content": "What is {x} plus 1?"}, {"role": "assistant", "content": "It is {x} + 1."},
      {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "You're welcome!"}], False),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is there a cat?\n<image>"}], True),
)


@check("render_vicuna")
def check_render_vicuna(render_vicuna):
    """``render_vicuna(messages, add_generation_prompt=False) -> str`` like ``get_template("vicuna_v1").render``."""
    hint = ("system prompt (the system message's content if there is one, else the default), then ' '; each user "
            "turn 'USER: ' + content + ' '; each answer 'ASSISTANT: ' + content + '</s>' (no space after </s>); "
            "the generation prompt is 'ASSISTANT:' with no trailing space; in the first user turn, "
            "'<image>\\n' + content.replace('<image>', '').strip() (just '<image>' if nothing is left)")
    vicuna = get_template("vicuna_v1")
    for messages, generation in _VICUNA_CASES:
        expected = vicuna.render(messages, add_generation_prompt=generation)
        with your_code(render_vicuna):
            got = render_vicuna(copy.deepcopy(messages), add_generation_prompt=generation)
        roles = "/".join(m["role"] for m in messages)
        _first_char_difference(got, expected, hint=hint, what=(
            f"render_vicuna of a {roles} conversation (add_generation_prompt={generation}, first user turn "
            f"{next(m['content'] for m in messages if m['role'] == 'user')!r})"))


# (template, conversation): every template's markers, BOS or none, images, several rounds, and a
# plain caption without an image, whose first segment is already the answer.
_LABEL_CASES = (
    ("vicuna_v1", [{"role": "user", "content": "<image>\nWhat is shown?"},
                   {"role": "assistant", "content": "A red circle."}]),
    ("vicuna_v1", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "How many?"},
                   {"role": "assistant", "content": "Two."}, {"role": "user", "content": "Which colour?"},
                   {"role": "assistant", "content": "Both are blue."}]),
    ("llama_2", [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "3 plus 4 is 7."},
                 {"role": "user", "content": "And 5 plus 5?"}, {"role": "assistant", "content": "10."}]),
    ("chatml", [{"role": "user", "content": "<image>\nIs there a green square?"},
                {"role": "assistant", "content": "No, there is no green square."}]),
    ("llama_3", [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi!"},
                 {"role": "user", "content": "What is a circle?"}, {"role": "assistant", "content": "A round shape."}]),
    ("plain", [{"role": "user", "content": "<image>\nDescribe the image concisely."},
               {"role": "assistant", "content": "A red circle on a white background."}]),
    ("plain", [{"role": "user", "content": ""}, {"role": "assistant", "content": "A blue square."}]),
)


@check("build_labels")
def check_build_labels(build_labels):
    """``build_labels(segments, bos_id) -> (input_ids, labels)`` like ``Template.tokenize``.

    ``segments`` are the ``(ids, is_answer)`` pieces a template cuts a conversation into,
    read back off the package's own labels: its runs of masked and supervised tokens.
    """
    hint = ("input_ids: bos_id first (unless it is None), then every segment's ids in order; labels: -100 for BOS "
            "and every prompt token (system, user turns, role markers, <image>), the token's own id for every "
            "answer token -- the end-of-turn marker at its end included; do not shift (the loss shifts)")
    tokenizer = zoo.load_tokenizer("toy-lm")
    for name, messages in _LABEL_CASES:
        template = get_template(name)
        expected = template.tokenize(messages, tokenizer)
        bos_id = tokenizer.bos_token_id if template.bos else None
        start = 0 if bos_id is None else 1
        segments = []   # maximal runs of masked / supervised tokens after BOS
        for token, label in zip(expected["input_ids"][start:], expected["labels"][start:]):
            is_answer = label != IGNORE_INDEX
            if segments and segments[-1][1] == is_answer:
                segments[-1][0].append(token)
            else:
                segments.append(([token], is_answer))
        with your_code(build_labels):
            got = build_labels([(list(ids), is_answer) for ids, is_answer in segments], bos_id)
        what = (f"build_labels for a {name} conversation of {len(segments)} segments "
                f"({'bos_id ' + str(bos_id) if bos_id is not None else 'no BOS'})")
        expect_type(got, (tuple, list), what=what, hint=hint, expected="a pair (input_ids, labels)",
                    where=lambda pair: len(pair) == 2)
        for key, value in zip(("input_ids", "labels"), got):
            value = value.tolist() if isinstance(value, torch.Tensor) else value
            expect_type(value, (list, tuple), what=f"{what}: {key}", hint=hint, expected="a list of ints",
                        where=lambda ids: all(isinstance(i, numbers.Integral) for i in ids))
            value = [int(v) for v in value]
            want = expected[key]
            if value != want:
                at = next((i for i, (v, w) in enumerate(zip(value, want)) if v != w), min(len(value), len(want)))
                raise GradingError(f"{what}: {key} differ first at position {at} (lengths: expected {len(want)}, "
                                   f"got {len(value)})", expected=want[max(0, at - 3):at + 4],
                                   got=value[max(0, at - 3):at + 4], hint=hint)
