"""What the teacher reads: a symbolic image, a system message and few-shot examples.

A text-only model cannot see pixels, so LLaVA wrote each COCO image out as text: its
five captions, a blank line, then one line per object, ``category: [x1, y1, x2, y2]``
with coordinates normalised to 0..1 (3 decimals). From that "symbolic image" GPT-4 wrote
three kinds of data, each with its own system message and a few hand-made examples shown
as earlier user (context) / assistant (response) turns:

* conversation -- several questions and answers about what is visible,
* detail       -- one rich paragraph describing the image,
* complex      -- one question that needs reasoning beyond the pixels, with its answer.

The toy world writes its scenes the same way; each object line names size, colour and
shape (and the dot, in the fine variant), so the text holds every fact the image shows
and ``parse_toy_context`` can read the scene back (the rule teacher answers from the
prompt alone, exactly like GPT-4 does).
"""

import random
import re
from functools import cache

from minillava.data.rules import rule_response
from minillava.toyworld import BACKGROUNDS, COLORS, SHAPES, SIZES, Obj, Scene, article, make_scene

KINDS = ("conversation", "detail", "complex")

_INTRO = (
    "You are an AI visual assistant looking at a single image. You are given sentences describing "
    "the image and the position of every object in it, one per line as \"object: [x1, y1, x2, y2]\": "
    "coordinates go from 0 to 1, x to the right and y downwards from the top left corner. You do not "
    "see the image itself, but you answer exactly as if you were looking at it. Never mention "
    "sentences, descriptions, captions, boxes or coordinates: talk about what you see.\n\n")

SYSTEM_MESSAGES = {
    "conversation": _INTRO + (
        "Write a conversation between a person asking about this image and you. Ask diverse "
        "questions: which objects there are, how many, their colours, shapes and sizes, where they "
        "are, and where they are relative to each other. Only ask questions whose answer the image "
        "shows for certain. You may ask about something that is not in the image and answer "
        "confidently that it is not there.\n\n"
        "Write each question after a line \"Question:\" and each answer after a line \"Answer:\", "
        "with a line \"===\" between them."),
    "detail": _INTRO + (
        "Describe the image in detail, in one paragraph: every object with its colour, size and "
        "place, and how the objects are arranged. Mention only what is in the image."),
    "complex": _INTRO + (
        "Write one question about the image whose answer needs reasoning or everyday knowledge "
        "beyond what is visible (for example how many corners the shapes have together, which "
        "object a hand moving from the left would reach first, or what colour two paints make "
        "when mixed), then answer it, explaining the reasoning step by step.\n\n"
        "Write the question after a line \"Question:\" and the answer after a line \"Answer:\", "
        "with a line \"===\" between them."),
}
# Appended in JSON mode (response_format={"type": "json_object"}), which requires the word JSON.
JSON_INSTRUCTIONS = {
    "conversation": 'Reply with a JSON object {"qa": [{"question": "...", "answer": "..."}, ...]} only.',
    "detail": 'Reply with a JSON object {"description": "..."} only.',
    "complex": 'Reply with a JSON object {"qa": [{"question": "...", "answer": "..."}]} only.',
}

# How the human side of a sample asks for a description (the teacher writes only the answer).
DETAIL_INSTRUCTIONS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "What is in the photo? Describe it thoroughly.",
    "Explain the visual content of the image in great detail.",
    "Analyze the image in a comprehensive and detailed manner.",
)
# Stage 1 (feature alignment) asks for a caption in one of these words.
BRIEF_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
)
FEW_SHOT_SEEDS = (11, 29)   # toy scenes whose rule-written answers serve as examples


# ----------------------------------------------------------------------------
# Symbolic images


def _box_text(box) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in box) + "]"


def toy_context(annotation: dict) -> str:
    """A toy scene as text: five captions, a blank line, "large red circle: [x1, y1, x2, y2]" lines."""
    scene = Scene.from_annotation(annotation)
    lines = [f"{o.size} {o.name}{f' with {article(o.mark)} {o.mark} dot' if o.mark else ''}: {_box_text(o.box)}"
             for o in scene.objects]
    return "\n".join(scene.captions()) + "\n\n" + "\n".join(lines)


