"""Reading a model's failures: what kind of question, and does it look at the image at all?

One accuracy number says how often a model is right; it does not say *why* it is wrong.
Two questions do most of the work:

* **Which questions?** ``topic(question)`` sorts the toy world's questions into the rules'
  topics (presence, count, colour, shape, size, position, relation), read back from the very
  wordings the rules ask with (``minillava.data.questions``), and ``accuracy_by_topic``
  splits a run's accuracy by them.
* **Does it look?** ``looking_test`` asks the same questions three times: with the right
  image, with a blank image of the mean colour, and with another scene's image. A model that
  reads the image loses accuracy without it, and changes its answer when the image changes;
  a model that answers from the wording of the question alone does neither. A gap of zero
  between "right image" and "blank image" means the accuracy came from priors.
"""

from collections import defaultdict

from PIL import Image

from minillava.data.questions import OTHER, TOPICS, topic
from minillava.eval.assistants import answer_all, as_assistant
from minillava.eval.tasks import TASKS
from minillava.image import pad_colour

# The blank image is the colour LLaVA pads with: CLIP's mean, so it normalises to about 0.
BLANK = pad_colour()


def accuracy_by_topic(samples: list[dict]) -> dict[str, dict]:
    """{topic: {"accuracy": mean, "n": count}} over a toy_vqa run's samples, in TOPICS order.

    samples: dicts with "prompt" and "result" {"accuracy": ...}, as ``TaskResult.samples``.
    Topics with no sample are left out.
    """
    groups = defaultdict(list)
    for sample in samples:
        groups[topic(sample["prompt"])].append(sample["result"]["accuracy"])
    order = [name for name, _ in TOPICS] + [OTHER]
    return {name: {"accuracy": sum(groups[name]) / len(groups[name]), "n": len(groups[name])}
            for name in order if groups[name]}


def looking_test(assistant, seeds: list[int], batch_size: int = 64) -> dict:
    """toy_vqa on these held-out scenes with the right image, a blank one, and another scene's.

    Returns {"samples": {view: [sample, ...]}, "accuracy": {view: float}, "changed": share of
    answers that differ between the right image and another scene's, "docs": the documents}.
    "Another scene" is the next scene in the list (the last takes the first).
    """
    if len(seeds) < 2:
        raise ValueError("looking_test needs at least 2 scenes: each borrows another scene's image")
    assistant = as_assistant(assistant)
    task = TASKS["toy_vqa"]
    docs = task.build_docs(list(seeds))
    images = {seed: task.doc_to_visual({"seed": seed}) for seed in seeds}
    successor = dict(zip(seeds, list(seeds[1:]) + [seeds[0]]))
    views = {"right image": lambda doc: images[doc["seed"]],
             "blank image": lambda doc: Image.new("RGB", images[doc["seed"]].size, BLANK),
             "another scene's image": lambda doc: images[successor[doc["seed"]]]}
    prompts = [task.doc_to_text(doc) for doc in docs]
    samples, accuracy = {}, {}
    for view, picture in views.items():
        predictions = []
        for start in range(0, len(docs), batch_size):
            batch = docs[start:start + batch_size]
            predictions += answer_all(assistant, [picture(doc) for doc in batch], prompts[start:start + batch_size])
        values = task.score(docs, predictions)
        samples[view] = [{"prompt": p, "target": task.doc_to_target(d), "prediction": a, "result": v}
                         for d, p, a, v in zip(docs, prompts, predictions, values, strict=True)]
        accuracy[view] = sum(v["accuracy"] for v in values) / len(values)
    own, other = samples["right image"], samples["another scene's image"]
    changed = sum(a["prediction"] != b["prediction"] for a, b in zip(own, other)) / len(own)
    return {"samples": samples, "accuracy": accuracy, "changed": changed, "docs": docs}


def gap_by_topic(right: list[dict], blank: list[dict]) -> dict[str, dict]:
    """Per topic: accuracy with the right image, with a blank one, the gap, and the count.

    right, blank: samples of the same questions in the same order (``looking_test``'s
    "right image" and "blank image"). Returns {topic: {"with image", "blank", "gap", "n"}} in
    TOPICS order, topics without samples left out. A gap near 0 means the topic's accuracy
    comes from the wording of its questions, not from the picture.
    """
    if len(right) != len(blank) or any(a["prompt"] != b["prompt"] for a, b in zip(right, blank)):
        raise ValueError("right and blank must hold the same questions in the same order: one sample per "
                         "document in both (looking_test's 'right image' and 'blank image')")
    seen, unseen = accuracy_by_topic(right), accuracy_by_topic(blank)
    return {name: {"with image": seen[name]["accuracy"], "blank": unseen[name]["accuracy"],
                   "gap": seen[name]["accuracy"] - unseen[name]["accuracy"], "n": seen[name]["n"]}
            for name in seen}
