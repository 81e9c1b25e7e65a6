"""CHAIR: how often a description mentions objects that are not in the image.

Given free-form descriptions and each image's ground-truth objects, CHAIR
(Rohrbach et al., 2018) finds the object words of a closed vocabulary in every
description and reports two rates:

* CHAIR_i = hallucinated object mentions / all object mentions,
* CHAIR_s = descriptions with at least one hallucinated object / all descriptions.

Finding "object words" is the whole difficulty, so the vocabulary maps each
object to its synonyms ("person": "man", "woman", "people") and matching
follows simple, documented rules:

* Whole words only: "cat" does not match inside "category" or "concatenate".
* Longest phrase wins: in "a hot dog" the object is "hot dog", not "dog".
* Simple plurals are generated ("dog" -> "dogs", "bus" -> "buses",
  "berry" -> "berries"); irregular ones ("people", "knives") are synonyms.
* Each object counts once per description, so repeating a hallucination does
  not inflate CHAIR_i.
* Negated mentions are not mentions: "there is no triangle" does not claim a
  triangle. A negation word ("no", "not", "without", "none", "never", "nor",
  "neither" or any "...n't") negates object words starting within the next
  three words, up to the next punctuation mark: "no red triangle", "isn't a
  dog", "no cat or dog" are all skipped. This is a heuristic, not a parser:
  "no doubt a dog" is wrongly skipped, "not only a cat but a dog" loses the cat.

Trap: a model that says nothing has CHAIR 0. Always read the rates next to
``n_mentions``; zero mentions give CHAIR_i = 0.0 by convention.
"""

import re

_TOKEN = re.compile(r"\w+(?:'\w+)?|[.,;:!?]")
_CLAUSE_ENDS = frozenset(".,;:!?")
_NEGATIONS = frozenset({"no", "not", "without", "none", "never", "nor", "neither"})
_NEGATION_SCOPE = 3


def _tokens(text):
    """Lowercased words (keeping "isn't" whole) and punctuation marks."""
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


def _plural(word):
    """Regular English plural of one word; irregular plurals need a synonym."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


class Vocabulary:
    """Object names and the surface forms that mention them.

    ``synonyms`` maps each canonical object name to an iterable of other
    names for it, single or multi-word: ``{"person": ["man", "people"],
    "dining table": ["table"]}``. The canonical name is itself a form, and
    every form also matches with its last word pluralised. A form claimed by
    two objects raises ValueError; a generated plural never overrides a form
    given explicitly (so "glasses" can be its own object next to "glass").
    """

    def __init__(self, synonyms):
        self._forms = {}
        for obj, names in synonyms.items():
            for name in (obj, *names):
                form = tuple(_tokens(name))
                if not form or _CLAUSE_ENDS.intersection(form):
                    raise ValueError(
                        f"object name {name!r} (for {obj!r}) has no words or contains "
                        "punctuation; use plain words like 'traffic light'"
                    )
                owner = self._forms.setdefault(form, obj)
                if owner != obj:
                    raise ValueError(
                        f"{name!r} is listed for both {owner!r} and {obj!r}; "
                        "give each form to one object only"
                    )
        for form, obj in list(self._forms.items()):
            self._forms.setdefault(form[:-1] + (_plural(form[-1]),), obj)
        self._longest = max((len(form) for form in self._forms), default=0)
        self.objects = tuple(synonyms)

    def canonical(self, name):
        """The object a name refers to: ``canonical("people") == "person"``."""
        obj = self._forms.get(tuple(_tokens(name)))
        if obj is None:
            raise ValueError(
                f"{name!r} is not in the vocabulary; add it as an object or a "
                "synonym, or use one of: " + ", ".join(self.objects)
            )
        return obj

    def longest_match(self, tokens, start):
        """``(object, n_tokens)`` of the longest form at ``tokens[start:]``, or None."""
        for length in range(min(self._longest, len(tokens) - start), 0, -1):
            obj = self._forms.get(tuple(tokens[start : start + length]))
            if obj is not None:
                return obj, length
        return None


def extract_mentions(text, vocab):
    """Canonical objects that ``text`` claims are present, in order of first mention.

    Matching rules (whole words, longest phrase, plurals, one count per
    object, negation) are described in the module docstring.
    """
    tokens = _tokens(text)
    mentions = []
    negated_until = -1  # index of the last token inside a negation's scope
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _CLAUSE_ENDS:
            negated_until = -1
        elif token in _NEGATIONS or token.endswith("n't"):
            negated_until = i + _NEGATION_SCOPE
        elif (match := vocab.longest_match(tokens, i)) is not None:
            obj, length = match
            if i > negated_until and obj not in mentions:
                mentions.append(obj)
            i += length - 1  # skip the rest of the phrase: "hot dog" is not also "dog"
        i += 1
    return mentions


def chair(descriptions, present_objects, vocab):
    """CHAIR_i and CHAIR_s of descriptions against ground-truth objects.

    ``descriptions`` are strings; ``present_objects`` holds, per description,
    the names of the objects really in the image (canonical names or any
    synonym; a name outside the vocabulary raises ValueError, since it usually
    means the ground truth and the vocabulary disagree). An empty description
    is a caption with no mention: it counts in n_captions, never as
    hallucinating. Returns a dict with chair_i, chair_s, n_mentions,
    n_hallucinated and n_captions; chair_i is 0.0 when there are no mentions.
    """
    if len(descriptions) != len(present_objects):
        raise ValueError(
            f"got {len(descriptions)} descriptions but {len(present_objects)} "
            "ground-truth object sets; pass one set per description, in the same order"
        )
    if not descriptions:
        raise ValueError("no descriptions to score; pass at least one")
    n_mentions = n_hallucinated = n_captions_hallucinating = 0
    for text, present in zip(descriptions, present_objects):
        truth = {vocab.canonical(name) for name in present}
        mentioned = extract_mentions(text, vocab)
        hallucinated = [obj for obj in mentioned if obj not in truth]
        n_mentions += len(mentioned)
        n_hallucinated += len(hallucinated)
        n_captions_hallucinating += bool(hallucinated)
    return {
        "chair_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "chair_s": n_captions_hallucinating / len(descriptions),
        "n_mentions": n_mentions,
        "n_hallucinated": n_hallucinated,
        "n_captions": len(descriptions),
    }
