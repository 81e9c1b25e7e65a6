"""Chapter 9, the capstone: how much each topic's accuracy owes to the image."""

import random

from minillava.course.grading.core import GradingError, assert_equal, assert_number, check, expect_type, your_code
from minillava.eval import failures
from minillava.eval.scenes import FORMAT_PROMPT, answer_key, eval_seeds, scene_annotation


def _looking_samples(seed: int, n: int, topics_wanted: tuple[str, ...] | None = None) -> tuple[list, list]:
    """(right, blank): samples of the same toy questions, answered right at random rates per view."""
    rng = random.Random(seed)   # local RNG: leave the notebook's alone
    questions = [q for s in eval_seeds(30, seed=seed) for q, a in answer_key(scene_annotation(s)).items()
                 if a.short is not None and (topics_wanted is None or failures.topic(q) in topics_wanted)]
    picked = rng.sample(questions, min(n, len(questions)))
    right, blank = [], []
    for q in picked:
        prompt = f"{q}\n{FORMAT_PROMPT}"
        right.append({"prompt": prompt, "result": {"accuracy": float(rng.random() < 0.8)}})
        blank.append({"prompt": prompt, "result": {"accuracy": float(rng.random() < 0.4)}})
    return right, blank


@check("gap_by_topic")
def check_gap_by_topic(gap_by_topic):
    """``gap_by_topic(right, blank) -> {topic: {"with image", "blank", "gap", "n"}}`` as ``failures.gap_by_topic``."""
    hint = ("group each list by failures.topic(sample['prompt']); per topic, 'with image' and 'blank' are the mean "
            "of result['accuracy'] over that topic's samples in right and in blank, 'gap' = with image - blank, "
            "'n' the number of questions of the topic (once, not counted in both lists); list the topics that "
            "have samples, in the order of failures.TOPICS; raise ValueError unless both lists hold the same "
            "prompts in the same order")
    cases = [_looking_samples(0, 120), _looking_samples(1, 25), _looking_samples(2, 40, ("count", "position")),
             _looking_samples(3, 1)]
    for right, blank in cases:
        what = f"gap_by_topic on {len(right)} questions"
        with your_code(gap_by_topic):
            got = gap_by_topic([dict(s) for s in right], [dict(s) for s in blank])
        expected = failures.gap_by_topic(right, blank)
        expect_type(got, dict, what=what, hint=hint, expected="a dict of topics")
        assert_equal(list(got), list(expected), what=f"{what}: the topics, in order", hint=hint)
        for name, row in expected.items():
            expect_type(got[name], dict, what=f"{what}: the row of {name!r}", hint=hint,
                        expected=f"a dict with the keys {sorted(row)}", where=lambda got_row: set(got_row) == set(row))
            for key, value in row.items():
                assert_number(got[name][key], value, what=f"{what}: [{name!r}][{key!r}]", hint=hint)
    right, blank = cases[1]
    for broken, why in ((blank[:-1], "one sample fewer in blank"), (blank[::-1], "blank in another order")):
        with your_code(gap_by_topic):
            try:
                gap_by_topic(right, broken)
            except ValueError:
                continue
        raise GradingError(f"gap_by_topic accepted lists that do not match ({why})", hint=hint)
