"""Tests for minillava.data.rules: every rule-written answer is true of its scene.

The oracle here reads the *boxes* of the annotation directly (not Scene.relations, which
the rules use), so a wrong relation, count or colour in the rules shows up as a failure.
"""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillava.data import questions, rules
from minillava.toyworld import COLORS, NUMBER_WORDS, SHAPE_CORNERS, SHAPES, make_scene

SEEDS = st.integers(0, 10**6)
VARIANT = st.sampled_from(["base", "fine"])
COLOUR = "|".join(COLORS)
SHAPE = "|".join(SHAPES)


def plural(shape):
    return shape + ("es" if shape.endswith("s") else "s")


def singular(word):
    return next((s for s in SHAPES + rules.UNSEEN_SHAPES if word in (s, plural(s))), None)


def where(box):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    return f"{row} {col}".strip() or "centre"


def oracle(ann, question):
    """The true short answer to a rule question, computed from boxes and labels alone."""
    objs = ann["objects"]
    by_name = {o["name"]: o for o in objs}
    q = question.split("\n")[0]

    def n_of(**kw):
        return sum(all(o[k] == v for k, v in kw.items()) for o in objs)

    if m := re.match(r"(?:Is there|Can you see|Does the image contain|Does the picture show) an? (\w+) (\w+)", q):
        return "yes" if f"{m[1]} {m[2]}" in by_name else "no"
    if m := re.match(r"Are there any (\w+)\?", q):
        return "yes" if n_of(shape=singular(m[1])) else "no"
    if m := re.match(rf"How many ({COLOUR}) (objects|shapes)", q):
        return str(n_of(color=m[1]))
    if re.match(r"How many (shapes|objects) (are|can)", q):
        return str(len(objs))
    if m := re.match(r"(?:How many|Count the) (\w+)", q):
        return str(n_of(shape=singular(m[1])))
    if re.match(r"What colou?r is the background", q):
        return ann["background"]
    if m := re.match(r"What colou?r is the dot on the (\w+ \w+)", q):
        return by_name[m[1]]["mark"]
    if m := re.match(rf"(?:What colou?r is the|What is the colou?r of the) ({SHAPE})\?", q):
        (o,) = [o for o in objs if o["shape"] == m[1]]
        return o["color"]
    if m := re.match(r"What colou?rs are the (\w+)\?", q):
        return {o["color"] for o in objs if o["shape"] == singular(m[1])}
    if m := re.match(rf"(?:What shape is the ({COLOUR}) object|Which shape is ({COLOUR}))\?", q):
        (o,) = [o for o in objs if o["color"] == (m[1] or m[2])]
        return o["shape"]
    if m := re.match(r"(?:Is the (\w+ \w+) large or small|How big is the (\w+ \w+)|What size is the (\w+ \w+))", q):
        return by_name[m[1] or m[2] or m[3]]["size"]
    if m := re.match(r"(?:Where is the|In which part of the image is the) (\w+ \w+)", q):
        return where(by_name[m[1]]["box"])
    if m := re.match(r"Which object is the (leftmost|rightmost|highest|lowest) one", q):
        key = {"leftmost": lambda o: o["box"][0], "rightmost": lambda o: -o["box"][2],
               "highest": lambda o: o["box"][1], "lowest": lambda o: -o["box"][3]}[m[1]]
        return min(objs, key=key)["name"]
    if m := re.match(r"Is the (\w+ \w+) (to the left of|above)(?: or (?:to the right of|below))? the (\w+ \w+)\?", q):
        a, b = by_name[m[1]]["box"], by_name[m[3]]["box"]
        forward = a[2] <= b[0] if m[2] == "to the left of" else a[3] <= b[1]
        backward = b[2] <= a[0] if m[2] == "to the left of" else b[3] <= a[1]
        assert forward != backward, "asked about objects that overlap along this axis"
        if " or " in q:
            return {"to the left of": "left", "above": "above"}[m[2]] if forward else \
                {"to the left of": "right", "above": "below"}[m[2]]
        return "yes" if forward else "no"
    if m := re.match(r"Which is larger, the (\w+ \w+) or the (\w+ \w+)\?", q):
        a, b = by_name[m[1]], by_name[m[2]]
        assert a["size"] != b["size"]
        return a["name"] if a["size"] == "large" else b["name"]
    raise AssertionError(f"no oracle for question {question!r}: add one")


