"""Ground truth for evaluation: held-out toy scenes and the rules' answer to every question.

Three parts of the suite need to know the truth about a scene: the tasks (to ask
questions with known answers), the oracle assistant (to answer them perfectly) and the
rule judge (to score open answers). They all get it from here, so they cannot drift
apart:

* ``eval_seeds``  -- scene seeds for evaluation, drawn from EVAL_SEED_START up. Training
  data uses seeds from 0 up, so no evaluated image was ever trained on.
* ``answer_key``  -- every question ``minillava.data.rules`` can write about a scene,
  with the rules' full answer (and short answer for facts). The wording of rule
  questions is random; the key fixes it with a generator seeded by what the scene
  *shows*, not by its seed, so a scene read back from text (``prompts.parse_toy_context``,
  which cannot know the seed) has the same key as the original.
* The prompts the built-in tasks ask with (LLaVA-1.5's wordings where it has one).
"""

import json
import random
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from minillava.data import rules
from minillava.data.prompts import DETAIL_INSTRUCTIONS
from minillava.toyworld import EVAL_SEEDS, make_scene, render

EVAL_SEED_START = EVAL_SEEDS.start   # every evaluation scene is drawn from here up (training seeds start at 0)

# LLaVA-1.5's format prompts: short-answer VQA, and multiple choice (its MMBench prompt).
FORMAT_PROMPT = rules.FORMAT_PROMPT
MC_PROMPT = "Answer with the option's letter from the given choices directly."
# CHAIR asks for a free description; this is the wording hallucination papers use with LLaVA.
DESCRIBE_PROMPT = "Please describe this image in detail."
# Every request the key answers with the scene's detailed description.
DESCRIBE_PROMPTS = (DESCRIBE_PROMPT, *DETAIL_INSTRUCTIONS)


def eval_seeds(n: int, seed: int = 0) -> list[int]:
    """n distinct held-out scene seeds (sorted), drawn with ``seed`` from the held-out pool."""
    if not isinstance(n, int) or not 1 <= n <= len(EVAL_SEEDS):
        raise ValueError(f"n must be an integer from 1 to {len(EVAL_SEEDS)}, got {n!r}")
    return sorted(random.Random(f"eval-seeds-{seed}").sample(EVAL_SEEDS, n))


def scene_annotation(seed: int) -> dict:
    """The annotation of the base-variant scene with this seed (64 x 64, the course's size)."""
    return make_scene(seed).annotation()


def scene_image(doc: dict):
    """The image of the scene a task document is about: ``doc["seed"]`` rendered at 64 x 64."""
    return render(make_scene(doc["seed"]))


class KeyAnswer(NamedTuple):
    """The rules' answer to one question about one scene."""
    kind: str          # "conversation", "detail" or "complex": LLaVA-Bench's categories
    answer: str        # the full answer, as the rule teacher writes it
    short: str | None  # the one-word-or-phrase answer; only conversation facts have one


def answer_key(annotation: dict) -> MappingProxyType:
    """Every question the rules write about this scene -> its ``KeyAnswer`` (read-only).

    Holds every conversation fact (presence, absence, counts, colours, shapes, sizes,
    positions, relations; asked with FORMAT_PROMPT appended it wants ``short``), one
    complex-reasoning question, and each of DESCRIBE_PROMPTS with the scene's detailed
    description. Depends only on what the scene shows, and is cached.
    """
    return _answer_key(_content(annotation))


def _content(annotation: dict) -> str:
    """What a scene shows -- background and objects, without seed or canvas size -- as text."""
    try:
        objects = [[o["size"], o["color"], o["shape"], o["mark"], o["box"]] for o in annotation["objects"]]
        return json.dumps([annotation["background"], objects])
    except (KeyError, TypeError):
        raise ValueError("not a toy-world annotation: pass Scene.annotation() output") from None


@lru_cache(maxsize=4096)
def _answer_key(content: str) -> MappingProxyType:
    background, objects = json.loads(content)
    # The rules read only these fields; seed and canvas do not change any fact.
    annotation = {"seed": 0, "variant": "fine" if any(o[3] for o in objects) else "base", "height": 64,
                  "width": 64, "background": background,
                  "objects": [{"size": s, "color": c, "shape": sh, "mark": m, "box": b} for s, c, sh, m, b in objects]}
    def rng(purpose):
        return random.Random(f"{purpose}\n{content}")
    # A huge n lists every fact. Both calls draw the facts in the same order from equally
    # seeded generators, so the i-th short answer belongs to the i-th full answer.
    long = rules.conversation_qa(annotation, rng("facts"), n=1_000_000)
    short = rules.short_answer_qa(annotation, rng("facts"), n=1_000_000)
    key = {question: KeyAnswer("conversation", answer, brief)
           for (question, answer), (_, brief) in zip(long, short)}
    question, answer = rules.complex_reasoning(annotation, rng("complex"))
    key[question] = KeyAnswer("complex", answer, None)
    description = rules.detailed_description(annotation, rng("detail"))
    key.update({prompt: KeyAnswer("detail", description, None) for prompt in DESCRIBE_PROMPTS})
    return MappingProxyType(key)
