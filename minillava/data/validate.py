"""Catching a teacher's hallucinations: answers checked against the annotation.

GPT-4 writing from captions and boxes still makes things up: a third cup, a red car
that was blue, a dog that is not there. Training on such answers teaches the student
to hallucinate. We know the objects of every image, so claims that can be checked
mechanically are checked, and an answer that contradicts the annotation is dropped
with the reason:

* presence -- "the green triangle" when there is no green triangle;
* absence  -- "there is no red circle" when there is one;
* count    -- "two red circles", "There is one square" when the numbers differ;
* question-driven -- "How many circles?" -> "3", "Is there a red circle?" -> "No",
  "What colour is the square?" -> "blue" are checked against the question's subject.

The checks read text with patterns, not a parser, so they are deliberately narrow:
a mention needs an attribute ("red circle", not just "circle") to count as a claim
that it is present, because answers use bare nouns for knowledge ("a triangle has three
corners"). When nothing checkable is said, nothing is flagged. The vocabulary comes
from a ``Facts`` object, built from a toy-world annotation (attributes: colours and
sizes; nouns: shapes) or from COCO instances (nouns: category names, no attributes).
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from minillava.toyworld import COLORS, NUMBER_WORDS, SHAPES, SIZES

_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS) if i >= 2} | {"zero": 0}
_NEGATIONS = r"(?:no|not|without|none|never|nor|neither|\w+n't)"
# Nouns that stand for "any object": "the red shape", "three objects".
GENERIC_NOUNS = ("shape", "object")


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


@dataclass(frozen=True)
class Facts:
    """The checkable content of an image: each object as (noun, attribute words).

    nouns is the whole vocabulary the checks know, present in this image or not, so an
    absent "green triangle" is recognised as a claim; GENERIC_NOUNS in it match any object.
    """
    objects: tuple[tuple[str, frozenset], ...]
    nouns: frozenset
    attributes: frozenset = frozenset()     # words that may qualify a noun ("red", "large")
    colours: frozenset = frozenset()        # the subset of attributes that are colours

    def _matching(self, noun: str, attrs: frozenset):
        return [a for n, a in self.objects if (n == noun or noun in GENERIC_NOUNS) and attrs <= a]

    def count(self, noun: str, attrs=frozenset()) -> int:
        """How many objects are a `noun` carrying all of attrs ("shape"/"object": any noun)."""
        return len(self._matching(noun, attrs))

    def colours_of(self, noun: str, attrs=frozenset()) -> set:
        return {c for a in self._matching(noun, attrs) for c in a & self.colours}


def toy_facts(annotation: dict) -> Facts:
    """Facts of a toy scene: shapes with their colour and size."""
    try:
        objects = tuple((o["shape"], frozenset({o["color"], o["size"]})) for o in annotation["objects"])
    except (KeyError, TypeError):
        raise ValueError("not a toy-world annotation: pass Scene.annotation() output") from None
    return Facts(objects, frozenset(SHAPES) | frozenset(GENERIC_NOUNS), frozenset(COLORS) | frozenset(SIZES),
                 frozenset(COLORS))


def coco_facts(category_names: list[str], vocabulary: list[str]) -> Facts:
    """Facts of a COCO image: one category name per instance, out of the data set's vocabulary.

    No attributes are known, so bare category names count as claims ("a dog" must be there).
    """
    missing = set(category_names) - set(vocabulary)
    if missing:
        raise ValueError(f"categories {sorted(missing)} are not in the vocabulary; pass every "
                         f"category name of the data set as vocabulary")
    return Facts(tuple((name.lower(), frozenset()) for name in category_names),
                 frozenset(name.lower() for name in vocabulary))


# What may follow the subject of a whole-image question: "How many circles are there in the image?"
_TAIL = r"(?:\s+(?:are|is|can you|do you)?\s*(?:there|see|count|visible))?" \
        r"(?:\s+(?:in total|altogether|anywhere)?\s*(?:in the (?:image|picture|photo))?)?\s*[?.]\s*$"


class _Mentions:
    """Pattern matching of "[number] [attributes] noun" phrases for one Facts vocabulary."""

    def __init__(self, nouns: frozenset, attributes: frozenset):
        self.noun_of = {f: n for n in nouns for f in (n, _plural(n))}
        # longest first, so "hot dog" wins over "dog"
        noun = "|".join(re.escape(f) for f in sorted(self.noun_of, key=len, reverse=True))
        attr = "|".join(sorted(attributes)) or "(?!)"   # (?!) never matches: no attributes
        number = "|".join([*_NUMBERS, r"\d+"])
        self.phrase = re.compile(rf"\b(?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})\b", re.IGNORECASE)
        self.counted = re.compile(rf"\b(?P<lead>(?:there (?:is|are)|only|exactly|just) )?(?P<num>{number}|one) "
                                  rf"(?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})\b", re.IGNORECASE)
        self.denied = re.compile(rf"\b(?:no|zero|(?:is|are)n't any|(?:is|are) not any) "
                                 rf"(?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})\b", re.IGNORECASE)
        self.negated_before = re.compile(rf"\b{_NEGATIONS}\b(?:\s+\w+){{0,2}}\s*$", re.IGNORECASE)
        # Question-driven checks only fire on questions about the whole image, not
        # "How many circles are left of the square?"
        self.how_many = re.compile(rf"^\s*(?:how many|count the) (?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})"
                                   rf"{_TAIL}", re.IGNORECASE)
        self.is_there = re.compile(rf"^\s*(?:is there|are there|can you see|does the (?:image|picture) "
                                   rf"(?:contain|show)) (?:an? |any )?(?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})"
                                   rf"{_TAIL}", re.IGNORECASE)
        self.what_colour = re.compile(rf"^\s*(?:what colou?rs? (?:is|are) the|what is the colou?r of the) "
                                      rf"(?P<attrs>(?:(?:{attr}) )*)(?P<noun>{noun})\s*\??\s*$", re.IGNORECASE)

    def subject(self, m) -> tuple[str, frozenset]:
        return self.noun_of[m["noun"].lower()], frozenset(m["attrs"].lower().split())


@lru_cache(maxsize=64)
def _mentions(nouns: frozenset, attributes: frozenset) -> _Mentions:
    return _Mentions(nouns, attributes)   # compiled once per vocabulary: compiling costs more than checking


def _first_number(text: str) -> int | None:
    """The first count stated: a digit, a number word, 'one'/'a single', or 'no'/'none'/'zero' (0)."""
    words = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"none": 0, "zero": 0}
    for token in re.findall(r"[a-z]+|\d+", text.lower()):
        if token.isdigit():
            return int(token)
        if token in words:
            return words[token]
    return None


def check(question: str, answer: str, facts: Facts) -> list[str]:
    """Every contradiction between a question/answer turn and the facts, as readable reasons."""
    m = _mentions(facts.nouns, facts.attributes)
    problems = []
    question = question.split("\n")[0]   # drop a format prompt line

    # Claims the answer makes on its own.
    for match in m.phrase.finditer(answer):
        noun, attrs = m.subject(match)
        negated = m.negated_before.search(answer[:match.start()])
        if (attrs or not facts.attributes) and not negated and not facts.count(noun, attrs):
            problems.append(f"presence: mentions {match[0].strip().lower()!r}, which is not in the image")
    for match in m.denied.finditer(answer):
        noun, attrs = m.subject(match)
        if n := facts.count(noun, attrs):
            problems.append(f"absence: denies {match[0].lower()!r}, but the image has {n}")
    for match in m.counted.finditer(answer):
        if match["num"].lower() == "one" and not match["lead"]:
            continue   # "one circle is red, the other blue" is not a total
        said = int(match["num"]) if match["num"].isdigit() else _NUMBERS.get(match["num"].lower(), 1)
        noun, attrs = m.subject(match)
        if (n := facts.count(noun, attrs)) != said:
            problems.append(f"count: says {match[0].strip().lower()!r}, the image has {n}")

    # Claims that only make sense with the question.
    if q := m.how_many.match(question):
        said, n = _first_number(answer), facts.count(*m.subject(q))
        if said is not None and said != n:
            problems.append(f"count: answers {said} to {question!r}, the image has {n}")
    if q := m.is_there.match(question):
        first = re.match(r"\s*(yes|no)\b", answer, re.IGNORECASE)
        n = facts.count(*m.subject(q))
        if first and (first[1].lower() == "yes") != (n > 0):
            problems.append(f"presence: answers {first[1]!r} to {question!r}, the image has {n}")
    if (q := m.what_colour.match(question)) and facts.colours:
        truth = facts.colours_of(*m.subject(q))
        said = set(re.findall(rf"\b({'|'.join(facts.colours)})\b", answer.lower()))
        if truth and said and not said & truth:
            problems.append(f"colour: answers {', '.join(sorted(said))} to {question!r}, "
                            f"the image has {', '.join(sorted(truth))}")
    return list(dict.fromkeys(problems))   # one reason once


def reason_kind(problem: str) -> str:
    """The category of a check() reason, for counting: 'hallucination: count' etc."""
    return "hallucination: " + problem.split(":", 1)[0]

