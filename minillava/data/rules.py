"""Instruction data written by rules: true answers read straight off a scene graph.

LLaVA asked a text-only GPT-4 to write about images it could not see, from captions
and boxes. In the toy world we know every scene exactly, so a few rules can write the
same kinds of data, and every answer is true by construction. That makes this module
three things at once:

* the offline teacher of the data engine (no API, no cost, no hallucinations),
* text for pretraining the toy language model (``scene_text`` + Q&A over it),
* a reference: what a good teacher answer about a scene looks like.

The kinds follow LLaVA-Instruct-158K and the LLaVA-1.5 mix:

* ``conversation_qa``      multi-turn Q&A: presence (and confident absence), counts,
                           colours, shapes, sizes, positions, relations.
* ``short_answer_qa``      the same facts answered with one word or phrase, asked with
                           LLaVA-1.5's format prompt (academic VQA style).
* ``detailed_description`` every object, its size, colour and place, and a few relations.
* ``complex_reasoning``    one question needing knowledge beyond the pixels (corners,
                           paint mixing, rolling, reaching from the left).
* ``knowledge_qa``, ``text_only_chat``  text-only data (the ShareGPT counterpart) holding
                           the world knowledge the reasoning answers use.
* ``scene_text``           a written scene, the context for Q&A over written scenes.
* ``rule_response``        a conversation, description or reasoning answer in the teacher's
                           reply format: what the rule teacher sends back.

The questions are asked in the wordings of ``questions``, grouped there by topic, so the
topic of any question the rules write can be read back from it (``questions.topic``).

Everything is deterministic given the ``random.Random`` passed in. Questions only refer
to "the red circle" when there is exactly one, so no answer depends on which red circle
the reader had in mind.
"""

import random
from collections import Counter
from typing import NamedTuple

from minillava.data.parse import format_blocks, format_json
# The question wordings, by topic: the rules ask with these only, so a question's topic can be read back.
from minillava.data.questions import (ANY_SHAPE_QUESTION, BACKGROUND_QUESTION, COLOUR_COUNT_QUESTION, COLOUR_QUESTIONS,
                                      COLOURS_QUESTION, DOT_QUESTION, EITHER_WAY_QUESTION, EXTREME_QUESTION,
                                      LARGER_QUESTION, PRESENCE_QUESTIONS, SHAPE_COUNT_QUESTIONS, SHAPE_QUESTIONS,
                                      SIZE_QUESTIONS, TOTAL_COUNT_QUESTIONS, WHERE_QUESTIONS, YES_NO_RELATION_QUESTION)
# The caption helpers too, so rule-written text and captions phrase things alike.
from minillava.toyworld import (CATEGORIES, NUMBER_WORDS, SHAPE_CORNERS, SHAPES, Scene, article, capitalize,
                                join_words, noun_phrase, position_words)

FORMAT_PROMPT = "Answer the question using a single word or phrase."
# Shapes the toy world never draws: asking about them teaches confident absence.
UNSEEN_SHAPES = ("star", "heart", "hexagon", "arrow", "crescent")
# Subtractive (paint) mixing of the primaries that occur as toy colours.
PAINT_MIXES = {frozenset({"red", "yellow"}): "orange", frozenset({"red", "blue"}): "purple",
               frozenset({"blue", "yellow"}): "green"}
SHAPE_DEFINITIONS = {
    "circle": "a round shape whose edge is everywhere the same distance from its centre; "
              "it has no corners",
    "square": "a shape with four equal straight sides and four right-angled corners",
    "triangle": "a shape with three straight sides and three corners",
    "diamond": "a square turned on one of its corners, so it has four equal sides and four corners",
    "cross": "two bars crossing in the middle, like a plus sign; its outline has twelve corners",
}


class QA(NamedTuple):
    """One fact about a scene as a question, a full-sentence answer and a short answer."""
    question: str
    answer: str
    short: str


# ----------------------------------------------------------------------------
# Small phrase helpers


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _number(k: int) -> str:
    return NUMBER_WORDS[k] if k < len(NUMBER_WORDS) else str(k)


