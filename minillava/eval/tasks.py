"""Evaluation tasks: what to ask about which image, and how to score the answers.

A ``Task`` keeps everything one benchmark needs in one place, in the anatomy of
lmms-eval tasks, so adding one is writing six small functions:

* ``build_docs(seeds)``               the documents -- one per prompt -- for these scenes;
                                      each a JSON-able dict with a unique "doc_id"
* ``doc_to_visual(doc)``              the image shown (a PIL image)
* ``doc_to_text(doc)``                the prompt
* ``doc_to_target(doc)``              the reference answer, shown in the report
* ``process_result(doc, prediction)`` per-sample metric values, a dict
* ``aggregate(values)``               the task's metrics from the list of those dicts

``register_task`` adds a task to ``TASKS``, under its name. The built-in tasks ask about
held-out toy scenes (``scenes.eval_seeds``) and know every answer (``scenes.answer_key``):

    toy_vqa           short-answer questions with LLaVA-1.5's format prompt, VQA accuracy
    pope_random       POPE yes/no object probes, one task per negative-sampling split;
    pope_popular      the group "pope" runs all three (LLaVA reports their mean F1)
    pope_adversarial
    toy_mc            multiple choice with MMBench's CircularEval
    chair             free descriptions, CHAIR_i / CHAIR_s over the shape vocabulary
    llava_bench       conversation / detail / complex questions, judged against the rules'
                      reference answers (RuleJudge by default; see ``llava_bench_task``)

Each task decides how many documents a scene yields (POPE: up to six questions, toy_mc:
one per rotation of the options), so "n scenes per task" is the unit of a suite run.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

from minillava.data.prompts import DETAIL_INSTRUCTIONS, KINDS, toy_context
from minillava.eval import chair, choice, pope
from minillava.eval.judges import RuleJudge, judge_both_orders, summarize
from minillava.eval.scenes import (DESCRIBE_PROMPT, FORMAT_PROMPT, MC_PROMPT, answer_key, scene_annotation,
                                   scene_image)
from minillava.eval.vqa import vqa_accuracy
from minillava.toyworld import BACKGROUNDS, COLORS, SHAPES, SIZES, SYNONYMS, make_scene


@dataclass(frozen=True)
class Task:
    """One benchmark: documents, prompts, per-sample scoring and aggregation (see the module doc).

    main_metric names the aggregate the summary table and the chart show;
    higher_is_better is False for error rates such as CHAIR; percent_scale turns the main
    metric into percent for the chart (100 for fractions, 1 for scores already in %).
    process_results, if given, scores a whole list of (docs, predictions) at once -- a
    judge works faster on many answers -- and must agree with process_result.
    """
    name: str
    build_docs: Callable[[list[int]], list[dict]]
    doc_to_visual: Callable[[dict], object]
    doc_to_text: Callable[[dict], str]
    doc_to_target: Callable[[dict], str]
    process_result: Callable[[dict, str], dict]
    aggregate: Callable[[list[dict]], dict]
    main_metric: str
    higher_is_better: bool = True
    percent_scale: float = 100.0
    description: str = ""
    process_results: Callable[[list[dict], list[str]], list[dict]] | None = None

    def score(self, docs: list[dict], predictions: list[str]) -> list[dict]:
        """Per-sample metric values of every prediction, in order."""
        if len(docs) != len(predictions):
            raise ValueError(f"{self.name}: got {len(predictions)} predictions for {len(docs)} documents")
        if self.process_results is not None:
            return self.process_results(docs, predictions)
        return [self.process_result(doc, prediction) for doc, prediction in zip(docs, predictions)]


TASKS: dict[str, Task] = {}
# Names that stand for several tasks, e.g. on the command line: --tasks pope
GROUPS = {"pope": tuple(f"pope_{split}" for split in pope.SPLITS)}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a task to TASKS under its name (replace=True to swap out one already there)."""
    if not replace and task.name in TASKS:
        raise ValueError(f"a task named {task.name!r} is already registered; pass replace=True to swap it")
    if task.name in GROUPS:
        raise ValueError(f"{task.name!r} names a group of tasks; pick another name")
    TASKS[task.name] = task
    return task


def resolve_tasks(names: list) -> list[Task]:
    """Tasks for names, group names (expanded) or Task objects, in order, each once."""
    tasks = {}
    for item in names:
        if isinstance(item, Task):
            tasks[item.name] = item
            continue
        for name in GROUPS.get(item, (item,)):
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}; choose from {', '.join([*TASKS, *GROUPS])}")
            tasks[name] = TASKS[name]
    if not tasks:
        raise ValueError("no tasks to run; name at least one")
    return list(tasks.values())


def _mean(values: list[dict], key: str) -> float:
    return sum(v[key] for v in values) / len(values)


# ----------------------------------------------------------------------------
# toy_vqa: short answers, VQA accuracy

VQA_PER_SCENE = 2


