"""Chapter 2, the data engine: what the teacher reads about a scene, and how its reply is parsed."""

import random

from minillava.course.grading.core import GradingError, check, expect_type, your_code
from minillava.data.parse import parse_blocks
from minillava.data.prompts import toy_context
from minillava.data.rules import rule_response
from minillava.toyworld import make_scene


def _first_line_difference(got: str, expected: str, what: str, hint: str) -> None:
    """Require two texts to be equal; otherwise say which line differs first, both sides as repr."""
    expect_type(got, str, what=what, hint=hint)
    if got == expected:
        return
    got_lines, expected_lines = got.split("\n"), expected.split("\n")
    for number, (g, e) in enumerate(zip(got_lines, expected_lines), 1):
        if g != e:
            raise GradingError(f"{what}: line {number} differs", expected=repr(e), got=repr(g), hint=hint)
    raise GradingError(f"{what}: {len(expected_lines)} lines expected, {len(got_lines)} written",
                       expected=repr(expected), got=repr(got), hint=hint)


@check("symbolic_context")
def check_symbolic_context(symbolic_context):
    """``symbolic_context(annotation) -> str``: a toy scene as the teacher reads it (``prompts.toy_context``)."""
    hint = ("the five captions (Scene.from_annotation(annotation).captions()), one per line; then an empty "
            "line; then one '<size> <color> <shape>: [x1, y1, x2, y2]' line per object, using its normalised "
            "'box' (not 'pixel_box'), each number with 3 decimals ('0.760', not '0.76'), joined by ', '")
    for seed in (12, 0, 5, 9, 21):   # 4, 4, 1, 2, 3 objects; seed 12 and 0 have coordinates ending in 0
        annotation = make_scene(seed).annotation()
        with your_code(symbolic_context):
            got = symbolic_context(annotation)
        _first_line_difference(got, toy_context(annotation), what=f"symbolic context of toy scene {seed}", hint=hint)


# Replies a teacher really sends: clean, one reasoning question, messy whitespace, several lines, cut off.
_RAW_REPLIES = (
    "\n\n  Question:   How many circles are there?  \n===\nAnswer:\n\n   There are two circles.   \n\n  ===  \n"
    "Question:\nWhat colour is the cross?\n===\nAnswer:  It is green.\n\n",
    "Question:\nWhich of these shapes would roll best?\n===\nAnswer:\nThe circle would roll best.\n"
    "A circle has no corners, so it rolls smoothly in any direction.\n",
    "Question:\nIs there a red circle?\n===\nAnswer:\nYes, there is one in the bottom right.\n===\n"
    "Question:\nWhat colour is the",
)


@check("parse_conversation")
def check_parse_conversation(parse_conversation):
    """``parse_conversation(raw) -> [{"from": "human"|"gpt", "value"}, ...]`` like ``parse.parse_blocks``."""
    hint = ("split the reply at lines that hold only '==='; a block starting 'Question:' is a human turn, "
            "'Answer:' a gpt turn; the value is the text after the label, stripped of surrounding spaces "
            "and blank lines (line breaks inside it stay); a question with no answer after it is dropped")
    replies = [rule_response("conversation", make_scene(12).annotation(), random.Random(0)),
               rule_response("complex", make_scene(4).annotation(), random.Random(0)), *_RAW_REPLIES]
    for number, raw in enumerate(replies, 1):
        pairs, _ = parse_blocks(raw)
        expected = [turn for q, a in pairs for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
        with your_code(parse_conversation):
            got = parse_conversation(raw)
        what = f"conversation parsed from reply {number} ({raw[:40]!r}...)"
        expect_type(got, list, what=what, hint=hint, expected="a list of turns")
        if len(got) != len(expected):
            raise GradingError(f"{what}: wrong number of turns", expected=len(expected), got=len(got), hint=hint)
        for index, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                raise GradingError(f"{what}: turn {index} differs", expected=e, got=g, hint=hint)