def _there(k: int, noun: str) -> str:
    """'There is one red circle', 'There are two red circles', 'There are no red circles'."""
    return f"There is one {noun}" if k == 1 else f"There are {_number(k)} {_plural(noun)}"


def _colour_word(rng: random.Random) -> str:
    return rng.choice(("colour", "color"))


def _place(where: str) -> str:
    """'in the top left' -> 'top left': the short-answer form of a position."""
    return where.split(" the ", 1)[1]


class _View:
    """A scene's objects with the lookups the rules need."""

    def __init__(self, annotation: dict):
        self.scene = Scene.from_annotation(annotation)
        self.objects = self.scene.objects
        self.names = Counter(o.name for o in self.objects)
        self.shapes = Counter(o.shape for o in self.objects)
        self.colours = Counter(o.color for o in self.objects)
        # Objects a question can call "the <name>": their name is unique in the scene.
        self.unique = [o for o in self.objects if self.names[o.name] == 1]
        # A list, not a set: set order follows string hashes, which change between runs.
        self.relations = [(self.objects[i], rel, self.objects[j]) for i, rel, j in self.scene.relations()]
        self._facts = set(self.relations)

    def holds(self, a, rel, b) -> bool:
        return (a, rel, b) in self._facts


# ----------------------------------------------------------------------------
# Facts as questions. Each topic returns candidates; the callers pick a balanced mix.