def _vqa_docs(seeds: list[int]) -> list[dict]:
    docs = []
    for seed in seeds:
        facts = [(q, a.short) for q, a in answer_key(scene_annotation(seed)).items() if a.short is not None]
        picked = random.Random(f"toy_vqa/{seed}").sample(facts, min(VQA_PER_SCENE, len(facts)))
        docs += [{"doc_id": f"{seed}/{i}", "seed": seed, "question": q, "answer": short}
                 for i, (q, short) in enumerate(picked)]
    return docs


register_task(Task(
    name="toy_vqa",
    description="short-answer questions about the scene, VQA accuracy against the rules' answer",
    build_docs=_vqa_docs,
    doc_to_visual=scene_image,
    doc_to_text=lambda doc: f"{doc['question']}\n{FORMAT_PROMPT}",
    doc_to_target=lambda doc: doc["answer"],
    # One reference answer: vqa_accuracy is exact match after normalize_answer ("Two." == "2").
    process_result=lambda doc, prediction: {"accuracy": vqa_accuracy(prediction, [doc["answer"]])},
    aggregate=lambda values: {"accuracy": _mean(values, "accuracy"), "n": len(values)},
    main_metric="accuracy",
))


# ----------------------------------------------------------------------------
# POPE: yes/no object probes, one task per split


def _pope_docs(split: str) -> Callable[[list[int]], list[dict]]:
    def build(seeds: list[int]) -> list[dict]:
        # Frequency and co-occurrence for the popular and adversarial negatives are counted
        # over the evaluated scenes: with very few scenes there are few objects to pick from.
        images = [(seed, {o.name for o in make_scene(seed).objects}) for seed in seeds]
        return [dict(q, doc_id=q["question_id"], seed=q["image_id"])
                for q in pope.build_questions(images, split=split)]
    return build


def _pope_task(split: str) -> Task:
    return Task(
        name=f"pope_{split}",
        description=f"POPE '{split}' split: 'Is there a ... in the image?', yes as positive",
        build_docs=_pope_docs(split),
        doc_to_visual=scene_image,
        doc_to_text=lambda doc: doc["question"],
        doc_to_target=lambda doc: doc["label"],
        process_result=lambda doc, prediction: {"prediction": pope.parse_yes_no(prediction), "label": doc["label"]},
        aggregate=lambda values: pope.metrics([v["prediction"] for v in values], [v["label"] for v in values]),
        main_metric="f1",
    )


for split in pope.SPLITS:
    register_task(_pope_task(split))


# ----------------------------------------------------------------------------
# toy_mc: multiple choice, CircularEval

MC_OPTIONS = 4
PLACES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
# Short answers that have natural distractors: the other members of their space.
ANSWER_SPACES = (tuple(COLORS), tuple(BACKGROUNDS), SHAPES, SIZES, PLACES, tuple(str(k) for k in range(7)))


def multiple_choice_docs(questions: list[dict]) -> list[dict]:
    """CircularEval documents: one per rotation of each question's options.

    Each question is a dict with "question_id", "seed" (the scene), "question", "options"
    (texts) and "answer" (index of the correct option). Use it to run toy_mc's scoring on
    your own questions.
    """
    docs = []
    for q in questions:
        choice.circular_prompts(q["question"], q["options"])   # refuses bad option lists early
        docs += [dict(q, doc_id=f"{q['question_id']}/{rotation}", rotation=rotation)
                 for rotation in range(len(q["options"]))]
    return docs


def _mc_question(seed: int) -> dict:
    """One question of the scene whose short answer has distractors, with shuffled options."""
    key = answer_key(scene_annotation(seed))
    candidates = [(q, a.short, space) for q, a in key.items() for space in ANSWER_SPACES if a.short in space]
    rng = random.Random(f"toy_mc/{seed}")
    question, answer, space = rng.choice(candidates)   # the background question is always there
    options = [answer, *rng.sample([o for o in space if o != answer], min(MC_OPTIONS, len(space)) - 1)]
    rng.shuffle(options)
    return {"question_id": str(seed), "seed": seed, "question": question, "options": options,
            "answer": options.index(answer)}


def _rotation(doc: dict) -> choice.Rotation:
    return choice.circular_prompts(doc["question"], doc["options"])[doc["rotation"]]


def _mc_text(doc: dict) -> str:
    # circular_prompts ends with its own instruction line; LLaVA-1.5 was trained and
    # evaluated with MC_PROMPT, so that line is swapped for it.
    return _rotation(doc).prompt.rsplit("\n", 1)[0] + "\n" + MC_PROMPT


def _mc_target(doc: dict) -> str:
    return next(letter for letter, index in _rotation(doc).letter_to_option.items() if index == doc["answer"])


def _mc_result(doc: dict, prediction: str) -> dict:
    return {"question_id": doc["question_id"], "rotation": doc["rotation"], "answer": doc["answer"],
            "prediction": choice.parse_choice(prediction, len(doc["options"]))}


