"""benchmarks/lm_layouts.py (issue 19): its layouts write every fact of the scene, its default is the
shipped layout byte for byte, and its teacher-forced score is what greedy decoding would score."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import lm_layouts  # noqa: E402

import torch  # noqa: E402
from minillava.data import rules  # noqa: E402
from minillava.toyworld import make_scene  # noqa: E402


def test_default_layout_is_the_shipped_one_and_others_keep_every_fact():
    for seed in range(30):
        ann = make_scene(seed).annotation()
        assert lm_layouts.LAYOUTS["default"](ann) == rules.scene_text(ann)
        for name in ("after", "lines"):
            text = lm_layouts.LAYOUTS[name](ann)
            for o in ann["objects"]:
                assert f" {o['color']} {o['shape']}" in text
                assert f": {o['size']}," in text
        text = lm_layouts.LAYOUTS["shape_first"](ann)
        for o in ann["objects"]:
            assert f" {o['shape']}" in text and f": {o['color']}, {o['size']}," in text


def test_teacher_forced_score_matches_greedy_decoding():
    from transformers import LlamaForCausalLM

    from minillava.backbones import toy_lm, zoo
    tokenizer = zoo.load_tokenizer("toy-lm")
    lm = zoo.load("toy-lm")
    items = lm_layouts.eval_items("default", 6, tokenizer)
    scored = lm_layouts.score(lm, items, tokenizer.pad_token_id)
    assert scored["questions"] == len(items) and isinstance(lm, LlamaForCausalLM)
    # the same questions (eval_items' own rng) decoded greedily give the same count of right answers
    rng = lm_layouts.random.Random("lm-layouts-eval")
    pairs = [(rules.scene_text(s.annotation()) + "\n" + q, a)
             for s in lm_layouts.gates.held_out_scenes(6, offset=300_000)
             for q, a in rules.short_answer_qa(s.annotation(), rng, 8)]
    greedy = toy_lm.answer(lm, tokenizer, [q for q, _ in pairs], max_new_tokens=8)
    right = sum(g == a for g, (_, a) in zip(greedy, pairs))
    assert round(scored["accuracy"] * scored["questions"]) == right


def test_supervise_all_labels_every_token_and_answers_keep_vicuna_masking():
    from minillava.backbones import zoo
    from minillava.splicing import IGNORE_INDEX
    tokenizer = zoo.load_tokenizer("toy-lm")
    masked = lm_layouts.training_samples("after", 3, tokenizer)
    every = lm_layouts.training_samples("after", 3, tokenizer, supervise="all")
    questions = lm_layouts.training_samples("after", 3, tokenizer, supervise="questions")
    for m, e, q in zip(masked, every, questions):
        assert m["input_ids"] == e["input_ids"] == q["input_ids"] and e["labels"] == e["input_ids"]
        # "questions": every answer token, and the text after the scene; nothing of the scene itself
        assert all(label == a for label, a in zip(q["labels"], m["labels"]) if a != IGNORE_INDEX)
        scene = tokenizer.decode([i for i, label in zip(q["input_ids"], q["labels"]) if label == IGNORE_INDEX])
        assert scene.rstrip().endswith(".") and "background" in scene and "?" not in scene
        supervised = [i for i, label in enumerate(m["labels"]) if label != IGNORE_INDEX]
        assert 0 < len(supervised) < len(m["labels"]) / 2   # answers only: a small share of the tokens


def test_train_lm_calls_back_during_training_but_not_after_the_last_step():
    import dataclasses

    from minillava.backbones import toy_lm, zoo
    from minillava.backbones.recipe import QUICK
    tokenizer = zoo.load_tokenizer("toy-lm")
    samples = lm_layouts.training_samples("default", 8, tokenizer)
    seen = []
    toy_lm.train_lm(tokenizer, samples, dataclasses.replace(QUICK, lm_steps=7, lm_batch=2), log=lambda _: None,
                    every=(3, lambda step, model: seen.append(step)))
    assert seen == [3, 6]   # after steps 3 and 6 of 7; the final model is measured by the caller


def test_train_lm_continues_a_given_model_instead_of_a_fresh_one():
    import dataclasses

    from minillava.backbones import toy_lm, zoo
    from minillava.backbones.recipe import QUICK
    tokenizer = zoo.load_tokenizer("toy-lm")
    samples = lm_layouts.training_samples("default", 8, tokenizer)
    recipe = dataclasses.replace(QUICK, lm_steps=3, lm_batch=2)
    first, _ = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda _: None)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    again, _ = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda _: None, init=first)
    assert again is first   # trained further in place: a curriculum's second text
    assert any(not torch.equal(before[k], v) for k, v in again.state_dict().items())
    fresh, _ = toy_lm.train_lm(tokenizer, samples, recipe, log=lambda _: None)
    # the same seed and data from scratch give the first model again, not the continued one
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