def number_in(answer):
    """The count an answer states: the first number word or digit ('There are two ...' -> 2)."""
    words = {w: i for i, w in enumerate(NUMBER_WORDS)}
    for token in re.findall(r"\w+", answer.lower()):
        if token in words:
            return words[token]
        if token.isdigit():
            return int(token)
    return None


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, variant=VARIANT, rng_seed=st.integers(0, 100))
def test_short_answers_are_true(seed, variant, rng_seed):
    ann = make_scene(seed, variant).annotation()
    pairs = rules.short_answer_qa(ann, random.Random(rng_seed), n=12)
    assert pairs and len({q for q, _ in pairs}) == len(pairs)
    for q, a in pairs:
        assert q.endswith("\n" + rules.FORMAT_PROMPT)
        truth = oracle(ann, q)
        if isinstance(truth, set):
            assert set(re.split(r", | and ", a)) == truth, (q, a)
        else:
            assert a == truth, (q, a)


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, variant=VARIANT, rng_seed=st.integers(0, 100))
def test_conversation_answers_state_the_true_fact(seed, variant, rng_seed):
    ann = make_scene(seed, variant).annotation()
    long = rules.conversation_qa(ann, random.Random(rng_seed), n=12)
    short = rules.short_answer_qa(ann, random.Random(rng_seed), n=12)
    assert [q for q, _ in long] == [q.split("\n")[0] for q, _ in short]   # same rng, same facts
    present = {o["name"] for o in ann["objects"]}
    for (q, a), (_, s) in zip(long, short):
        truth = oracle(ann, q)
        if truth in ("yes", "no"):
            assert a.startswith(truth.capitalize() + ","), (q, a)
        elif isinstance(truth, str) and truth.isdigit():
            assert number_in(a) == int(truth), (q, a)
        elif isinstance(truth, set):
            assert all(c in a for c in truth), (q, a)
        else:
            assert truth in a, (q, a)
        # No answer claims an absent category (denials of presence are not claims).
        if re.match(r"No, (there is no|there are no|the image does not contain)", a):
            continue
        for colour, shape in re.findall(rf"\b({COLOUR}) ({SHAPE})", a):
            assert f"{colour} {shape}" in present, (q, a)


def test_conversations_cover_every_topic_and_confident_absence():
    questions = [q for s in range(40) for q, _ in rules.conversation_qa(make_scene(s).annotation(),
                                                                           random.Random(s), n=30)]
    answers = [a for s in range(40) for _, a in rules.conversation_qa(make_scene(s).annotation(),
                                                                        random.Random(s), n=30)]
    for pattern in ("Is there", "How many", "olou?r", "What shape", "large or small|size|big",
                    "Where is", "left of", "above", "larger"):
        assert any(re.search(pattern, q) for q in questions), pattern
    assert any(re.match(rf"No, there is no \w+ ({'|'.join(rules.UNSEEN_SHAPES)})", a) for a in answers)
    assert any(a.startswith("No, there is no") for a in answers)


# The rules' writer of each fact topic, and the topic questions.topic must read back.
WRITERS = {rules._presence: "presence", rules._absence: "presence", rules._counts: "count",
           rules._colours: "colour", rules._shapes: "shape", rules._sizes: "size",
           rules._positions: "position", rules._relations: "relation"}


def test_every_question_reads_back_as_the_topic_that_wrote_it():
    """questions.topic finds the topic from the wording alone: each question the rules write
    matches the wordings of its own topic and of no other, whatever the scene."""
    assert set(WRITERS) == set(rules._TOPICS)
    assert [name for name, _ in questions.TOPICS] == list(dict.fromkeys(WRITERS.values()))
    seen = set()
    for variant in ("base", "fine"):
        for seed in range(200):
            view, rng = rules._View(make_scene(seed, variant).annotation()), random.Random(seed)
            for writer, expected in WRITERS.items():
                for qa in writer(view, rng):
                    matching = [name for name, patterns in questions._PATTERNS
                                if any(p.fullmatch(qa.question) for p in patterns)]
                    assert matching == [expected], (qa.question, matching)
                    assert questions.topic(f"{qa.question}\n{rules.FORMAT_PROMPT}") == expected
                    seen.add(expected)
    assert seen == set(WRITERS.values())
    # Reasoning and text-only questions are no fact topic.
    reasoning = rules.complex_reasoning(make_scene(5).annotation(), random.Random(0))[0]
    assert questions.topic(reasoning) == questions.topic("How many corners does a triangle have?") == questions.OTHER


def test_yes_no_wording_does_not_give_the_answer_away():
    """Every way of asking a yes/no question is answered "yes" and "no" alike, so a model
    cannot answer from the words alone (chapter 9's looking test measures exactly that)."""
    answers_by_wording = {}
    for s in range(300):
        for q, a in rules.short_answer_qa(make_scene(s).annotation(), random.Random(s), n=30):
            if a in ("yes", "no"):
                # The wording: the question without its object ("Is there a red circle?" -> "Is there ?").
                wording = re.sub(rf"\b(an? )?(({COLOUR}|{'|'.join(rules.UNSEEN_SHAPES)}) )?({SHAPE}|"
                                 rf"{'|'.join(rules.UNSEEN_SHAPES)})(es|s)?\b", "", q.split("\n")[0])
                answers_by_wording.setdefault(wording, []).append(a == "yes")
    presence = {w: sum(v) / len(v) for w, v in answers_by_wording.items()
                if w.startswith(("Is there", "Can you", "Does the", "Are there"))}
    assert len(presence) == len(rules.PRESENCE_QUESTIONS) + 1, presence   # + "Are there any ...?"
    for wording, yes_share in presence.items():
        assert 0.3 < yes_share < 0.7, (wording, yes_share)


