"""Chapter 8, evaluation: POPE's metrics, CHAIR's hallucination rates, and reading a judge's scores."""

import random

from minillava.course.grading.core import GradingError, assert_number, check, expect_type, your_code
from minillava.eval import llava_bench, pope
from minillava.eval.assistants import HallucinatingDescriber
from minillava.eval.chair import Vocabulary, chair
from minillava.eval.scenes import DESCRIBE_PROMPT, eval_seeds, scene_annotation, scene_image
from minillava.toyworld import SYNONYMS

# (predictions, labels): balanced and not, a model that always says yes, one that always says no,
# questions with no "yes" label or no "no" label, a perfect model.
_POPE_CASES = (
    (["yes", "no", "yes", "yes", "no", "no", "yes", "no"], ["yes", "yes", "no", "yes", "no", "no", "yes", "yes"]),
    (["yes"] * 6, ["yes", "no", "yes", "no", "yes", "no"]),
    (["no"] * 6, ["yes", "no", "yes", "no", "yes", "no"]),
    (["yes", "no", "yes", "no"], ["yes", "yes", "yes", "yes"]),
    (["no", "no", "yes"], ["no", "no", "no"]),
    (["no", "no"], ["no", "no"]),
    (["yes", "no", "no", "yes", "no"], ["yes", "no", "no", "yes", "no"]),
    (["yes", "yes", "yes", "no"], ["yes", "no", "no", "no"]),
)


@check("pope_metrics")
def check_pope_metrics(pope_metrics):
    """``pope_metrics(predictions, labels) -> dict`` with accuracy, precision, recall, f1, yes_ratio."""
    hint = ('"yes" is the positive class: tp = yes predicted for a yes label, fp = yes for a no label, fn = no '
            "for a yes label; precision = tp / (tp + fp), recall = tp / (tp + fn), f1 = 2 * precision * recall / "
            "(precision + recall) (the harmonic mean, not the average); yes_ratio = share of PREDICTIONS that are "
            "yes; any ratio whose denominator is 0 is 0.0 (an all-no model must not crash)")
    rng = random.Random(0)  # local RNG: leave the notebook's alone
    labels = [rng.choice(["yes", "no"]) for _ in range(40)]
    cases = [*_POPE_CASES, ([rng.choice(["yes", "yes", "no"]) for _ in labels], labels)]
    for predictions, labels in cases:
        with your_code(pope_metrics):
            got = pope_metrics(list(predictions), list(labels))
        expected = pope.metrics(predictions, labels)
        what = f"pope_metrics(predictions={predictions}, labels={labels})"
        if len(predictions) > 8:
            what = f"pope_metrics on {len(predictions)} seeded random answers"
        expect_type(got, dict, what=what, hint=hint)
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            if key not in got:
                raise GradingError(f"{what}: the key {key!r} is missing", got=sorted(got, key=str), hint=hint)
            assert_number(got[key], expected[key], what=f'{what}["{key}"]', hint=hint)


_CHAIR_VOCAB = {  # a COCO-like vocabulary: single words, irregular plurals listed as synonyms
    "person": ["person", "man", "woman", "men", "women", "people", "child", "children"],
    "dog": ["dog", "dogs", "puppy", "puppies"],
    "cat": ["cat", "cats", "kitten", "kittens"],
    "car": ["car", "cars", "taxi", "taxis"],
    "bench": ["bench", "benches"],
}
# (descriptions, objects really there): synonyms, repeats, capitals and punctuation, a description
# with no object word, whole words only ("category" and "scattered" hold no cat).
_CHAIR_CASES = (
    (["A man walks a dog past a bench.", "Two kittens sleep on a car.", "A woman and a child sit on a bench."],
     [["person", "dog", "bench"], ["cat"], ["person"]]),
    (["A dog chases a cat. Another dog barks at the cat, and more dogs join.", "People wait for a taxi.",
      "An empty street in the rain."],
     [["cat"], ["person", "car"], ["car"]]),
    (["Puppies, puppies everywhere!", "The CAR is parked; a Man leans on it.", "A category of scattered data.",
      "Children feed a kitten while their dog watches."],
     [["dog"], ["person"], [], ["person", "dog"]]),
    (["", "Nothing but sky."], [["dog"], []]),
)