def _mc_aggregate(values: list[dict]) -> dict:
    by_question = {}
    for v in values:
        by_question.setdefault(v["question_id"], []).append(v)
    records = []
    for question_id, rotations in by_question.items():
        rotations.sort(key=lambda v: v["rotation"])
        if [v["rotation"] for v in rotations] != list(range(len(rotations))):
            raise ValueError(f"question {question_id!r} lacks some rotations; CircularEval needs every one")
        records.append({"answer": rotations[0]["answer"], "predictions": [v["prediction"] for v in rotations]})
    return choice.circular_eval(records)


register_task(Task(
    name="toy_mc",
    description="multiple choice about the scene; correct only if right under every rotation of the options",
    build_docs=lambda seeds: multiple_choice_docs([_mc_question(seed) for seed in seeds]),
    doc_to_visual=scene_image,
    doc_to_text=_mc_text,
    doc_to_target=_mc_target,
    process_result=_mc_result,
    aggregate=_mc_aggregate,
    main_metric="circular_accuracy",
))


# ----------------------------------------------------------------------------
# CHAIR: hallucinated objects in free descriptions


def _shapes(annotation: dict) -> list[str]:
    return sorted({o["shape"] for o in annotation["objects"]})


def chair_task(vocab: chair.Vocabulary | None = None, objects_of: Callable[[dict], list[str]] = _shapes,
               name: str = "chair") -> Task:
    """CHAIR over a vocabulary (default: the toy shapes and their synonyms, toyworld.SYNONYMS).

    objects_of(annotation) lists the objects truly present, in the vocabulary's terms; pass
    both to score at another granularity, e.g. categories such as "red circle".
    """
    vocab = vocab or chair.Vocabulary(SYNONYMS)

    def build(seeds: list[int]) -> list[dict]:
        return [{"doc_id": str(seed), "seed": seed, "objects": objects_of(scene_annotation(seed))} for seed in seeds]

    def aggregate(values: list[dict]) -> dict:
        mentions, hallucinated = (sum(v[k] for v in values) for k in ("n_mentions", "n_hallucinated"))
        return {"chair_i": hallucinated / mentions if mentions else 0.0, "chair_s": _mean(values, "chair_s"),
                "n_mentions": mentions, "n_hallucinated": hallucinated, "n": len(values)}

    return Task(
        name=name,
        description="free descriptions; CHAIR_s = share hallucinating an object, CHAIR_i = share of mentions",
        build_docs=build,
        doc_to_visual=scene_image,
        doc_to_text=lambda doc: DESCRIBE_PROMPT,
        doc_to_target=lambda doc: ", ".join(doc["objects"]),
        # CHAIR of one description: chair_s is 1.0 if it hallucinates, n_* count its mentions.
        process_result=lambda doc, prediction: chair.chair([prediction], [doc["objects"]], vocab),
        aggregate=aggregate,
        main_metric="chair_s",
        higher_is_better=False,
    )


register_task(chair_task())


# ----------------------------------------------------------------------------
# LLaVA-Bench: open answers, judged against reference answers


def _bench_docs(seeds: list[int]) -> list[dict]:
    """Per scene one question of each category, with the rules' answer as the reference."""
    docs = []
    for seed in seeds:
        annotation = scene_annotation(seed)
        key = answer_key(annotation)
        rng = random.Random(f"llava_bench/{seed}")
        questions = {"conversation": rng.choice([q for q, a in key.items() if a.kind == "conversation"]),
                     "detail": rng.choice(DETAIL_INSTRUCTIONS),
                     "complex": next(q for q, a in key.items() if a.kind == "complex")}
        context = toy_context(annotation)   # the judge's view of the image: captions and boxes
        docs += [{"doc_id": f"{seed}/{kind}", "seed": seed, "category": kind, "question": questions[kind],
                  "reference": key[questions[kind]].answer, "context": context} for kind in KINDS]
    return docs


def llava_bench_task(judge=None, name: str = "llava_bench") -> Task:
    """LLaVA-Bench on toy scenes, judged by ``judge`` (default: RuleJudge) in both orders.

    Main metric: relative score in % (model / reference x 100), per category and overall;
    failed judgements are counted (n_failed, judge_failures), never averaged in.
    """
    judge = judge or RuleJudge()

    def process_results(docs: list[dict], predictions: list[str]) -> list[dict]:
        records = judge_both_orders(judge, [(d["context"], d["question"], d["reference"], p)
                                            for d, p in zip(docs, predictions)])
        return [dict(record, category=doc["category"]) for doc, record in zip(docs, records)]

    return Task(
        name=name,
        description=f"open questions (conversation, detail, complex) judged by {judge.name} in both orders",
        build_docs=_bench_docs,
        doc_to_visual=scene_image,
        doc_to_text=lambda doc: doc["question"],
        doc_to_target=lambda doc: doc["reference"],
        process_result=lambda doc, prediction: process_results([doc], [prediction])[0],
        process_results=process_results,
        aggregate=summarize,
        main_metric="relative",
        percent_scale=1.0,
    )


register_task(llava_bench_task())