def test_default_length_and_n():
    ann = make_scene(3).annotation()
    lengths = {len(rules.conversation_qa(ann, random.Random(s))) for s in range(30)}
    assert lengths <= set(range(1, 7)) and len(lengths) > 1
    assert len(rules.conversation_qa(ann, random.Random(0), n=2)) == 2
    with pytest.raises(ValueError, match="n must be a positive integer"):
        rules.conversation_qa(ann, random.Random(0), n=0)
    with pytest.raises(ValueError, match="missing key"):
        rules.conversation_qa({"objects": []}, random.Random(0))


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, variant=VARIANT)
def test_detailed_description_names_every_object_and_nothing_else(seed, variant):
    ann = make_scene(seed, variant).annotation()
    text = rules.detailed_description(ann, random.Random(seed))
    present = {o["name"] for o in ann["objects"]}
    mentioned = {f"{c} {s}" for c, s in re.findall(rf"\b({COLOUR}) ({SHAPE})", text)}
    assert mentioned == present
    assert number_in(text) == len(ann["objects"])                      # "shows three shapes"
    assert len(re.findall(rf"\b[Aa]n? (?:small|large) (?:{COLOUR}) (?:{SHAPE})", text)) == len(ann["objects"])
    assert len(re.split(r"(?<=\.) ", text)) >= 2


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, variant=VARIANT)
def test_complex_reasoning_answers_are_correct(seed, variant):
    ann = make_scene(seed, variant).annotation()
    objs = ann["objects"]
    q, a = rules.complex_reasoning(ann, random.Random(seed))
    if "corner" in q:
        assert a.endswith(f"= {sum(SHAPE_CORNERS[o['shape']] for o in objs)} corners.")
    elif "mix" in q:
        c1, c2 = re.findall(rf"\b({COLOUR}) shape", q)
        assert {c1, c2} <= {o["color"] for o in objs}
        assert a.startswith(f"You would get {rules.PAINT_MIXES[frozenset({c1, c2})]}.")
    elif "roll" in q:
        assert a.startswith("Only") == any(o["shape"] == "circle" for o in objs)
    else:
        first = min(objs, key=lambda o: o["box"][0])
        assert a.startswith(f"You would reach the {first['name']} first.")


def test_complex_reasoning_varies():
    kinds = {rules.complex_reasoning(make_scene(s).annotation(), random.Random(s))[0].split()[1]
             for s in range(40)}
    assert len(kinds) >= 3


def test_knowledge_and_text_only_chat():
    pairs = rules.knowledge_qa(random.Random(0), 200)
    assert len(pairs) == 200 and len(set(pairs)) > 20
    for q, a in pairs:
        if m := re.match(r"How many corners does an? (\w+) have", q):
            assert number_in(a) == SHAPE_CORNERS[m[1]] or (SHAPE_CORNERS[m[1]] == 0 and " no " in a)
        if m := re.match(r"What is (\d+) plus (\d+)\?", q):
            assert a.endswith(f"is {int(m[1]) + int(m[2])}.")
    assert rules.knowledge_qa(random.Random(5), 7) == rules.knowledge_qa(random.Random(5), 7)
    chats = [rules.text_only_chat(random.Random(s)) for s in range(30)]
    assert all(1 <= len(c) <= 5 and all(isinstance(x, str) and x for t in c for x in t) for c in chats)
    assert len({c[0][0] for c in chats}) > 3
    with pytest.raises(ValueError, match="non-negative"):
        rules.knowledge_qa(random.Random(0), -1)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, variant=VARIANT)
def test_scene_text_lists_every_object_left_to_right(seed, variant):
    ann = make_scene(seed, variant).annotation()
    text = rules.scene_text(ann)
    assert text == rules.scene_text(ann) and ann["background"] in text
    names = [f"{c} {s}" for c, s in re.findall(rf"\b({COLOUR}) ({SHAPE})", text)]
    assert names == [o["name"] for o in sorted(ann["objects"], key=lambda o: o["box"][0])]
    for o in ann["objects"]:
        assert where(o["box"]).replace("centre", "the centre") in text


def test_same_rng_same_text_in_another_process():
    """Nothing may depend on set order, which follows per-process string hashing."""
    root = Path(__file__).resolve().parent.parent
    # minillava/__init__ imports torch (seconds); rules needs only toyworld, so skip the package init.
    code = (f"import sys, types; package = types.ModuleType('minillava'); package.__path__ = [{str(root / 'minillava')!r}]\n"
            "sys.modules['minillava'] = package\n"
            "import random; from minillava.data import rules; from minillava.toyworld import make_scene\n"
            "for s in range(15):\n"
            "    a = make_scene(s).annotation(); r = random.Random(s)\n"
            "    print(rules.conversation_qa(a, r), rules.detailed_description(a, r), rules.complex_reasoning(a, r))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(outs) == 1 and outs.pop().count("\n") == 15
