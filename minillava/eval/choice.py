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

# How a reply names a letter, from the most to the least explicit (see ``parse_choice``).
# A whole reply that is one letter, in any case: "B", "b", "(B)", "B.".
_BARE = re.compile(r"^\(?([A-Za-z])\)?[.:)]?$")
# An answer statement -- "the answer is", "Answer:", "the correct option is" -- then its
# clause, up to the end of the sentence ("." ";" "!" "?" before a space, or a new line).
_STATEMENT = re.compile(
    r"\b(?:answer|(?:correct|right|best) (?:option|choice))\b(?:\s+(?:is|would be|should be))?\s*:?"
    r"(?P<clause>.*?)(?:[.;!?](?=\s|$)|\n|$)", re.IGNORECASE)
# A capital standing alone, maybe in parentheses: "B", "(B)", "B." (not "B's", not "Bx").
_LETTER = re.compile(r"(?<![\w'])\(?([A-Z])\)?(?![\w'])")
# A letter marked as an option anywhere: "(B)", "B." / "B)" / "B:" opening a line, "option B".
_MARKED = re.compile(r"\(([A-Z])\)|(?:^|\n)\s*([A-Z])[.:)](?=\s|$)|(?i:\b(?:option|choice))\s+\(?([A-Z])\b")


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

    Read as the benchmarks read a reply, most explicit first:

    1. the whole reply is a letter: "B", "b", "(B)", "B.";
    2. answer statements ("The answer is B.", "Answer: (B)", "the correct option is B"):
       the capital letters in their clauses -- "Option A is wrong; the answer is B." is B;
    3. otherwise the letters marked as options anywhere: "(B)", "B. a cat" opening a
       line, "option B";
    4. otherwise, as MMBench does, the capitals that are option letters standing alone:
       "I think B is right" is B -- except a lone "A" in a reply of more than three
       words, which is an article ("A cat sits on the mat.").

    Where the deciding rule finds two different letters -- "(A) or (B)", "the answer
    is A or B" -- the reply marks no single answer and this returns None, as it does
    for a reply with no letter, a letter beyond the N options, and an answer that
    repeats the option's text without its letter: scored wrong rather than guessed.
    MMBench's own rule (which counts letters by their punctuation, "B." or "(B)") agrees
    on replies that name one letter, but takes "Option A is wrong; the answer is B."
    as B only by luck and "I think (A), maybe (B)." as B.
    """
    _check_n_options(n_options)
    text = text.strip()
    bare = _BARE.match(text)
    if bare:
        letters = {bare.group(1).upper()}
    else:
        letters = {letter for m in _STATEMENT.finditer(text) for letter in _LETTER.findall(m["clause"])}
        if not letters:
            letters = {letter for groups in _MARKED.findall(text) for letter in groups if letter}
        if not letters:   # MMBench's last resort: a lone capital that is one of the option letters
            letters = {letter for letter in _LETTER.findall(text) if letter in LETTERS[:n_options]}
            if letters == {"A"} and len(text.split()) > 3:
                return None   # "A cat sits on the mat.": an article, not a choice
    if len(letters) != 1:
        return None
    (letter,) = letters
    return letter if LETTERS.index(letter) < n_options else None


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
