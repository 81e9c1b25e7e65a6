"""Multiple-choice evaluation with CircularEval (MMBench).

A question with N options is easy to "pass" by luck or by a letter bias: a
model that always answers "A" gets 1/N of four-option questions right, and a
model that merely prefers the first plausible-looking option gets more. MMBench's
CircularEval asks the question N times with the options rotated, so the
correct option sits behind every letter once, and counts the question correct
only if all N answers are correct. Guessing then succeeds with probability
(1/N)^N instead of 1/N, and a letter bias can no longer win.

Rotation r shows the options starting from option r: for ["cat", "dog",
"cow"], rotation 0 is A. cat / B. dog / C. cow, rotation 1 is A. dog / B. cow
/ C. cat. ``circular_eval`` also reports the plain accuracy of rotation 0 (the
original order); the gap between the two is a direct measure of how much the
plain number owed to luck and position.
"""

import re
import string
from typing import NamedTuple

LETTERS = string.ascii_uppercase

# Tried in order; the first one that matches decides. Only the first is
# case-insensitive: a capital "A" inside a sentence ("A cat sits...") is an
# article, so free text needs an explicit marker such as "answer is B".
_CHOICE_PATTERNS = (
    re.compile(r"^\(?([A-Za-z])\)?[.:)]?$"),  # "B", "b", "(B)", "B."
    re.compile(r"^\(?([A-Z])[.:)]\s"),  # "B. a cat", "(B) a cat", "B: a cat"
    re.compile(r"(?i:answer|option)(?: is)?:?\s*\(?([A-Z])\b"),  # "The answer is (B)"
)


class Rotation(NamedTuple):
    """One way of asking a question: the prompt and which option each letter shows."""

    prompt: str
    letter_to_option: dict  # letter -> index of the option in the original list


def _check_n_options(n_options):
    """Refuse option counts that cannot be lettered A, B, C, ..."""
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(
            f"need between 2 and {len(LETTERS)} options, got {n_options}; "
            "multiple choice needs at least two options, each with its own letter"
        )


def _order(n_options, rotation):
    """Original option indices in the order rotation ``rotation`` shows them."""
    return [(rotation + position) % n_options for position in range(n_options)]


def circular_prompts(question, options):
    """The N prompts of CircularEval, one ``Rotation`` per rotation of the options.

    Each prompt is the question, one line per option ("A. cat"), and an
    instruction to answer with a letter. Duplicate options raise ValueError:
    the same text behind two letters makes "correct" ambiguous.
    """
    _check_n_options(len(options))
    if len(set(options)) != len(options):
        raise ValueError("options repeat; every option must be different")
    rotations = []
    for rotation in range(len(options)):
        order = _order(len(options), rotation)
        lines = [f"{LETTERS[position]}. {options[index]}" for position, index in enumerate(order)]
        prompt = "\n".join(
            [question, *lines, "Answer with the letter of the correct option."]
        )
        rotations.append(Rotation(prompt, dict(zip(LETTERS, order))))
    return rotations


def parse_choice(text, n_options):
    """The letter a model answered with, or None if there is no clear one.

    Accepts a bare letter ("B", "b", "(B)", "B."), an answer that starts with a
    marked letter ("B. a cat", "(B) a cat") or a letter after "answer" or
    "option" ("The answer is B."). Returns None for anything else -- including
    a letter beyond the N options and an answer that repeats the option's text
    without its letter -- so that it is scored wrong rather than guessed.
    """
    _check_n_options(n_options)
    text = text.strip()
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            letter = match.group(1).upper()
            return letter if LETTERS.index(letter) < n_options else None
    return None


def circular_eval(records):
    """CircularEval accuracy and plain (rotation 0) accuracy over questions.

    Each record is a dict with "answer", the index of the correct option in
    the original option list, and "predictions", the parsed letter (or None)
    for each rotation in the order ``circular_prompts`` returned them -- one
    per option. Returns a dict with circular_accuracy, plain_accuracy and
    n_questions.
    """
    if not records:
        raise ValueError("no records to score; pass at least one question")
    n_circular = n_plain = 0
    for record in records:
        answer, predictions = record["answer"], record["predictions"]
        n_options = len(predictions)
        _check_n_options(n_options)
        if not 0 <= answer < n_options:
            raise ValueError(
                f"answer index {answer} is outside the {n_options} options; "
                "give 'answer' as the 0-based index of the correct option"
            )
        correct = [
            LETTERS[_order(n_options, rotation).index(answer)] for rotation in range(n_options)
        ]
        hits = [predicted == expected for predicted, expected in zip(predictions, correct)]
        n_plain += hits[0]
        n_circular += all(hits)
    return {
        "circular_accuracy": n_circular / len(records),
        "plain_accuracy": n_plain / len(records),
        "n_questions": len(records),
    }
