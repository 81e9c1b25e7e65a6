"""POPE: probing object hallucination with yes/no questions.

POPE asks "Is there a {object} in the image?" about objects that are in the
image (answer "yes") and objects that are not ("no"), then scores the answers
as a binary classifier with "yes" as the positive class. Three splits differ
only in how the absent objects -- the negatives -- are chosen:

* ``random``: any absent object.
* ``popular``: the objects that are most frequent over the data set. A model
  that has learned "there is usually a person" says yes to these.
* ``adversarial``: the objects that co-occur most with the ones present. A
  model that guesses from context ("a fork, so probably a knife") says yes.

The harder the split, the more a hallucinating model's precision drops, so the
paper number is the mean F1 over the three splits.

Traps this module guards against:

* Misaligned answer files. Scoring answer i against question i silently
  measures nothing if one file was filtered or reordered; ``evaluate`` matches
  answers to questions by id and refuses missing, extra or duplicate ids.
* Yes-bias hides behind accuracy. A model that always says yes scores recall
  1.0 and accuracy 0.5 on balanced questions; look at ``yes_ratio`` (about 0.5
  for an unbiased model) next to F1.
* The answer parser is a crude word rule (see ``parse_yes_no``): it is what
  the published numbers used, so its quirks are kept, with one difference:
  LLaVA splits words on single spaces (``split(' ')``), this on any whitespace,
  so "No\nthere is none" reads as no here and as yes in LLaVA's script.
"""

import random
from collections import Counter

SPLITS = ("random", "popular", "adversarial")
NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def parse_yes_no(text):
    """Turn a free-form answer into "yes" or "no" with LLaVA's POPE rule.

    The rule: keep the text before the first "."; delete commas; split into
    words; if any word is exactly "No", "no" or "not" the answer is "no",
    otherwise "yes". Consequences worth knowing (all reproduced on purpose):

    * "No, there is not." -> no; "There is no cat." -> no.
    * "Yes. No other animals are visible." -> yes (only the first sentence counts).
    * "Not sure" -> yes: capitalised "Not" is not in the list.
    * "NO", "No!", "Nope", "cannot" -> yes: the word must match exactly.
    * "" (empty) -> yes: no negative word, so the default wins. A model that
      outputs nothing therefore looks like an always-yes model.

    Words are split on any whitespace, so "No\\nthere is none" -> no.
    """
    first_sentence = text.split(".", 1)[0]
    words = first_sentence.replace(",", "").split()
    return "no" if NEGATIVE_WORDS.intersection(words) else "yes"


