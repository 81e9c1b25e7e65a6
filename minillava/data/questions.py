"""The rules' questions: every wording of a fact question, grouped by what it asks about.

``rules`` asks about a scene's facts with these wordings and nothing else, and ``topic``
reads a question's topic back from them. So the topic of a question is not guessed from
its words by a second set of patterns that could drift from the first: a new wording
belongs to its topic by being written here, and the rules can only use it from here.

    topic("How many circles are there?\\nAnswer the question using a single word or phrase.")
    -> "count"

A wording is a ``str.format`` template. Its slots hold names from the toy world ("red
circle", "squares", "leftmost"); ``{a}`` is the article and ``{colour_word}`` the spelling,
"colour" or "color", which the rules vary.
"""

import re

# Presence and absence are asked in the same words, so the wording never gives the answer
# away. (An earlier version asked "Does the image contain ...?" only of present objects and
# "Is there X?" only of absent ones: chapter 9's looking test caught the assistant answering
# presence from the question alone.)
PRESENCE_QUESTIONS = ("Is there {a} {name} in the image?", "Can you see {a} {name}?", "Is there {a} {name}?",
                      "Does the image contain {a} {name}?", "Does the picture show {a} {name}?")
ANY_SHAPE_QUESTION = "Are there any {shapes}?"

SHAPE_COUNT_QUESTIONS = ("How many {shapes} are there?", "How many {shapes} can you see?",
                         "How many {shapes} are in the image?", "Count the {shapes} in the image.")
COLOUR_COUNT_QUESTION = "How many {colour} {things} are there?"
TOTAL_COUNT_QUESTIONS = ("How many shapes are there in the image?", "How many objects are in the picture?",
                         "How many shapes can you count in total?")

COLOUR_QUESTIONS = ("What {colour_word} is the {shape}?", "What is the {colour_word} of the {shape}?")
COLOURS_QUESTION = "What {colour_word}s are the {shapes}?"
BACKGROUND_QUESTION = "What {colour_word} is the background?"
DOT_QUESTION = "What {colour_word} is the dot on the {name}?"

SHAPE_QUESTIONS = ("What shape is the {colour} object?", "Which shape is {colour}?")

SIZE_QUESTIONS = ("Is the {name} large or small?", "How big is the {name}?", "What size is the {name}?")

WHERE_QUESTIONS = ("Where is the {name}?", "Where is the {name} located in the image?",
                   "In which part of the image is the {name}?")
EXTREME_QUESTION = "Which object is the {extreme} one?"   # leftmost, rightmost, highest, lowest

EITHER_WAY_QUESTION = "Is the {first} {words} or {opposite} the {second}?"
YES_NO_RELATION_QUESTION = "Is the {first} {words} the {second}?"
LARGER_QUESTION = "Which is larger, the {first} or the {second}?"

# (topic, its wordings), in the order reports list topics.
TOPICS = (
    ("presence", (*PRESENCE_QUESTIONS, ANY_SHAPE_QUESTION)),
    ("count", (*SHAPE_COUNT_QUESTIONS, COLOUR_COUNT_QUESTION, *TOTAL_COUNT_QUESTIONS)),
    ("colour", (*COLOUR_QUESTIONS, COLOURS_QUESTION, BACKGROUND_QUESTION, DOT_QUESTION)),
    ("shape", SHAPE_QUESTIONS),
    ("size", SIZE_QUESTIONS),
    ("position", (*WHERE_QUESTIONS, EXTREME_QUESTION)),
    ("relation", (EITHER_WAY_QUESTION, YES_NO_RELATION_QUESTION, LARGER_QUESTION)),
)
OTHER = "other"   # the topic of anything the rules do not ask as a fact (reasoning, free text)

# What a slot can hold when a question is read back. Pinning the two short slots keeps
# wordings apart: "What shape is the red object?" is not "What {colour_word} is the {shape}?".
_SLOTS = {"a": "an?", "colour_word": "colou?r"}


def _pattern(wording: str) -> re.Pattern:
    """A wording as a regular expression: its text literally, each slot as words."""
    parts = re.split(r"\{(\w+)\}", wording)   # text, slot, text, slot, ..., text
    return re.compile("".join(re.escape(part) if i % 2 == 0 else f"(?:{_SLOTS.get(part, '.+')})"
                              for i, part in enumerate(parts)))


_PATTERNS = tuple((name, tuple(map(_pattern, wordings))) for name, wordings in TOPICS)


def topic(question: str) -> str:
    """The topic whose wording the question's first line is (first match in TOPICS), or OTHER.

    The first line is the question: prompts append the format prompt or options below it.
    """
    first = question.strip().split("\n", 1)[0]
    return next((name for name, patterns in _PATTERNS if any(p.fullmatch(first) for p in patterns)), OTHER)