def coco_context(captions: list[str], objects: list[tuple[str, list[float]]], width: int, height: int) -> str:
    """A COCO image as text: captions, a blank line, one "category: [x1, y1, x2, y2]" line per object.

    objects are (category name, [x, y, w, h]) with COCO's pixel boxes (top-left corner, width,
    height); they are normalised by the image's width and height to 0..1, 3 decimals.
    """
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise ValueError(f"image width and height must be positive, got {width!r} x {height!r}; "
                         f"take them from the COCO 'images' entry")
    lines = []
    for name, box in objects:
        if len(box) != 4 or box[2] < 0 or box[3] < 0:
            raise ValueError(f"box {box!r} of {name!r} is not a COCO [x, y, width, height] box")
        x, y, w, h = box
        corners = (x / width, y / height, (x + w) / width, (y + h) / height)
        lines.append(f"{name}: {_box_text(min(max(v, 0.0), 1.0) for v in corners)}")
    return "\n".join(c.strip() for c in captions) + "\n\n" + "\n".join(lines)


_OBJECT_LINE = re.compile(rf"^({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
                          rf"(?: with an? ({'|'.join(COLORS)}) dot)?: \[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]$")
_BACKGROUND = re.compile(rf"on an? ({'|'.join(BACKGROUNDS)}) background")


def parse_toy_context(text: str) -> dict:
    """Read a toy scene back from toy_context(...) text: the annotation the rule teacher needs.

    The seed is unknown from text (0), the canvas 64 x 64; neither changes any fact.
    """
    objects = [Obj(m[3], m[2], m[1], tuple(float(v) for v in m.group(5, 6, 7, 8)), m[4])
               for m in map(_OBJECT_LINE.match, text.strip().splitlines()) if m]
    background = _BACKGROUND.search(text)
    if not objects or not background:
        raise ValueError("no toy-world scene in this text: expected captions naming the background and "
                         "lines like 'large red circle: [0.100, 0.200, 0.400, 0.500]' (see toy_context)")
    variant = "fine" if any(o.mark for o in objects) else "base"
    return Scene(0, objects, background[1], 64, 64, variant).annotation()


# ----------------------------------------------------------------------------
# Messages


def kind_of(messages: list[dict]) -> str:
    """Which of KINDS a request asks for, read from its system message."""
    system = messages[0].get("content", "") if messages and messages[0].get("role") == "system" else ""
    for kind, text in SYSTEM_MESSAGES.items():
        if system.startswith(text):
            return kind
    raise ValueError("the request's system message is none of minillava's SYSTEM_MESSAGES; "
                     "build requests with minillava.data.prompts.build_messages")


@cache
def few_shot(kind: str, json_mode: bool = False) -> tuple[tuple[str, str], ...]:
    """(context, response) example pairs for `kind`, written by the rules about FEW_SHOT_SEEDS scenes."""
    examples = []
    for seed in FEW_SHOT_SEEDS:
        annotation = make_scene(seed).annotation()
        rng = random.Random(f"few-shot-{kind}-{seed}")
        examples.append((toy_context(annotation), rule_response(kind, annotation, rng, json_mode)))
    return tuple(examples)


def build_messages(kind: str, context: str, json_mode: bool = False) -> list[dict]:
    """The chat request: system message, few-shot user/assistant turns, then the context."""
    if kind not in KINDS:
        raise ValueError(f"unknown response kind {kind!r}; choose one of {KINDS}")
    system = SYSTEM_MESSAGES[kind] + ("\n\n" + JSON_INSTRUCTIONS[kind] if json_mode else "")
    messages = [{"role": "system", "content": system}]
    for example_context, response in few_shot(kind, json_mode):
        messages += [{"role": "user", "content": example_context}, {"role": "assistant", "content": response}]
    return messages + [{"role": "user", "content": context}]