def metrics(predictions, labels):
    """Binary-classification scores of yes/no predictions, "yes" positive.

    Both arguments are lists of the strings "yes" and "no" of equal length
    (parse raw model output with ``parse_yes_no`` first). Returns a dict with
    accuracy, precision, recall, f1, yes_ratio (share of predictions that are
    "yes"), n and the confusion counts tp, fp, tn, fn.

    Where a ratio would divide by zero it is 0.0: precision when nothing was
    predicted yes, recall when no label is yes, F1 when no yes was right. So
    an all-"no" model gets precision = recall = f1 = 0.0, and an all-"yes"
    model gets recall 1.0 with precision equal to the share of yes labels.
    """
    if len(predictions) != len(labels):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(labels)} labels; "
            "pass one prediction per question, in the same order"
        )
    if not labels:
        raise ValueError("no predictions to score; pass at least one question")
    for name, values in (("predictions", predictions), ("labels", labels)):
        bad = [value for value in values if value not in ("yes", "no")]
        if bad:
            raise ValueError(
                f"{name} must be 'yes' or 'no', got {bad[0]!r}; "
                "convert raw answers with parse_yes_no"
            )
    pairs = Counter(zip(predictions, labels))
    tp, fp = pairs["yes", "yes"], pairs["yes", "no"]
    tn, fn = pairs["no", "no"], pairs["no", "yes"]
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    # The harmonic mean of precision and recall, 2PR / (P + R), written with
    # counts: exact integer arithmetic, and 0.0 exactly when tp is 0.
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n,
        "n": n,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def build_questions(images, *, split, num_pos=3, num_neg=3, seed=0):
    """Build one POPE split from a data set's object annotations.

    ``images`` is a list of ``(image_id, set_of_present_object_names)``. It is
    also the data set that object frequency and co-occurrence are counted
    over, so pass every annotated image and, to ask about fewer images, keep
    a subset of the questions afterwards. Returns a list of question records
    (per image, the "yes" questions then the "no" ones), each a dict with
    question_id, image_id, question, object, label ("yes"/"no") and split.

    For every image, ``num_pos`` present objects are drawn at random and
    ``num_neg`` absent ones are chosen by the split's rule; ties in the
    popular and adversarial rankings are broken by name. An image with fewer
    present objects than ``num_pos`` contributes all of them and
    proportionally fewer negatives (rounded down), keeping the yes:no ratio at
    num_pos:num_neg -- balanced by default -- so such images cannot tilt
    ``yes_ratio``. An image with no annotated objects gets no questions. Only
    if an image lacks enough absent objects (it holds nearly the whole
    vocabulary) does it get fewer negatives than that.

    Deterministic per seed: each image draws from its own generator seeded
    with (seed, image_id), so the yes questions are the same in all three
    splits and adding an image leaves the others' questions unchanged.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if num_pos < 1 or num_neg < 0:
        raise ValueError(
            f"need num_pos >= 1 and num_neg >= 0, got num_pos={num_pos}, num_neg={num_neg}"
        )
    id_counts = Counter(image_id for image_id, _ in images)
    repeated = [image_id for image_id, count in id_counts.items() if count > 1]
    if repeated:
        raise ValueError(
            f"image ids must be unique, {repeated[0]!r} is repeated; "
            "merge the object sets of each image into one entry"
        )
    frequency, cooccurrence = _statistics(images)
    questions = []
    for image_id, present in images:
        # Sets of strings iterate in a per-process hash order: sort before
        # sampling or the "same seed" gives different questions on every run.
        present = sorted(set(present))
        absent = [obj for obj in sorted(frequency) if obj not in present]
        rng = random.Random(f"{seed}/{image_id}")
        positives = rng.sample(present, min(num_pos, len(present)))
        n_neg = min(num_neg * len(positives) // num_pos, len(absent))
        if split == "random":
            negatives = rng.sample(absent, n_neg)
        elif split == "popular":
            negatives = sorted(absent, key=lambda obj: (-frequency[obj], obj))[:n_neg]
        else:
            together = Counter()
            for obj in present:
                together.update(cooccurrence[obj])
            negatives = sorted(absent, key=lambda obj: (-together[obj], obj))[:n_neg]
        for obj, label in [(o, "yes") for o in positives] + [(o, "no") for o in negatives]:
            questions.append(
                {
                    "question_id": f"{split}/{image_id}/{obj}",
                    "image_id": image_id,
                    "question": f"Is there a {obj} in the image?",
                    "object": obj,
                    "label": label,
                    "split": split,
                }
            )
    return questions


def _statistics(images):
    """Count, over the data set, images per object and images per object pair."""
    frequency = Counter()
    cooccurrence = {}
    for _, present in images:
        present = set(present)
        frequency.update(present)
        for obj in present:
            cooccurrence.setdefault(obj, Counter()).update(present - {obj})
    return frequency, cooccurrence


def evaluate(questions, answers):
    """Score model answers on POPE questions, per split and as mean F1.

    ``questions`` are records from ``build_questions`` (splits may be mixed);
    ``answers`` are dicts with "question_id" and "text" (raw model output,
    parsed with ``parse_yes_no``). Answers are matched to questions by id, in
    any order; a missing, extra or repeated id raises ValueError rather than
    scoring a misaligned file. Returns ``{"splits": {split: metrics(...)},
    "mean_f1": mean F1 over the splits present}``.
    """
    if not questions:
        raise ValueError("no questions to score; build them with build_questions")
    if len(answers) != len(questions):
        raise ValueError(
            f"got {len(answers)} answers for {len(questions)} questions; "
            "the answer file does not match the question file"
        )
    by_id = {answer["question_id"]: answer["text"] for answer in answers}
    if len(by_id) != len(answers):
        raise ValueError("answers repeat a question_id; keep one answer per question")
    expected = [question["question_id"] for question in questions]
    if len(set(expected)) != len(expected):
        raise ValueError("questions repeat a question_id; build them with build_questions")
    missing = [qid for qid in expected if qid not in by_id]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(questions)} questions have no answer "
            f"(e.g. {missing[0]!r}); "
            "the answers were made for a different question file"
        )
    per_split = {}
    for question in questions:
        predictions, labels = per_split.setdefault(question["split"], ([], []))
        predictions.append(parse_yes_no(by_id[question["question_id"]]))
        labels.append(question["label"])
    splits = {split: metrics(*pair) for split, pair in per_split.items()}
    mean_f1 = sum(scores["f1"] for scores in splits.values()) / len(splits)
    return {"splits": splits, "mean_f1": mean_f1}
