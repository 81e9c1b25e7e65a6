"""Tests of the pure evaluation metrics: hand-computed cases, edge cases, properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillava.eval import chair, choice, llava_bench, pope, vqa

PROPERTY = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------- POPE: parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "yes"),
        ("Yes, there is a dog in the image.", "yes"),
        ("No", "no"),
        ("no", "no"),
        ("No, there is not.", "no"),
        ("There is no cat in the image.", "no"),
        ("The image does not show a cat", "no"),
        ("Yes. No other animals are visible.", "yes"),  # only the first sentence counts
        ("No\nthere is none", "no"),  # any whitespace separates words
        ("Not sure", "yes"),  # "Not" is not in the list
        ("NO", "yes"),
        ("No!", "yes"),  # the word must match exactly
        ("Nope", "yes"),
        ("I cannot tell", "yes"),
        ("", "yes"),  # no negative word: the default wins
    ],
)
def test_parse_yes_no_follows_the_llava_word_rule(text, expected):
    assert pope.parse_yes_no(text) == expected


# ---------------------------------------------------------------- POPE: metrics


def test_metrics_hand_computed():
    predictions = ["yes", "yes", "yes", "no", "no", "yes"]
    labels = ["yes", "yes", "no", "yes", "no", "no"]
    # tp=2 fp=2 fn=1 tn=1
    scores = pope.metrics(predictions, labels)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"]) == (2, 2, 1, 1)
    assert scores["accuracy"] == pytest.approx(3 / 6)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["yes_ratio"] == pytest.approx(4 / 6)
    assert scores["n"] == 6


def test_metrics_all_yes_predictions():
    scores = pope.metrics(["yes"] * 4, ["yes", "no", "no", "no"])
    assert scores["recall"] == 1.0
    assert scores["precision"] == pytest.approx(0.25)
    assert scores["accuracy"] == pytest.approx(0.25)
    assert scores["yes_ratio"] == 1.0
    assert scores["f1"] == pytest.approx(0.4)


def test_metrics_all_no_predictions_divide_by_zero_as_zero():
    scores = pope.metrics(["no"] * 4, ["yes", "yes", "no", "no"])
    assert scores["precision"] == 0.0
    assert scores["recall"] == 0.0
    assert scores["f1"] == 0.0
    assert scores["accuracy"] == 0.5
    assert scores["yes_ratio"] == 0.0


def test_metrics_no_yes_labels_gives_zero_recall():
    scores = pope.metrics(["no", "no"], ["no", "no"])
    assert scores["accuracy"] == 1.0
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)


def test_metrics_refuses_different_lengths_with_both_counts():
    with pytest.raises(ValueError, match=r"3 predictions but 2 labels"):
        pope.metrics(["yes", "no", "yes"], ["yes", "no"])


def test_metrics_refuses_raw_text_and_empty_input():
    with pytest.raises(ValueError, match="parse_yes_no"):
        pope.metrics(["Yes, there is."], ["yes"])
    with pytest.raises(ValueError, match="labels must be"):
        pope.metrics(["yes"], [True])
    with pytest.raises(ValueError, match="no predictions"):
        pope.metrics([], [])


yes_no_pairs = st.lists(
    st.tuples(st.sampled_from(["yes", "no"]), st.sampled_from(["yes", "no"])), min_size=1
)


@PROPERTY
@given(yes_no_pairs)
def test_metrics_are_ratios_and_yes_ratio_is_share_of_yes(pairs):
    predictions, labels = map(list, zip(*pairs))
    scores = pope.metrics(predictions, labels)
    for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["yes_ratio"] == predictions.count("yes") / len(predictions)
    assert scores["tp"] + scores["fp"] + scores["tn"] + scores["fn"] == len(pairs)
    assert min(scores["precision"], scores["recall"]) <= scores["f1"]
    assert scores["f1"] <= max(scores["precision"], scores["recall"])


# ---------------------------------------------------------------- POPE: questions

# Frequencies: person 3, fork 2, knife 2, dog 1, cat 1, cup 1, car 1.
IMAGES = [
    ("a", {"dog", "cat", "person"}),
    ("b", {"fork", "knife", "person"}),
    ("c", {"fork", "knife", "cup"}),
    ("d", {"car", "person"}),
]


def by_image(questions, label):
    table = {}
    for question in questions:
        if question["label"] == label:
            table.setdefault(question["image_id"], []).append(question["object"])
    return table


def test_question_records_have_the_pope_format():
    questions = pope.build_questions(IMAGES, split="random")
    first = questions[0]
    assert set(first) == {"question_id", "image_id", "question", "object", "label", "split"}
    assert first["question"] == f"Is there a {first['object']} in the image?"
    assert first["split"] == "random"
    assert len({q["question_id"] for q in questions}) == len(questions)


def test_popular_negatives_are_the_most_frequent_absent_objects():
    negatives = by_image(pope.build_questions(IMAGES, split="popular"), "no")
    # a lacks fork, knife (2 each) then car, cup (1 each; ties by name)
    assert negatives["a"] == ["fork", "knife", "car"]
    # c lacks person (3), then cat, car, dog (1 each; ties by name)
    assert negatives["c"] == ["person", "car", "cat"]


def test_adversarial_negatives_co_occur_most_with_present_objects():
    negatives = by_image(pope.build_questions(IMAGES, split="adversarial"), "no")
    # b = fork, knife, person. cup co-occurs twice (with fork and knife in c);
    # car, cat, dog once each (with person in d and a).
    assert negatives["b"] == ["cup", "car", "cat"]
    # c = fork, knife, cup. person co-occurs twice (with fork and knife in b).
    assert negatives["c"][0] == "person"


@pytest.mark.parametrize("split", pope.SPLITS)
def test_no_negative_is_ever_present_and_positives_are(split):
    for seed in range(5):
        for question in pope.build_questions(IMAGES, split=split, seed=seed):
            present = dict(IMAGES)[question["image_id"]]
            assert (question["object"] in present) == (question["label"] == "yes")


@pytest.mark.parametrize("split", pope.SPLITS)
def test_questions_are_deterministic_per_seed(split):
    first = pope.build_questions(IMAGES, split=split, seed=7)
    assert pope.build_questions(IMAGES, split=split, seed=7) == first
    # Set iteration order must not matter: pass the same objects as reversed lists.
    shuffled = [(image_id, sorted(objects, reverse=True)) for image_id, objects in IMAGES]
    assert pope.build_questions(shuffled, split=split, seed=7) == first


def test_seed_changes_random_negatives_but_positives_are_shared_by_splits():
    many = [(f"img{i}", {"obj0", "obj1", "obj2", "obj3"}) for i in range(3)]
    many += [("other", {f"obj{i}" for i in range(4, 20)})]
    assert pope.build_questions(many, split="random", seed=0) != pope.build_questions(
        many, split="random", seed=1
    )
    positives = [
        by_image(pope.build_questions(many, split=split, num_pos=2), "yes") for split in pope.SPLITS
    ]
    assert positives[0] == positives[1] == positives[2]


def test_images_with_few_objects_stay_balanced():
    questions = pope.build_questions(IMAGES, split="random")
    assert len(by_image(questions, "yes")["d"]) == 2
    assert len(by_image(questions, "no")["d"]) == 2
    labels = [q["label"] for q in questions]
    assert labels.count("yes") == labels.count("no") == 11


def test_images_without_objects_get_no_questions():
    questions = pope.build_questions(IMAGES + [("empty", set())], split="popular")
    assert "empty" not in {q["image_id"] for q in questions}


def test_build_questions_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown split 'hard'"):
        pope.build_questions(IMAGES, split="hard")
    with pytest.raises(ValueError, match="num_pos >= 1"):
        pope.build_questions(IMAGES, split="random", num_pos=0)
    with pytest.raises(ValueError, match="'a' is repeated"):
        pope.build_questions(IMAGES + [("a", {"cup"})], split="random")


# ---------------------------------------------------------------- POPE: evaluate


def perfect_answers(questions):
    """Answers matching every label, phrased the way a model would ("Yes.")."""
    return [
        {"question_id": q["question_id"], "text": q["label"].capitalize() + "."} for q in questions
    ]


def test_evaluate_reports_each_split_and_the_mean_f1():
    random_split = pope.build_questions(IMAGES, split="random")
    popular_split = pope.build_questions(IMAGES, split="popular")
    # Perfect on random; always "Yes" on popular: precision 11/22, recall 1.
    answers = perfect_answers(random_split) + [
        {"question_id": q["question_id"], "text": "Yes"} for q in popular_split
    ]
    result = pope.evaluate(random_split + popular_split, list(reversed(answers)))
    assert set(result["splits"]) == {"random", "popular"}
    assert result["splits"]["random"]["f1"] == 1.0
    assert result["splits"]["popular"]["yes_ratio"] == 1.0
    popular_f1 = 2 * 0.5 * 1.0 / 1.5
    assert result["splits"]["popular"]["f1"] == pytest.approx(popular_f1)
    assert result["mean_f1"] == pytest.approx((1.0 + popular_f1) / 2)


def test_evaluate_refuses_misaligned_answer_files():
    questions = pope.build_questions(IMAGES, split="adversarial")
    answers = perfect_answers(questions)
    n = len(questions)
    with pytest.raises(ValueError, match=f"{n - 1} answers for {n} questions"):
        pope.evaluate(questions, answers[:-1])
    wrong_id = answers[:-1] + [{"question_id": "random/zzz/cat", "text": "no"}]
    with pytest.raises(ValueError, match=r"1 of \d+ questions have no answer"):
        pope.evaluate(questions, wrong_id)
    with pytest.raises(ValueError, match="repeat a question_id"):
        pope.evaluate(questions, answers[:-1] + answers[:1])
    with pytest.raises(ValueError, match="no questions"):
        pope.evaluate([], [])


# ---------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two", "2"),
        ("the Dog.", "dog"),
        ("a red T-shirt!", "red t shirt"),
        ("dont", "don't"),
        ("Don\u2019t", "don\u2019t"),  # as the official evaluation: a curly apostrophe stays
        ("1,000", "1000"),
        ("3.5 meters.", "3.5 meters"),
        ("  yes \n", "yes"),
        ("an apple, an orange", "apple orange"),
    ],
)
def test_normalize_answer(text, expected):
    assert vqa.normalize_answer(text) == expected


@PROPERTY
@given(st.text())
def test_normalize_answer_is_idempotent(text):
    once = vqa.normalize_answer(text)
    assert vqa.normalize_answer(once) == once


@pytest.mark.parametrize(
    "matches, expected",
    # matches m of 10: leaving out a match scores min((m-1)/3, 1), another min(m/3, 1)
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_ten_answers(matches, expected):
    answers = ["two"] * matches + ["three"] * (10 - matches)
    assert vqa.vqa_accuracy("2", answers) == pytest.approx(expected)


def test_vqa_accuracy_fewer_answers():
    assert vqa.vqa_accuracy("Dog.", ["dog"]) == 1.0
    assert vqa.vqa_accuracy("cat", ["dog"]) == 0.0
    assert vqa.vqa_accuracy("dog", ["dog", "dog"]) == 1.0  # threshold min(3, 1) = 1
    # 3 answers, threshold 2: leaving out the match leaves 0, the others leave 1
    assert vqa.vqa_accuracy("dog", ["dog", "cat", "cow"]) == pytest.approx((0 + 0.5 + 0.5) / 3)


def test_vqa_accuracy_refuses_missing_references():
    with pytest.raises(ValueError, match="no reference answers"):
        vqa.vqa_accuracy("dog", [])
    with pytest.raises(ValueError, match="wrap it in a list"):
        vqa.vqa_accuracy("dog", "dog")


@PROPERTY
@given(
    st.integers(min_value=4, max_value=10),
    st.lists(st.sampled_from(["cat", "cow", "two dogs"]), min_size=10, max_size=10),
)
def test_vqa_accuracy_is_full_when_at_least_four_of_ten_agree(matches, others):
    answers = ["A dog."] * matches + others[: 10 - matches]
    assert vqa.vqa_accuracy("dog", answers) == 1.0


@PROPERTY
@given(
    st.text(max_size=8),
    st.lists(st.sampled_from(["yes", "no", "2", "two", "Dog"]), min_size=1, max_size=12),
)
def test_vqa_accuracy_is_in_unit_interval(prediction, answers):
    assert 0.0 <= vqa.vqa_accuracy(prediction, answers) <= 1.0


# ---------------------------------------------------------------- CHAIR

VOCAB = chair.Vocabulary(
    {
        "person": ["man", "woman", "people"],
        "dog": ["puppy"],
        "hot dog": [],
        "traffic light": ["stoplight"],
        "cat": [],
        "bus": [],
        "berry": [],
        "triangle": [],
    }
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A man walks a puppy.", ["person", "dog"]),
        ("Two women and three dogs.", ["dog"]),  # irregular plural not listed: no match
        ("People wait at the traffic lights.", ["person", "traffic light"]),
        ("Two buses and some berries.", ["bus", "berry"]),
        ("He eats a hot dog.", ["hot dog"]),  # longest phrase wins, no extra "dog"
        ("A category of concatenated cats.", ["cat"]),  # whole words only
        ("A dog, another dog and a Dog.", ["dog"]),  # once per description
        ("There is no triangle.", []),
        ("There is no red triangle, but a cat.", ["cat"]),
        ("A cat and no dog or bus.", ["cat"]),
        ("It isn't a dog; it is a cat", ["cat"]),
        ("No dog here. A dog there.", ["dog"]),  # negation ends at the punctuation
        ("", []),
    ],
)
def test_extract_mentions(text, expected):
    assert chair.extract_mentions(text, VOCAB) == expected


def test_vocabulary_canonical_names_and_errors():
    assert VOCAB.canonical("Stoplight") == "traffic light"
    assert VOCAB.canonical("people") == "person"
    with pytest.raises(ValueError, match="'giraffe' is not in the vocabulary"):
        VOCAB.canonical("giraffe")
    with pytest.raises(ValueError, match="listed for both 'dog' and 'cat'"):
        chair.Vocabulary({"dog": ["pet"], "cat": ["pet"]})
    with pytest.raises(ValueError, match="punctuation"):
        chair.Vocabulary({"dog": ["dog."]})
    # An explicit form beats a generated plural: "glasses" stays its own object.
    vocab = chair.Vocabulary({"glass": [], "glasses": ["spectacles"]})
    assert chair.extract_mentions("glasses", vocab) == ["glasses"]


def test_chair_hand_computed():
    descriptions = [
        "A man walks a dog and a cat.",  # cat hallucinated
        "A bus at a traffic light.",  # all present
        "",  # no mention
        "Two puppies, no cat.",  # dog hallucinated, cat negated
    ]
    present = [{"person", "dog"}, {"bus", "stoplight"}, {"cat"}, {"cat"}]
    scores = chair.chair(descriptions, present, VOCAB)
    assert scores == {
        "chair_i": 2 / 6,
        "chair_s": 2 / 4,
        "n_mentions": 6,
        "n_hallucinated": 2,
        "n_captions": 4,
    }


def test_chair_of_silent_model_is_zero_with_zero_mentions():
    scores = chair.chair(["", ""], [{"dog"}, set()], VOCAB)
    assert (scores["chair_i"], scores["chair_s"], scores["n_mentions"]) == (0.0, 0.0, 0)


def test_chair_refuses_bad_input():
    with pytest.raises(ValueError, match="2 descriptions but 1 ground-truth"):
        chair.chair(["a dog", "a cat"], [{"dog"}], VOCAB)
    with pytest.raises(ValueError, match="'giraffe' is not in the vocabulary"):
        chair.chair(["a dog"], [{"giraffe"}], VOCAB)
    with pytest.raises(ValueError, match="no descriptions"):
        chair.chair([], [], VOCAB)


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.lists(
                st.sampled_from(["a dog", "no cat", "a bus", "the sky", ",", "people"]), max_size=6
            ),
            st.sets(st.sampled_from(["dog", "cat", "bus", "person"])),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_chair_rates_are_consistent(captions):
    descriptions = [" ".join(words) for words, _ in captions]
    scores = chair.chair(descriptions, [objects for _, objects in captions], VOCAB)
    assert 0.0 <= scores["chair_i"] <= 1.0 and 0.0 <= scores["chair_s"] <= 1.0
    assert scores["n_hallucinated"] <= scores["n_mentions"]
    # Every hallucinating caption contributes at least one hallucinated mention.
    assert scores["chair_s"] * scores["n_captions"] <= scores["n_hallucinated"] + 1e-9
    # Describing exactly the ground truth never hallucinates.
    truth = [objects for _, objects in captions]
    honest = chair.chair([" and ".join(sorted(o)) for o in truth], truth, VOCAB)
    assert honest["n_hallucinated"] == 0 and honest["n_mentions"] == sum(map(len, truth))


# ---------------------------------------------------------------- multiple choice


def letter_of(rotation, option):
    """The letter behind which ``rotation`` shows option number ``option``."""
    return next(letter for letter, index in rotation.letter_to_option.items() if index == option)


def test_circular_prompts_rotate_the_options():
    rotations = choice.circular_prompts("What animal?", ["cat", "dog", "cow"])
    assert len(rotations) == 3
    assert rotations[0].prompt.splitlines()[:4] == ["What animal?", "A. cat", "B. dog", "C. cow"]
    assert rotations[1].prompt.splitlines()[1:4] == ["A. dog", "B. cow", "C. cat"]
    assert rotations[1].letter_to_option == {"A": 1, "B": 2, "C": 0}
    # Each option sits behind every letter exactly once.
    for option in range(3):
        assert {letter_of(rotation, option) for rotation in rotations} == {"A", "B", "C"}


def test_circular_prompts_refuse_bad_options():
    with pytest.raises(ValueError, match="between 2 and 26 options, got 1"):
        choice.circular_prompts("Q?", ["only"])
    with pytest.raises(ValueError, match="options repeat"):
        choice.circular_prompts("Q?", ["cat", "cat"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("b", "B"),
        ("(C)", "C"),
        ("A.", "A"),
        ("B. a dog", "B"),
        ("(B) a dog", "B"),
        ("The answer is (C).", "C"),
        ("Answer: A", "A"),
        ("I pick option B because...", "B"),
        ("A cat is sitting on the mat.", None),  # "A" is an article here
        ("E", None),  # beyond the four options
        ("dog", None),  # option text without its letter
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert choice.parse_choice(text, 4) == expected


def test_circular_eval_needs_every_rotation_right():
    # Options [cat, dog, cow], answer dog (index 1): correct letters per rotation B, A, C.
    records = [
        {"answer": 1, "predictions": ["B", "A", "C"]},  # all right
        {"answer": 1, "predictions": ["B", "B", "B"]},  # right only when dog is B
        {"answer": 0, "predictions": ["A", "C", None]},  # cat: A, C, B -- last unparsed
        {"answer": 2, "predictions": ["A", "B", "C"]},  # cow: C, B, A -- only middle
    ]
    result = choice.circular_eval(records)
    assert result == {"circular_accuracy": 0.25, "plain_accuracy": 0.75, "n_questions": 4}


def test_circular_eval_matches_circular_prompts():
    options = ["cat", "dog", "cow", "hen"]
    rotations = choice.circular_prompts("Q?", options)
    predictions = [letter_of(rotation, 3) for rotation in rotations]
    result = choice.circular_eval([{"answer": 3, "predictions": predictions}])
    assert result["circular_accuracy"] == 1.0


def test_circular_eval_refuses_bad_records():
    with pytest.raises(ValueError, match="answer index 3 is outside the 3 options"):
        choice.circular_eval([{"answer": 3, "predictions": ["A", "B", "C"]}])
    with pytest.raises(ValueError, match="no records"):
        choice.circular_eval([])


def question_record(n_options):
    """Strategy for one record: a correct option index and one guess per rotation."""
    guesses = st.lists(st.sampled_from([*"ABCDEF", None]), min_size=n_options, max_size=n_options)
    return st.fixed_dictionaries({"answer": st.integers(0, n_options - 1), "predictions": guesses})


@PROPERTY
@given(st.lists(st.integers(min_value=2, max_value=6).flatmap(question_record), min_size=1))
def test_circular_accuracy_never_exceeds_plain(records):
    result = choice.circular_eval(records)
    assert 0.0 <= result["circular_accuracy"] <= result["plain_accuracy"] <= 1.0


# ---------------------------------------------------------------- LLaVA-Bench judge


def test_judge_prompt_layout():
    messages = llava_bench.judge_prompt("a dog on grass", "What is it?", "A dog.", "A cat.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == (
        "You are a helpful and precise assistant for checking the quality of the answer."
    )
    user = messages[1]["content"]
    blocks = [
        "[Context]\na dog on grass",
        "[Question]\nWhat is it?",
        "[Assistant 1]\nA dog.",
        "[Assistant 2]\nA cat.",
    ]
    positions = [user.index(block) for block in blocks]
    assert positions == sorted(positions)
    assert "1 to 10" in user and "first line" in user


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8 7\nAssistant 1 is more accurate.", (8.0, 7.0)),
        ("8, 7", (8.0, 7.0)),
        ("  9.5 10 \n", (9.5, 10.0)),
        ("1 1", (1.0, 1.0)),
        ("Assistant 1 gets 8 and Assistant 2 gets 7.", None),
        ("8\n7", None),
        ("8 7 6", None),
        ("0 7", None),
        ("8 11", None),
        ("-1 -1", None),
        ("nan 5", None),
        ("", None),
    ],
)
def test_parse_scores(text, expected):
    assert llava_bench.parse_scores(text) == expected


def test_combine_orders_cancels_position_bias():
    # The judge adds +1 to whoever is Assistant 1: true scores ref 8, model 6.
    reference_first = (9.0, 6.0)  # (reference, model)
    model_first = (7.0, 8.0)  # (model, reference)
    assert llava_bench.combine_orders(reference_first, model_first) == (8.5, 6.5)
    assert llava_bench.combine_orders(None, model_first) is None
    assert llava_bench.combine_orders(reference_first, None) is None


def test_relative_scores_per_category_with_failures_apart():
    records = [
        {"category": "conversation", "scores": (8.0, 6.0)},
        {"category": "conversation", "scores": (8.0, 8.0)},
        {"category": "conversation", "scores": None},
        {"category": "detail", "scores": (5.0, 5.0)},
        {"category": "complex", "scores": None},
    ]
    result = llava_bench.relative_scores(records)
    assert list(result) == ["conversation", "detail", "complex", "overall"]
    assert result["conversation"] == {
        "relative": pytest.approx(7 / 8 * 100),
        "reference": 8.0,
        "model": 7.0,
        "n_scored": 2,
        "n_failed": 1,
    }
    assert result["detail"]["relative"] == 100.0
    assert result["complex"] == {
        "relative": None,
        "reference": None,
        "model": None,
        "n_scored": 0,
        "n_failed": 1,
    }
    assert result["overall"]["relative"] == pytest.approx(19 / 21 * 100)
    assert (result["overall"]["n_scored"], result["overall"]["n_failed"]) == (3, 2)


def test_relative_scores_refuses_fake_scores():
    with pytest.raises(ValueError, match=r"must be None, not a placeholder"):
        llava_bench.relative_scores([{"category": "detail", "scores": [-1, -1]}])
    with pytest.raises(ValueError, match="'overall' is reserved"):
        llava_bench.relative_scores([{"category": "overall", "scores": (5, 5)}])
    with pytest.raises(ValueError, match="no records"):
        llava_bench.relative_scores([])


score = st.floats(min_value=1.0, max_value=10.0)


@PROPERTY
@given(score, score, score, score)
def test_combined_scores_stay_in_range_and_are_order_symmetric(ref_a, model_a, model_b, ref_b):
    ref, model = llava_bench.combine_orders((ref_a, model_a), (model_b, ref_b))
    assert 1.0 <= ref <= 10.0 and 1.0 <= model <= 10.0
    # Swapping which judgement is which gives the same average.
    assert llava_bench.combine_orders((ref_b, model_b), (model_a, ref_a)) == (ref, model)


@PROPERTY
@given(st.lists(st.one_of(st.none(), st.tuples(score, score)), min_size=1, max_size=20))
def test_failed_judgements_never_change_the_scores(all_scores):
    records = [{"category": "detail", "scores": s} for s in all_scores]
    scored_only = [r for r in records if r["scores"] is not None]
    result = llava_bench.relative_scores(records)["overall"]
    assert result["n_failed"] == len(records) - len(scored_only)
    if scored_only:
        assert result["relative"] == llava_bench.relative_scores(scored_only)["overall"]["relative"]
        assert 10.0 <= result["relative"] <= 1000.0
    else:
        assert result["relative"] is None and result["n_scored"] == 0
