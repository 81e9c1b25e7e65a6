"""The teacher's text format, written and read, and the clean-up LLaVA applied to it.

Conversations and reasoning questions come back as blocks separated by "===":

    Question:
    How many circles are there?
    ===
    Answer:
    There are two circles.
    ===
    Question:
    ...

or, in JSON mode, as {"qa": [{"question", "answer"}, ...]} ({"description"} for details).
The rule teacher *writes* this format and every teacher's reply is *read* by the same
parser, so the offline pipeline exercises exactly the code a GPT-4 run does.

A teacher that was shown captions and boxes sometimes lets them leak into its answers
("According to the caption, ...", "the bounding box shows ..."), or refuses ("Sorry, I
cannot see the image"). Following LLaVA-Med's public generator, a known lead-in is
stripped, and a turn that still mentions the source or apologises is dropped. Every
dropped turn comes with its reason, so a run can report what it threw away.
"""

import json
import random
import re

from minillava.conversation import IMAGE_MARKER

LEAK_WORDS = ("caption", "description", "bounding box", "coordinates", "sorry", "cannot see")
# "Based on the description, the cat ..." -> "The cat ...": the fact stays, the leak goes.
_LEAD_IN = re.compile(r"^(?:based on|according to|from|as (?:shown|seen|described) in) (?:the|this|these) "
                      r"(?:given |provided )?(?:image )?(?:description|captions?|information|coordinates|"
                      r"bounding boxes)[^,.]*, ", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(question|answer)\s*\d*\s*:\s*", re.IGNORECASE)


class ParseError(ValueError):
    """The teacher's reply is not in the expected format; the message is the reason."""


# ----------------------------------------------------------------------------
# Writing


def format_blocks(pairs: list[tuple[str, str]]) -> str:
    """(question, answer) pairs in the Question: / === / Answer: layout."""
    return "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in pairs)


def format_json(kind: str, content) -> str:
    """A JSON-mode reply: {"description": text} for details, else {"qa": [...]} of pairs."""
    if kind == "detail":
        return json.dumps({"description": content})
    return json.dumps({"qa": [{"question": q, "answer": a} for q, a in content]})


# ----------------------------------------------------------------------------
# Reading


def parse_blocks(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Question/answer pairs from Question:/===/Answer: text, and the questions left unanswered.

    Tolerates what chat models vary: labels with the text on the same line ("Question: Why?"),
    numbered labels ("Question 2:"), missing "===" lines, blank lines.
    """
    blocks, label = [], None   # [(label, text)] in order
    for line in text.strip().splitlines():
        if line.strip() == "===":
            label = None
            continue
        m = _LABEL.match(line)
        if m:
            label = m[1].lower()
            blocks.append((label, line[m.end():]))
        elif label is not None:
            blocks[-1] = (label, blocks[-1][1] + "\n" + line)
    pairs, unanswered = [], []
    for i, (label, body) in enumerate(blocks):
        if label != "question":
            continue
        if i + 1 < len(blocks) and blocks[i + 1][0] == "answer" and blocks[i + 1][1].strip():
            pairs.append((body.strip(), blocks[i + 1][1].strip()))
        else:
            unanswered.append(body.strip())
    if not pairs:
        raise ParseError("no Question:/Answer: pair found")
    return pairs, unanswered


def parse_json(text: str, kind: str):
    """The content of a JSON-mode reply: the description (detail) or the (question, answer) pairs."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ParseError("reply is not valid JSON") from None
    if kind == "detail":
        if not isinstance(data, dict) or not isinstance(data.get("description"), str):
            raise ParseError('JSON reply has no "description" string')
        return data["description"].strip()
    qa = data.get("qa") if isinstance(data, dict) else None
    if not isinstance(qa, list) or not all(isinstance(t, dict) and isinstance(t.get("question"), str)
                                           and isinstance(t.get("answer"), str) for t in qa) or not qa:
        raise ParseError('JSON reply has no "qa" list of {"question", "answer"} strings')
    return [(t["question"].strip(), t["answer"].strip()) for t in qa]


def parse_response(text: str, kind: str, json_mode: bool = False) -> tuple[list[tuple[str, str]], list[str]]:
    """(turns, unanswered questions) from a reply. A detail reply is one turn with an empty question.

    Complex reasoning asks for one question: extra pairs beyond the first are ignored.
    Raises ParseError when nothing usable is in the reply.
    """
    if json_mode:
        content = parse_json(text, kind)
        pairs, unanswered = ([("", content)] if kind == "detail" else content), []
    elif kind == "detail":
        if not text.strip() or _LABEL.match(text):
            raise ParseError("empty or question-formatted reply to a description request")
        pairs, unanswered = [("", text.strip())], []
    else:
        pairs, unanswered = parse_blocks(text)
    return (pairs[:1] if kind == "complex" else pairs), unanswered


# ----------------------------------------------------------------------------
# Clean-up


def strip_lead_in(text: str) -> str:
    """Remove one source-citing lead-in ("Based on the description, ...") and re-capitalise."""
    stripped = _LEAD_IN.sub("", text, count=1)
    return stripped[:1].upper() + stripped[1:] if stripped != text else text


def leak(text: str) -> str | None:
    """The first LEAK_WORDS entry found in text (case-insensitive), or None."""
    lowered = text.lower()
    return next((w for w in LEAK_WORDS if w in lowered), None)


def clean_turns(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[tuple[str, str], str]]]:
    """(kept turns, [(dropped turn, reason)]): lead-ins stripped, leaking turns dropped."""
    kept, dropped = [], []
    for q, a in pairs:
        q, a = strip_lead_in(q), strip_lead_in(a)
        word = leak(q) or leak(a)
        if word:
            dropped.append(((q, a), f"leak: {word}"))
        else:
            kept.append((q, a))
    return kept, dropped


def to_llava_turns(pairs: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    """LLaVA's [{"from": "human"|"gpt", "value"}] with <image> before or after the first question.

    The side is drawn at random, as in LLaVA's data, so a model does not learn that the
    image always comes first; training code moves it to the front anyway.
    """
    turns = []
    for i, (q, a) in enumerate(pairs):
        if i == 0:
            q = f"{IMAGE_MARKER}\n{q}" if rng.random() < 0.5 else f"{q}\n{IMAGE_MARKER}"
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return turns
