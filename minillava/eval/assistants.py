"""Assistants: whatever answers questions about images, and three fakes that test the suite.

The suite sees a model only through one small interface, so it can evaluate anything --
a trained MiniLlava, a transformers LLaVA, an API, or a fake. An assistant is any object
with a ``name`` (it labels the reports) and::

    assistant.answer(image, question) -> str            # image: a PIL image
    assistant.answer_batch(images, questions) -> list   # optional: many at once

The course's trained model, ``minillava.chat.Assistant``, is one as it is (and batches its
generation); a plain function ``fn(image, question) -> str`` becomes one with
``FunctionAssistant`` (``as_assistant`` does it for you). ``answer_all`` is how the suite
asks: ``answer_batch`` where the assistant has one, else ``answer`` question by question.

The fakes are known-good and known-bad models, so every metric can be checked against a
number worked out by hand before it is trusted with a real model:

* ``OracleAssistant``         answers every question the tasks ask perfectly, from the
                              scene's annotation (``scenes.answer_key``).
* ``YesAssistant``            says "Yes" to everything: the yes-bias POPE was built to expose.
* ``HallucinatingDescriber``  the oracle, but in busy scenes its descriptions add a shape
                              that is not there: CHAIR's and the judge's target.

The oracle cannot see: it recognises each image by its pixels among the scenes it was
built for (``OracleAssistant.for_seeds(scenes.eval_seeds(n, seed))`` for a suite run),
and reads the answer off that scene's annotation.
"""

import hashlib
import re
from collections.abc import Callable

from minillava.eval.scenes import DESCRIBE_PROMPTS, FORMAT_PROMPT, MC_PROMPT, answer_key, scene_annotation
from minillava.toyworld import SHAPES, Scene, render


class FunctionAssistant:
    """An assistant made of a function ``fn(image, question) -> str``."""

    def __init__(self, fn: Callable[[object, str], str], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def answer(self, image, question: str) -> str:
        return self.fn(image, question)


def as_assistant(obj):
    """``obj`` itself if it is an assistant (a ``name`` and an ``answer`` method), a
    FunctionAssistant if it is a function (image, question) -> str."""
    if callable(getattr(obj, "answer", None)):
        if not isinstance(getattr(obj, "name", None), str):
            raise TypeError(f"{type(obj).__name__} has answer() but no name: give it a name attribute, "
                            f"the label of its reports")
        return obj
    if callable(obj):
        return FunctionAssistant(obj)
    raise TypeError(f"an assistant needs a name and a method answer(image, question) -> str, or must be a "
                    f"function (image, question) -> str; got {type(obj).__name__}")


def answer_all(assistant, images: list, questions: list[str]) -> list[str]:
    """Answers to many questions, one image each: in one ``answer_batch`` call if the
    assistant has one (a model batches its generation), else ``answer`` in a loop."""
    if hasattr(assistant, "answer_batch"):
        return assistant.answer_batch(images, questions)
    return [assistant.answer(image, question) for image, question in zip(images, questions, strict=True)]


def _fingerprint(image) -> str:
    """A digest of an image's pixels: the same scene rendered twice gives the same digest."""
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


# A yes/no presence probe as POPE and the rules ask it; POPE writes "a" even before vowels.
_PRESENCE = re.compile(r"(?:Is there|Can you see|Does the image contain) an? (?P<object>[a-z ]+?)(?: in the image)?\?")


class OracleAssistant:
    """Perfect answers from the annotation of each scene it knows, recognised by pixels.

    It answers what the built-in tasks ask: short answers (FORMAT_PROMPT), multiple
    choice (MC_PROMPT), presence probes ("Is there a red circle in the image?"), every
    rule-written question and the description prompts. Anything else, and any image it
    was not built for, raises ValueError: an oracle that guessed would not be one.
    """

    name = "oracle"

    def __init__(self, annotations: list[dict]):
        self._scenes = {_fingerprint(render(Scene.from_annotation(a))): a for a in annotations}

    @classmethod
    def for_seeds(cls, seeds: list[int]) -> "OracleAssistant":
        """An oracle for the toy scenes with these seeds (e.g. ``scenes.eval_seeds(n, seed)``)."""
        return cls([scene_annotation(seed) for seed in seeds])

    def scene_of(self, image) -> dict:
        """The annotation of the scene this image shows."""
        annotation = self._scenes.get(_fingerprint(image))
        if annotation is None:
            raise ValueError("the oracle does not know this image; build it for the scenes being evaluated, "
                             "e.g. OracleAssistant.for_seeds(eval_seeds(n, seed)) with the suite's n and seed")
        return annotation

    def answer(self, image, question: str) -> str:
        annotation = self.scene_of(image)
        key = answer_key(annotation)
        first, *rest = question.split("\n")
        if rest and rest[-1] == MC_PROMPT and first in key:
            return self._letter(key[first].short, rest[:-1])
        if rest == [FORMAT_PROMPT] and first in key:
            return key[first].short
        if question in key:
            return key[question].answer
        if match := _PRESENCE.fullmatch(question):
            names = {o["name"] for o in annotation["objects"]} | {o["shape"] for o in annotation["objects"]}
            return "Yes" if match["object"] in names else "No"
        raise ValueError(f"the oracle cannot answer {question!r}: it knows the rules' questions, presence "
                         f"probes, multiple choice and description prompts (see minillava.eval.scenes)")

    @staticmethod
    def _letter(answer: str | None, option_lines: list[str]) -> str:
        """The letter of the option line ("B. red") whose text is the answer."""
        for line in option_lines:
            letter, _, text = line.partition(". ")
            if text == answer:
                return letter
        raise ValueError(f"no option is the true answer {answer!r}: {option_lines}")


class YesAssistant:
    """Says "Yes" to everything."""

    name = "yes"

    def answer(self, image, question: str) -> str:
        return "Yes"


class HallucinatingDescriber(OracleAssistant):
    """The oracle, except that describing a scene of at least ``min_objects`` objects it adds
    a shape the scene does not have: "There is also a small green triangle in the corner."

    Hallucination growing with clutter is what real models do; here it is exact, so the
    CHAIR rates it causes can be worked out by hand from the scenes' object counts.
    """

    name = "hallucinating-describer"

    def __init__(self, annotations: list[dict], min_objects: int = 3):
        super().__init__(annotations)
        self.min_objects = min_objects

    def answer(self, image, question: str) -> str:
        text = super().answer(image, question)
        objects = self.scene_of(image)["objects"]
        # Base scenes hold at most four objects, so one of the five shapes is always missing.
        absent = [shape for shape in SHAPES if shape not in {o["shape"] for o in objects}]
        if question in DESCRIBE_PROMPTS and len(objects) >= self.min_objects and absent:
            text += f" There is also a small green {absent[0]} in the corner."
        return text
