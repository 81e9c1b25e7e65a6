"""LLaVA-Bench: the judge's prompt, its reply format and the relative score -- the pure parts.

(Who judges -- an LLM through the openai client, or the offline rule judge -- is
``judges``; this module is what every judge is asked, and how its answer is read.)

LLaVA-Bench scores open-ended answers with a text-only judge model. For each
question the judge sees a textual description of the image (captions and
boxes), the question, a reference answer (written by a strong text-only model
from that description) as "Assistant 1" and the evaluated model's answer as
"Assistant 2". It replies with two scores from 1 to 10 on its first line. The
reported number is relative:

    relative score = mean(model scores) / mean(reference scores) x 100

per category (conversation, detail, complex) and overall, so 100 means "as
good as the reference, according to the judge".

Two flaws of the original pipeline, fixed here:

* Position bias: the reference was always Assistant 1, and judges favour one
  position. ``combine_orders`` averages a judgement made in each order, so the
  bias cancels instead of being baked into every number.
* Fake scores: an unparseable reply was recorded as [-1, -1] and averaged in,
  dragging both means down by an amount that depends on how often the judge
  misbehaved. Here a failed judgement is None, counted in ``n_failed`` and
  never averaged; ``relative_scores`` refuses out-of-range placeholders.

Calling the judge (an API or a local model) is left to the caller: everything
here is string formatting and arithmetic, so it can be tested without one.
"""

import math

SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."

RULE = (
    "Above are a description of an image, a question a user asked while looking at "
    "the image, and the answers of two AI assistants. You cannot see the image: the "
    "description stands in for it. Judge each answer's helpfulness, "
    "relevance, accuracy and level of detail. Give each assistant an overall score "
    "from 1 to 10, where a higher score means a better answer.\n"
    "On the first line, write only the two scores, Assistant 1 first, separated by "
    "a space. From the second line on, explain your judgement. Judge the content "
    "only: do not let the order of the answers or their length sway you."
)

MIN_SCORE, MAX_SCORE = 1.0, 10.0


def judge_prompt(context, question, answer_1, answer_2):
    """Chat messages asking the judge to score ``answer_1`` and ``answer_2``.

    Returns ``[{"role": "system", ...}, {"role": "user", ...}]``, the format
    chat-completion APIs and chat templates take.
    """
    user = (
        f"[Context]\n{context}\n\n"
        f"[Question]\n{question}\n\n"
        f"[Assistant 1]\n{answer_1}\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer_2}\n[End of Assistant 2]\n\n"
        f"[System]\n{RULE}\n"
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


def parse_scores(text):
    """The two scores on the judge's first line, or None if there are not two.

    "8 7", "8, 7" and "8.5 7" parse; anything else on the first line -- words,
    one or three numbers, a score outside 1..10, NaN -- is a failed judgement
    and gives None. Never substitute a placeholder score for None.
    """
    lines = text.strip().splitlines()
    if not lines:
        return None
    fields = lines[0].replace(",", " ").split()
    if len(fields) != 2:
        return None
    try:
        scores = tuple(float(field) for field in fields)
    except ValueError:
        return None
    # NaN fails every comparison, so it is rejected here as well.
    if not all(MIN_SCORE <= score <= MAX_SCORE for score in scores):
        return None
    return scores


def combine_orders(score_ref_first, score_model_first):
    """Average a judgement made in each order into one ``(reference, model)`` pair.

    ``score_ref_first`` is ``(reference, model)`` from a prompt with the
    reference as Assistant 1; ``score_model_first`` is ``(model, reference)``
    from a prompt with the model as Assistant 1 -- scores in the order the
    judge gave them. If either judgement failed (None) the pair is None:
    keeping only one order would bring the position bias back.
    """
    if score_ref_first is None or score_model_first is None:
        return None
    ref_a, model_a = score_ref_first
    model_b, ref_b = score_model_first
    return (ref_a + ref_b) / 2, (model_a + model_b) / 2


def relative_scores(records):
    """Relative scores per category and overall, failed judgements kept apart.

    Each record is a dict with "category" (e.g. "conversation", "detail",
    "complex") and "scores", a ``(reference, model)`` pair or None for a
    failed judgement. Returns ``{category: summary, ..., "overall": summary}``
    where a summary holds relative (mean model / mean reference x 100),
    reference and model (the means), n_scored and n_failed. "overall" pools
    every scored record. A group with nothing scored has None for the three
    averages.
    """
    if not records:
        raise ValueError("no records to summarise; pass at least one judgement")
    groups = {}
    for record in records:
        category, scores = record["category"], record["scores"]
        if category == "overall":
            raise ValueError("'overall' is reserved for the pooled summary; rename the category")
        if scores is not None and not (
            len(scores) == 2 and all(MIN_SCORE <= score <= MAX_SCORE for score in scores)
        ):
            raise ValueError(
                f"scores {scores!r} are not two numbers in 1..10; a failed judgement "
                "must be None, not a placeholder such as [-1, -1]"
            )
        groups.setdefault(category, []).append(scores)
    groups["overall"] = [record["scores"] for record in records]
    return {category: _summary(group) for category, group in groups.items()}


def _summary(group):
    """Means and relative score of a list of (reference, model) pairs or None."""
    scored = [scores for scores in group if scores is not None]
    summary = {"n_scored": len(scored), "n_failed": len(group) - len(scored)}
    if not scored:
        return {"relative": None, "reference": None, "model": None, **summary}
    reference = math.fsum(ref for ref, _ in scored) / len(scored)
    model = math.fsum(mod for _, mod in scored) / len(scored)
    return {"relative": model / reference * 100, "reference": reference, "model": model, **summary}