@check("chair_scores")
def check_chair_scores(chair_scores):
    """``chair_scores(descriptions, present_objects, vocab) -> (chair_i, chair_s)`` like ``chair.chair``."""
    hint = ("find the words of each description (lowercase, whole words); a word mentions the object whose list "
            "in vocab contains it (synonyms count: 'puppy' is a dog); count each object ONCE per description; "
            "chair_i = hallucinated objects / mentioned objects, summed over all descriptions (0.0 if nothing is "
            "mentioned); chair_s = descriptions mentioning at least one absent object / all descriptions; "
            "return (chair_i, chair_s) in that order")
    seeds = eval_seeds(12, seed=0)
    describer = HallucinatingDescriber.for_seeds(seeds)
    toy = ([describer.answer(scene_image({"seed": s}), DESCRIBE_PROMPT) for s in seeds],
           [sorted({o["shape"] for o in scene_annotation(s)["objects"]}) for s in seeds])
    cases = [(descriptions, present, _CHAIR_VOCAB) for descriptions, present in _CHAIR_CASES]
    cases.append((*toy, SYNONYMS))
    for descriptions, present, vocab in cases:
        expected = chair(descriptions, present, Vocabulary(vocab))
        with your_code(chair_scores):
            got = chair_scores(list(descriptions), [list(p) for p in present], {k: list(v) for k, v in vocab.items()})
        what = (f"chair_scores(descriptions={descriptions}, present_objects={present})" if vocab is _CHAIR_VOCAB
                else "chair_scores on the hallucinating describer's descriptions of 12 toy scenes")
        expect_type(got, (tuple, list), what=what, hint=hint, expected="a pair (chair_i, chair_s)",
                    where=lambda pair: len(pair) == 2)
        for value, key in zip(got, ("chair_i", "chair_s")):
            assert_number(value, expected[key], what=f"{what}: {key}", hint=hint)


# Judge replies: good first lines, garbage, out-of-range scores, scores below a first line of prose.
_JUDGE_REPLIES = (
    "8 7", "8 7\nAssistant 1 is more detailed, Assistant 2 misses the colour.", "8, 7", "9.5 6\nclose call",
    "  10 1  \n\nAssistant 2 did not answer.", "\n\n7 8\nboth fine", "7,8", "1 10",
    "", "   \n  ", "Assistant 1 is better.", "8", "8 7 6", "eight seven", "Scores: 8 7", "8/10 7/10",
    "Assistant 1: 8\nAssistant 2: 7", "The scores are\n8 7", "I cannot judge this.\nAssistant 1 gets 9 and Assistant 2 gets 4.",
    "11 3", "0 5", "-1 -1", "10.5 9", "nan 7", "inf 5", "7 -2",
)


@check("parse_judgement")
def check_parse_judgement(parse_judgement):
    """``parse_judgement(text) -> (float, float) | None`` like ``llava_bench.parse_scores``."""
    hint = ("read ONLY the first line of the stripped text (never numbers further down); replace commas by spaces "
            "and split it; it must hold exactly two numbers, each between 1 and 10 inclusive; return them as a "
            "tuple of floats; anything else (no text, words, one or three numbers, out of range, nan) is a failed "
            "judgement: return None, never a placeholder such as (-1, -1)")
    for text in _JUDGE_REPLIES:
        expected = llava_bench.parse_scores(text)
        with your_code(parse_judgement):
            got = parse_judgement(text)
        if isinstance(got, list):
            got = tuple(got)
        what = f"parse_judgement({text!r})"
        if expected is None:
            if got is not None:
                raise GradingError(f"{what}: a failed judgement must be None", expected=None, got=repr(got), hint=hint)
            continue
        expect_type(got, tuple, what=what, hint=hint, expected=f"the pair of scores {expected}",
                    where=lambda pair: len(pair) == 2)
        for value, want, which in zip(got, expected, ("first", "second")):
            assert_number(value, want, what=f"{what}: {which} score", hint=hint)