def _presence(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for name, k in v.names.items():
        q = rng.choice(PRESENCE_QUESTIONS)
        if k == 1:
            where = position_words(next(o for o in v.objects if o.name == name))
            a = rng.choice((f"Yes, there is {article(name)} {name} {where}.", f"Yes, there is one {name} in the image.",
                            f"Yes, I can see {article(name)} {name} {where}."))
        else:
            a = f"Yes, {_there(k, name).lower()} in the image."
        qas.append(QA(q.format(a=article(name), name=name), a, "yes"))
    # "Are there any ...?" is asked of a present shape as often as of an absent one (_absence).
    shape = rng.choice(sorted(v.shapes))
    qas.append(QA(ANY_SHAPE_QUESTION.format(shapes=_plural(shape)),
                  f"Yes, {_there(v.shapes[shape], shape).lower()} in the image.", "yes"))
    return qas


def _absence(v: _View, rng: random.Random) -> list[QA]:
    """Confident "no" answers: absent categories (tempting ones first) and unseen shapes."""
    absent = [c for c in CATEGORIES if c not in v.names]
    # A known colour on an absent shape-colour pair is the hard negative, as in POPE's
    # adversarial split; an unseen shape is the easy one.
    tempting = [c for c in absent if c.split()[0] in v.colours or c.split()[1] in v.shapes]
    names = rng.sample(tempting or absent, min(2, len(tempting or absent)))
    names.append(f"{rng.choice(sorted(v.colours))} {rng.choice(UNSEEN_SHAPES)}")
    qas = []
    for name in names:
        q = rng.choice(PRESENCE_QUESTIONS)
        a = rng.choice((f"No, there is no {name} in the image.", f"No, there is no {name}.",
                        f"No, the image does not contain {article(name)} {name}."))
        qas.append(QA(q.format(a=article(name), name=name), a, "no"))
    shape = rng.choice([s for s in SHAPES if s not in v.shapes] or [rng.choice(UNSEEN_SHAPES)])
    qas.append(QA(ANY_SHAPE_QUESTION.format(shapes=_plural(shape)), f"No, there are no {_plural(shape)} in the image.",
                  "no"))
    return qas


def _counts(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for shape in [*v.shapes, rng.choice([s for s in SHAPES if s not in v.shapes] or UNSEEN_SHAPES)]:
        k = v.shapes[shape]
        q = rng.choice(SHAPE_COUNT_QUESTIONS).format(shapes=_plural(shape))
        a = f"There are no {_plural(shape)}." if k == 0 else f"{_there(k, shape)} in the image."
        qas.append(QA(q, a, str(k)))
    for colour, k in v.colours.items():
        items = join_words([noun_phrase(m, name.split()[1], colour) for name, m in v.names.items() if name.split()[0] == colour])
        q = COLOUR_COUNT_QUESTION.format(colour=colour, things=rng.choice(("objects", "shapes")))
        a = (f"There is one {colour} object: {items}." if k == 1
             else f"There are {_number(k)} {colour} objects: {items}.")
        qas.append(QA(q, a, str(k)))
    n = len(v.objects)
    q = rng.choice(TOTAL_COUNT_QUESTIONS)
    a = "There is one shape in total." if n == 1 else f"There are {_number(n)} shapes in total."
    qas.append(QA(q, a, str(n)))
    return qas


def _colours(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for shape in v.shapes:
        objs = [o for o in v.objects if o.shape == shape]
        cols = list(dict.fromkeys(o.color for o in objs))   # distinct, in scene order
        if len(objs) == 1:
            # Each wording draws its own spelling, then one wording is picked.
            q = rng.choice([w.format(colour_word=_colour_word(rng), shape=shape) for w in COLOUR_QUESTIONS])
            a = rng.choice((f"The {shape} is {cols[0]}.", f"It is {cols[0]}."))
        else:
            q = COLOURS_QUESTION.format(colour_word=_colour_word(rng), shapes=_plural(shape))
            a = (f"All {_number(len(objs))} {_plural(shape)} are {cols[0]}." if len(cols) == 1
                 else f"The {_plural(shape)} are {join_words(cols)}.")
        qas.append(QA(q, a, join_words(cols)))
    bg = v.scene.background
    qas.append(QA(BACKGROUND_QUESTION.format(colour_word=_colour_word(rng)), f"The background is {bg}.", bg))
    for o in v.unique:
        if o.mark:
            qas.append(QA(DOT_QUESTION.format(colour_word=_colour_word(rng), name=o.name),
                          f"The dot on the {o.name} is {o.mark}.", o.mark))
    return qas


def _shapes(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for colour, k in v.colours.items():
        if k == 1:
            o = next(o for o in v.objects if o.color == colour)
            q = rng.choice(SHAPE_QUESTIONS).format(colour=colour)
            qas.append(QA(q, f"The {colour} object is {article(o.shape)} {o.shape}.", o.shape))
    return qas


def _sizes(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for o in v.unique:
        q = rng.choice(SIZE_QUESTIONS).format(name=o.name)
        qas.append(QA(q, f"The {o.name} is {o.size}.", o.size))
    return qas


def _positions(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for o in v.unique:
        where = position_words(o)
        q = rng.choice(WHERE_QUESTIONS).format(name=o.name)
        qas.append(QA(q, f"The {o.name} is {where}.", _place(where)))
    # "leftmost" etc. only when one object is strictly beyond all the others
    for side, rel, first in (("left", "left of", True), ("right", "left of", False),
                             ("top", "above", True), ("bottom", "above", False)):
        for o in v.unique:
            others = [p for p in v.objects if p is not o]
            if others and all(v.holds(o, rel, p) if first else v.holds(p, rel, o) for p in others):
                word = {"left": "leftmost", "right": "rightmost", "top": "highest", "bottom": "lowest"}[side]
                qas.append(QA(EXTREME_QUESTION.format(extreme=word),
                              f"The {o.name} is the {word} object in the image.", o.name))
    return qas


def _relations(v: _View, rng: random.Random) -> list[QA]:
    qas = []
    for i, first in enumerate(v.unique):
        for second in v.unique[i + 1:]:
            a, b = rng.sample((first, second), 2)   # either may be the subject
            for rel, (yes_words, no_words), short in (("left of", ("to the left of", "to the right of"),
                                                       ("left", "right")),
                                                      ("above", ("above", "below"), ("above", "below"))):
                forward = v.holds(a, rel, b)
                if not forward and not v.holds(b, rel, a):
                    continue  # the boxes overlap along this axis: no clear-cut answer
                words = yes_words if forward else no_words
                if rng.random() < 0.5:
                    q = EITHER_WAY_QUESTION.format(first=a.name, words=yes_words, opposite=no_words, second=b.name)
                    qas.append(QA(q, f"The {a.name} is {words} the {b.name}.", short[0 if forward else 1]))
                else:
                    q = YES_NO_RELATION_QUESTION.format(first=a.name, words=yes_words, second=b.name)
                    ans = (f"Yes, the {a.name} is {words} the {b.name}." if forward
                           else f"No, the {a.name} is {words} the {b.name}.")
                    qas.append(QA(q, ans, "yes" if forward else "no"))
            if a.size != b.size:
                big, small = (a, b) if a.size == "large" else (b, a)
                q = LARGER_QUESTION.format(first=a.name, second=b.name)
                qas.append(QA(q, f"The {big.name} is larger than the {small.name}.", big.name))
    return qas


_TOPICS = (_presence, _absence, _counts, _colours, _shapes, _sizes, _positions, _relations)


def _pick(annotation: dict, rng: random.Random, n: int | None) -> list[QA]:
    """Up to n facts (default 3 to 6), spread over topics, no question twice."""
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    v = _View(annotation)
    pools = [pool for pool in (topic(v, rng) for topic in _TOPICS) if pool]
    n = rng.randint(3, 6) if n is None else n
    picked, seen = [], set()
    while pools and len(picked) < n:
        pool = rng.choice(pools)   # topic first, then a fact: counts don't crowd out relations
        qa = pool.pop(rng.randrange(len(pool)))
        if not pool:
            pools.remove(pool)
        if qa.question not in seen:
            seen.add(qa.question)
            picked.append(qa)
    return picked


def conversation_qa(annotation: dict, rng: random.Random, n: int | None = None) -> list[tuple[str, str]]:
    """Up to n (default 3-6) question/answer pairs with full-sentence, true answers.

    Covers presence and confident absence ("Is there a green star?" -> "No, there is no
    green star."), counts, colours, shapes, sizes, positions and relations. Fewer than
    n pairs come back when the scene has fewer facts to ask about.
    """
    return [(qa.question, qa.answer) for qa in _pick(annotation, rng, n)]


def short_answer_qa(annotation: dict, rng: random.Random, n: int | None = None) -> list[tuple[str, str]]:
    """The same facts as conversation_qa answered in one word or phrase ("yes", "2", "red").

    Each question ends with LLaVA-1.5's format prompt on a new line (FORMAT_PROMPT), as
    academic VQA data does in its training mix.
    """
    return [(f"{qa.question}\n{FORMAT_PROMPT}", qa.short) for qa in _pick(annotation, rng, n)]


# ----------------------------------------------------------------------------
# Descriptions and reasoning


def _object_phrase(o) -> str:
    """'a large red circle', 'a small blue square with a green dot'."""
    return noun_phrase(1, o.shape, f"{o.size} {o.color}", o.mark)


def detailed_description(annotation: dict, rng: random.Random) -> str:
    """A truthful paragraph: how many shapes, every object with size, colour and place, relations."""
    v = _View(annotation)
    objs = sorted(v.objects, key=lambda o: o.box[0])   # read left to right, as a person would
    n = len(objs)
    opening = rng.choice((
        f"The image shows {_number(n)} shape{'s' if n > 1 else ''} on a plain {v.scene.background} background.",
        f"This is a simple picture with {_number(n)} coloured shape{'s' if n > 1 else ''} "
        f"on a {v.scene.background} background.",
    ))
    sentences = [opening]
    for i, o in enumerate(objs):
        where = position_words(o)
        sentences.append(rng.choice((
            f"{capitalize(where)} there is {_object_phrase(o)}.",
            f"{capitalize(_object_phrase(o))} sits {where}.",
            f"{'Next' if i else 'First'}, {_object_phrase(o)} can be seen {where}.",
            f"There is {'also ' if i else ''}{_object_phrase(o)} {where}.",
        )))
    pairs = [(a, rel, b) for a, rel, b in v.relations if a in v.unique and b in v.unique]
    for a, rel, b in rng.sample(pairs, min(2, len(pairs))):
        words = {"left of": "to the left of", "above": "above", "larger than": "larger than"}[rel]
        sentences.append(f"The {a.name} is {words} the {b.name}.")
    if n > 1:
        shapes = join_words([noun_phrase(k, s) for s, k in v.shapes.items()])
        sentences.append(f"Altogether the scene contains {shapes}.")
    return " ".join(sentences)


def _corners(v: _View, rng: random.Random) -> tuple[str, str] | None:
    q = rng.choice(("If you counted every corner of every shape in this image, how many corners would you get?",
                    "How many corners do the shapes in this image have altogether?"))
    parts = [f"{noun_phrase(k, s)} with {_number(SHAPE_CORNERS[s])} corners{' each' * (k > 1)}"
             for s, k in v.shapes.items()]
    total = sum(SHAPE_CORNERS[o.shape] for o in v.objects)
    sums = " + ".join(f"{k} x {SHAPE_CORNERS[s]}" for s, k in v.shapes.items())
    a = (f"The image has {join_words(parts)}. A circle has no corners, a triangle has three, squares and "
         f"diamonds have four, and a cross has twelve. So the total is {sums} = {total} corners.")
    return q, a


def _reach_first(v: _View, rng: random.Random) -> tuple[str, str] | None:
    first = min(v.objects, key=lambda o: o.box[0])
    rest = [o for o in v.objects if o is not first]
    if not rest or first not in v.unique or any(o.box[0] <= first.box[0] for o in rest):
        return None
    q = rng.choice(("If you slid your finger across the picture starting from the left edge, "
                    "which shape would you touch first?",
                    "Moving from the left side of the image towards the right, which object do you reach first?"))
    a = (f"You would reach the {first.name} first. It is the shape whose left side is closest to the left "
         f"edge of the image, so nothing else is in the way before it.")
    return q, a


def _paint(v: _View, rng: random.Random) -> tuple[str, str] | None:
    primaries = sorted(set(v.colours) & {"red", "yellow", "blue"})
    if len(primaries) < 2:
        return None
    c1, c2 = rng.sample(primaries, 2)
    mix = PAINT_MIXES[frozenset({c1, c2})]
    def ref(c):  # "the red shape" only when there is one
        return f"{'the' if v.colours[c] == 1 else 'a'} {c} shape"
    q = f"If you mixed paint in the colour of {ref(c1)} with paint in the colour of {ref(c2)}, what colour would you get?"
    a = (f"You would get {mix}. {capitalize(c1)} and {c2} are both primary paint colours, and mixing "
         f"{c1} with {c2} paint makes {mix}.")
    return q, a


def _rolling(v: _View, rng: random.Random) -> tuple[str, str]:
    q = rng.choice(("Which of the shapes in this image could roll smoothly like a wheel?",
                    "If these shapes were cut out of wood, which one would roll best?"))
    def the(shape):
        return f"the {shape}" if v.shapes[shape] == 1 else f"the {_plural(shape)}"
    cornered = [s for s in v.shapes if s != "circle"]
    others = join_words([the(s) for s in cornered]) if cornered else ""
    have = "has" if sum(v.shapes[s] for s in cornered) == 1 else "have"
    if "circle" not in v.shapes:
        a = (f"None of them would roll smoothly. Only a circle has no corners, and this image has no circle: "
             f"{others} {have} corners that would stop {'it' if have == 'has' else 'them'} rolling.")
    else:
        a = (f"Only {the('circle')} would roll smoothly, because a circle has no corners and its edge is "
             f"everywhere the same distance from its centre.")
        if cornered:
            a += f" {capitalize(others)} {have} corners, so {'it' if have == 'has' else 'they'} would tip over instead."
    return q, a


def complex_reasoning(annotation: dict, rng: random.Random) -> tuple[str, str]:
    """One question whose answer needs knowledge beyond what is visible, with its answer.

    Draws among the reasoning patterns that apply to this scene: total corners
    (toyworld.SHAPE_CORNERS), which shape rolls, paint mixing of two primary colours,
    which object you reach first moving from the left.
    """
    v = _View(annotation)
    options = [qa for qa in (f(v, rng) for f in (_corners, _reach_first, _paint, _rolling)) if qa]
    return rng.choice(options)


def rule_response(kind: str, annotation: dict, rng: random.Random, json_mode: bool = False) -> str:
    """What the rule teacher writes for one scene, in the teacher's raw text (or JSON) format.

    kind is one of the data engine's three (``prompts.KINDS``): "conversation" (conversation_qa),
    "detail" (detailed_description) or "complex" (complex_reasoning).
    """
    if kind == "detail":
        text = detailed_description(annotation, rng)
        return format_json(kind, text) if json_mode else text
    pairs = conversation_qa(annotation, rng) if kind == "conversation" else [complex_reasoning(annotation, rng)]
    return format_json(kind, pairs) if json_mode else format_blocks(pairs)


# ----------------------------------------------------------------------------
# Text-only data


def _knowledge_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """One candidate of each kind of fact; knowledge_qa draws among them."""
    shape = rng.choice(SHAPES)
    k = SHAPE_CORNERS[shape]
    pair = rng.choice(sorted(PAINT_MIXES, key=sorted))
    c1, c2 = rng.sample(sorted(pair), 2)
    x, y = rng.randint(0, 12), rng.randint(0, 12)
    return [
        (f"How many corners does {article(shape)} {shape} have?",
         f"{capitalize(article(shape))} {shape} has {_number(k)} corner{'s' * (k != 1)}."),
        (f"What colour do you get when you mix {c1} and {c2} paint?",
         f"Mixing {c1} and {c2} paint gives {PAINT_MIXES[pair]}."),
        ("Which shape can roll like a wheel?", "A circle can roll, because it has no corners."),
        (f"What is {article(shape)} {shape}?", f"{capitalize(article(shape))} {shape} is {SHAPE_DEFINITIONS[shape]}."),
        (f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."),
        ("What are the three primary paint colours?", "The primary paint colours are red, yellow and blue."),
        ("What is the opposite of left?", "The opposite of left is right."),
        ("What is the opposite of above?", "The opposite of above is below."),
    ]


def knowledge_qa(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n text-only question/answer pairs of the world knowledge complex_reasoning relies on.

    Corners of each shape, paint mixing, rolling, definitions, small sums. Facts repeat
    when n is large: the pool of distinct facts is small, only wordings and numbers vary.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return [rng.choice(_knowledge_pairs(rng)) for _ in range(n)]


def text_only_chat(rng: random.Random) -> list[tuple[str, str]]:
    """A short text-only chat (user, assistant) turns: a greeting, 1-3 questions, maybe thanks."""
    greeting = rng.choice((("Hello!", "Hello! How can I help you today?"),
                           ("Hi there.", "Hi! What would you like to know?"),
                           ("Good morning!", "Good morning! What can I do for you?")))
    turns = [greeting] if rng.random() < 0.7 else []
    turns += knowledge_qa(rng, rng.randint(1, 3))
    if rng.random() < 0.5:
        turns.append(rng.choice((("Thank you!", "You're welcome!"),
                                 ("Thanks, that helps.", "Glad I could help!"))))
    return turns


def scene_text(annotation: dict) -> str:
    """A written scene: background, then every object left to right with size, colour, place.

    Deterministic (no rng), so the same scene always reads the same. It holds every fact
    the Q&A above asks about, so a language model can learn Q&A over written scenes.
    """
    v = _View(annotation)
    objs = sorted(v.objects, key=lambda o: o.box[0])
    listing = join_words([f"{_object_phrase(o)} {position_words(o)}" for o in objs])
    return f"On a {v.scene.background} background, from left to right: {listing}."
