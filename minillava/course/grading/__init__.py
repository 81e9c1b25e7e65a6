"""Graded checks for the course notebooks.

A graded cell in a chapter calls one checker on the learner's implementation::

    from minillava.course import grading
    grading.check_projector(MyProjector)

On success a checker prints exactly one line, ``✅ projector: all checks passed``. The
line holds no floats or timings, so strict ``pytest --nbval`` can compare it on any
machine. On failure it raises :class:`GradingError`, whose message says what was
expected, what was got, and how to fix it.

Writing a checker (about ten lines)::

    @check("projector")
    def check_projector(Projector):
        gen = torch.Generator().manual_seed(0)           # local RNG: leave the notebook's alone
        x = torch.randn(2, 5, 8, generator=gen)
        proj = Projector(vision_dim=8, text_dim=16)
        assert_equal(tuple(proj(x).shape), (2, 5, 16), what="output shape",
                     hint="map the last dimension vision_dim -> text_dim; keep batch and patches")
        assert_close(proj(x), reference(proj, x), what="projector output",
                     hint="Linear, then GELU, then Linear (LLaVA-1.5's mlp2x_gelu)")

Rules:

- The function is named ``check_<name>`` and registered with ``@check("<name>")``; it
  lands in :data:`CHECKS` under ``<name>``.
- It takes the learner's implementation (a function or a class) as its argument and
  prints nothing itself: the decorator prints the success line.
- It fails only by raising :class:`GradingError` (directly or through
  :func:`assert_close` / :func:`assert_equal`). Any other exception raised while
  checking, e.g. a shape error inside the learner's code, is reported as a
  GradingError too. ``NotImplementedError`` passes through unchanged: it means the
  exercise stub has not been filled in yet.
- Add at least one plausible wrong implementation for it to ``tests/wrong_answers.py``;
  the course tests call the checker on each and require a GradingError.
"""

import functools
from typing import Any, Callable

import torch

CHECKS: dict[str, Callable[..., None]] = {}
"""Every registered checker, by name (``"projector"`` for ``check_projector``)."""

_UNSET = object()


class GradingError(AssertionError):
    """A graded check failed; ``str(err)`` explains what was expected and how to fix it."""

    def __init__(self, what: str, *, expected: Any = _UNSET, got: Any = _UNSET, hint: str | None = None):
        super().__init__(what)
        self.what, self.expected, self.got, self.hint = what, expected, got, hint
        self.check_name: str | None = None  # set by @check, which knows which checker failed

    def __str__(self) -> str:
        lines = [f"{self.check_name}: {self.what}" if self.check_name else self.what]
        if self.expected is not _UNSET:
            lines.append(f"  expected: {self.expected}")
        if self.got is not _UNSET:
            lines.append(f"  got:      {self.got}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def check(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``check_<name>`` in :data:`CHECKS` and print the success line when it passes."""

    def register(checker: Callable[..., None]) -> Callable[..., None]:
        # One spelling everywhere: notebooks call check_<name>, tests key wrong answers by <name>.
        if checker.__name__ != f"check_{name}":
            raise ValueError(f"checker for {name!r} must be named check_{name}, not {checker.__name__}")

        @functools.wraps(checker)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                checker(*args, **kwargs)
            except GradingError as err:
                err.check_name = name
                raise
            except NotImplementedError:
                raise  # an unfilled stub: say so plainly rather than as a wrong answer
            except Exception as err:
                failure = GradingError(
                    f"your code raised {type(err).__name__}: {err}",
                    hint="read the traceback above this error to see which line failed",
                )
                failure.check_name = name
                raise failure from err
            print(f"✅ {name}: all checks passed")

        CHECKS[name] = run
        return run

    return register


def _as_tensors(got: Any, expected: Any, what: str, hint: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides as CPU tensors of equal shape, or a GradingError saying why not."""
    if not isinstance(got, torch.Tensor):
        raise GradingError(f"{what}: expected a torch.Tensor", got=type(got).__name__, hint=hint)
    expected = torch.as_tensor(expected)
    if got.shape != expected.shape:
        raise GradingError(f"{what}: wrong shape", expected=tuple(expected.shape), got=tuple(got.shape), hint=hint)
    return got.detach().cpu(), expected.detach().cpu()


def assert_equal(got: Any, expected: Any, *, what: str, hint: str) -> None:
    """Require ``got == expected`` exactly; a tensor on either side makes it an elementwise check."""
    if isinstance(got, torch.Tensor) or isinstance(expected, torch.Tensor):
        got, expected = _as_tensors(got, expected, what, hint)
        wrong = (got != expected).sum().item()
        if wrong:
            raise GradingError(f"{what}: {wrong} of {got.numel()} values differ (shape {tuple(got.shape)})", hint=hint)
    elif got != expected:
        raise GradingError(f"{what} is wrong", expected=expected, got=got, hint=hint)


def assert_close(got: Any, expected: Any, *, what: str, hint: str, atol: float = 1e-5) -> None:
    """Require tensor ``got`` to match ``expected`` in shape and within ``atol`` everywhere."""
    got, expected = _as_tensors(got, expected, what, hint)
    if got.numel() == 0:
        return
    # float64, so integer and half-precision tensors compare alike.
    diff = (got.double() - expected.double()).abs().max().item()
    if not diff <= atol:  # written this way round so that a NaN fails too
        raise GradingError(
            f"{what}: values differ (shape {tuple(got.shape)}, max abs diff {diff:.3g} > atol {atol:g})",
            hint=hint,
        )


# ------------------------------------------------------------------ chapter 3: architecture


@check("projector")
def check_projector(Projector):
    """``Projector(vision_dim, text_dim)`` must be LLaVA-1.5's mlp2x_gelu: Linear, GELU, Linear."""
    proj = Projector(8, 16)
    linears = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
    hint = "two nn.Linear layers (vision_dim -> text_dim, then text_dim -> text_dim) with nn.GELU() between"
    assert_equal([tuple(m.weight.shape) for m in linears], [(16, 8), (16, 16)], what="Linear layer shapes", hint=hint)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    first, second = linears
    expected = second(torch.nn.functional.gelu(first(x)))
    assert_close(proj(x), expected, what="projector output", hint=hint + "; the exact GELU, not tanh or ReLU")


@check("splice")
def check_splice(splice_sample):
    """``splice_sample(input_ids, labels, text_embeds, image_features, image_token_id)`` for one sample."""
    from minillava.splicing import splice

    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Embedding(20, 4)
    hint = ("replace each placeholder position by its image's feature rows, in order; labels there are -100; "
            "text rows and labels keep their order")
    for ids in ([1, 5, 6, 7], [1, 19, 5, 6], [1, 5, 19, 6, 19, 7, 8], [19, 2]):
        input_ids = torch.tensor(ids)
        labels = torch.tensor([i * 10 for i in range(len(ids))])
        feats = [torch.randn(3, 4, generator=gen) for _ in range(ids.count(19))]
        text_embeds = table(input_ids.masked_fill(input_ids == 19, 0)).detach()
        want = splice(input_ids[None], feats, table, 19, labels=labels[None])
        embeds, got_labels = splice_sample(input_ids, labels, text_embeds, feats, 19)
        case = f"input_ids {ids} (image token 19)"
        assert_close(embeds, want.embeds[0].detach(), what=f"embeddings for {case}", hint=hint)
        assert_equal(got_labels, want.labels[0], what=f"labels for {case}", hint=hint)


@check("masked_loss")
def check_masked_loss(masked_loss):
    """``masked_loss(logits, labels)``: next-token cross-entropy averaged over labels != -100."""
    from minillava.loss import masked_lm_loss

    gen = torch.Generator().manual_seed(0)
    hint = ("shift by one (logits[:, :-1] predict labels[:, 1:]), ignore -100, "
            "and average over the supervised tokens only")
    for supervised in ([0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]):
        logits = torch.randn(2, 6, 7, generator=gen)
        labels = torch.randint(0, 7, (2, 6), generator=gen)
        labels[0][torch.tensor(supervised) == 0] = -100
        labels[1, :2] = -100
        assert_close(masked_loss(logits, labels), masked_lm_loss(logits, labels), what="loss", hint=hint)


# ------------------------------------------------------------------ chapter 2: data engine


def _first_line_difference(got: str, expected: str, what: str, hint: str) -> None:
    """Require two texts to be equal; otherwise say which line differs first, both sides as repr."""
    if not isinstance(got, str):
        raise GradingError(f"{what}: expected a str", got=type(got).__name__, hint=hint)
    if got == expected:
        return
    got_lines, expected_lines = got.split("\n"), expected.split("\n")
    for number, (g, e) in enumerate(zip(got_lines, expected_lines), 1):
        if g != e:
            raise GradingError(f"{what}: line {number} differs", expected=repr(e), got=repr(g), hint=hint)
    raise GradingError(f"{what}: {len(expected_lines)} lines expected, {len(got_lines)} written",
                       expected=repr(expected), got=repr(got), hint=hint)


@check("symbolic_context")
def check_symbolic_context(symbolic_context):
    """``symbolic_context(annotation) -> str``: a toy scene as the teacher reads it (``prompts.toy_context``)."""
    from minillava.data.prompts import toy_context
    from minillava.toyworld import make_scene

    hint = ("the five captions (Scene.from_annotation(annotation).captions()), one per line; then an empty "
            "line; then one '<size> <color> <shape>: [x1, y1, x2, y2]' line per object, using its normalised "
            "'box' (not 'pixel_box'), each number with 3 decimals ('0.760', not '0.76'), joined by ', '")
    for seed in (12, 0, 5, 9, 21):   # 4, 4, 1, 2, 3 objects; seed 12 and 0 have coordinates ending in 0
        annotation = make_scene(seed).annotation()
        _first_line_difference(symbolic_context(annotation), toy_context(annotation),
                               what=f"symbolic context of toy scene {seed}", hint=hint)


# Replies a teacher really sends: clean, one reasoning question, messy whitespace, several lines, cut off.
_RAW_REPLIES = (
    "\n\n  Question:   How many circles are there?  \n===\nAnswer:\n\n   There are two circles.   \n\n  ===  \n"
    "Question:\nWhat colour is the cross?\n===\nAnswer:  It is green.\n\n",
    "Question:\nWhich of these shapes would roll best?\n===\nAnswer:\nThe circle would roll best.\n"
    "A circle has no corners, so it rolls smoothly in any direction.\n",
    "Question:\nIs there a red circle?\n===\nAnswer:\nYes, there is one in the bottom right.\n===\n"
    "Question:\nWhat colour is the",
)


@check("parse_conversation")
def check_parse_conversation(parse_conversation):
    """``parse_conversation(raw) -> [{"from": "human"|"gpt", "value"}, ...]`` like ``parse.parse_blocks``."""
    import random

    from minillava.data.parse import parse_blocks
    from minillava.data.teachers import rule_response
    from minillava.toyworld import make_scene

    hint = ("split the reply at lines that hold only '==='; a block starting 'Question:' is a human turn, "
            "'Answer:' a gpt turn; the value is the text after the label, stripped of surrounding spaces "
            "and blank lines (line breaks inside it stay); a question with no answer after it is dropped")
    replies = [rule_response("conversation", make_scene(12).annotation(), random.Random(0)),
               rule_response("complex", make_scene(4).annotation(), random.Random(0)), *_RAW_REPLIES]
    for number, raw in enumerate(replies, 1):
        pairs, _ = parse_blocks(raw)
        expected = [turn for q, a in pairs for turn in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
        got = parse_conversation(raw)
        what = f"conversation parsed from reply {number} ({raw[:40]!r}...)"
        if not isinstance(got, list):
            raise GradingError(f"{what}: expected a list of turns", got=type(got).__name__, hint=hint)
        if len(got) != len(expected):
            raise GradingError(f"{what}: wrong number of turns", expected=len(expected), got=len(got), hint=hint)
        for index, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                raise GradingError(f"{what}: turn {index} differs", expected=e, got=g, hint=hint)


# ------------------------------------------------------------------ chapter 5: LLaVA-1.5 and LLaVA-NeXT

# (height, width) image sizes that separate right from plausibly wrong canvas choices: tall and wide
# ones (a (w, h) mix-up), small ones where every canvas shows all pixels (ties: least waste wins),
# ones whose fit leaves a fraction of a pixel row (only whole pixels count), extreme shapes.
_SIZES_FOR_CANVAS = ((300, 800), (800, 300), (100, 100), (336, 336), (672, 672), (1000, 1000), (480, 640),
                     (1080, 1920), (1920, 1080), (567, 1133), (81, 161), (161, 81), (107, 215), (60, 239),
                     (116, 173), (5, 3), (1, 700), (3000, 40), (64, 64), (192, 256), (256, 192))


def _pinpoint_sets() -> dict[str, list[tuple[int, int]]]:
    from minillava.anyres import default_pinpoints

    return {
        "LLaVA-NeXT's default (tile 336)": default_pinpoints(336),
        "LLaVA-NeXT's default, listed in reverse": default_pinpoints(336)[::-1],
        "LLaVA-NeXT's grids at tile 64": default_pinpoints(64),
        "every grid up to 4x4 tiles of 64": [(r * 64, c * 64) for r in range(1, 5) for c in range(1, 5)],
        "a mixed set at tile 32": [(32, 32), (64, 128), (128, 64), (96, 96), (32, 128)],
    }


@check("select_best_resolution")
def check_select_best_resolution(select_best_resolution):
    """``select_best_resolution(image_size, pinpoints) -> (height, width)``, all sizes (height, width)."""
    import random

    from minillava.anyres import select_best_resolution as reference

    hint = ("sizes are (height, width); for each canvas, scale = min(canvas_w / w, canvas_h / h), effective = "
            "min(int(w * scale) * int(h * scale), w * h) (whole pixels: int() each side), wasted = canvas area - "
            "effective; keep the largest effective, on a tie the smallest wasted, on a full tie the first listed")
    rng = random.Random(0)  # local RNG: leave the notebook's alone
    sizes = list(_SIZES_FOR_CANVAS) + [(rng.randint(1, 1500), rng.randint(1, 1500)) for _ in range(200)]
    for name, pinpoints in _pinpoint_sets().items():
        for size in sizes:
            got = select_best_resolution(size, [tuple(p) for p in pinpoints])
            got = tuple(int(x) for x in got) if isinstance(got, (tuple, list)) else got
            assert_equal(got, reference(size, pinpoints), hint=hint,
                         what=f"canvas for an image of (height, width) {size} with pinpoints {name} {pinpoints}")


# (C, H, W) feature maps and original (height, width) sizes: wide (bands at top and bottom), tall
# (bands left and right), same aspect (nothing cut), odd band widths, and a float edge case where
# 55 * (24 / 88) = 14.999999999999998 must count as 15.
_UNPAD_CASES = (((16, 16), (96, 128)), ((16, 16), (128, 96)), ((16, 16), (500, 500)), ((16, 32), (90, 200)),
                ((32, 16), (200, 90)), ((24, 24), (55, 88)), ((24, 24), (88, 55)), ((8, 24), (47, 376)),
                ((16, 16), (100, 300)), ((16, 16), (300, 100)), ((8, 8), (7, 9)), ((24, 8), (376, 47)),
                ((16, 8), (49, 392)), ((12, 16), (192, 256)))


@check("unpad")
def check_unpad(unpad):
    """``unpad(features, original_size)``: crop the padding bands off a (C, H, W) map, centred."""
    from minillava.anyres import unpad as reference

    gen = torch.Generator().manual_seed(0)
    hint = ("original_size is (height, width). If the image is wider than the map (orig_w / orig_h > W / H) "
            "bands sit at the top and bottom: fitted = int(round(orig_h * (W / orig_w), 7)), "
            "crop (H - fitted) // 2 rows from EACH side (a leftover odd row stays); otherwise the same with "
            "columns. round(x, 7) first, so that 14.999999999999998 counts as 15")
    for map_size, original in _UNPAD_CASES:
        features = torch.randn(3, *map_size, generator=gen)
        expected = reference(features, original)
        what = f"unpad of a (3, {map_size[0]}, {map_size[1]}) map for an original (height, width) {original}"
        got = unpad(features.clone(), original)
        assert_equal(tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__,
                     tuple(expected.shape), what=what + ": shape", hint=hint)
        assert_equal(got, expected, what=what + ": values (which rows and columns were kept)", hint=hint)


def _merge_rows_reference(feature_map: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """(C, H, W) map + (C,) newline -> (H * (W + 1), C), computed by the package's ``merge_tiles``.

    The map is cut into tiles and fed through the very code the model runs, with a canvas of the
    map's own aspect ratio (so unpad keeps everything); the base view's tokens are dropped.
    """
    import math

    from minillava.anyres import merge_tiles

    dim, height, width = feature_map.shape
    p = math.gcd(height, width)
    rows, cols = height // p, width // p
    tiles = feature_map.reshape(dim, rows, p, cols, p).permute(1, 3, 2, 4, 0).reshape(rows * cols, p * p, dim)
    features = torch.cat([torch.zeros(1, p * p, dim), tiles])
    return merge_tiles(features, (height, width), [(rows * p, cols * p)], p, newline)[p * p:]


@check("pack_rows")
def check_pack_rows(pack_rows):
    """``pack_rows(features, newline)``: (C, H, W) + (C,) -> (H * (W + 1), C), a newline ending every row."""
    gen = torch.Generator().manual_seed(0)
    hint = ("read the map row by row (row-major: all of row 0 left to right, then row 1, ...); after the last "
            "feature of EVERY row comes one copy of the newline vector; the result holds one (C,) token per row, "
            "shape (H * (W + 1), C): think of the newline as an extra last column of the map")
    for shape in ((3, 2, 3), (4, 4, 4), (2, 6, 4), (5, 3, 7), (3, 1, 5), (2, 5, 1)):
        features, newline = torch.randn(*shape, generator=gen), torch.randn(shape[0], generator=gen)
        assert_close(pack_rows(features.clone(), newline.clone()), _merge_rows_reference(features, newline),
                     atol=0.0, what=f"sequence packed from a {shape} (C, H, W) map", hint=hint)


# ------------------------------------------------------------------ chapter 8: evaluation


def _assert_number(got: Any, expected: float, *, what: str, hint: str) -> None:
    """Require a real number within 1e-9 of ``expected`` (ints and floats alike; bools and NaN fail)."""
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise GradingError(f"{what}: expected a number", got=f"{got!r} ({type(got).__name__})", hint=hint)
    if not abs(got - expected) <= 1e-9:  # written this way round so that a NaN fails too
        raise GradingError(f"{what} is wrong", expected=round(expected, 6), got=got, hint=hint)


# (predictions, labels): balanced and not, a model that always says yes, one that always says no,
# questions with no "yes" label or no "no" label, a perfect model.
_POPE_CASES = (
    (["yes", "no", "yes", "yes", "no", "no", "yes", "no"], ["yes", "yes", "no", "yes", "no", "no", "yes", "yes"]),
    (["yes"] * 6, ["yes", "no", "yes", "no", "yes", "no"]),
    (["no"] * 6, ["yes", "no", "yes", "no", "yes", "no"]),
    (["yes", "no", "yes", "no"], ["yes", "yes", "yes", "yes"]),
    (["no", "no", "yes"], ["no", "no", "no"]),
    (["no", "no"], ["no", "no"]),
    (["yes", "no", "no", "yes", "no"], ["yes", "no", "no", "yes", "no"]),
    (["yes", "yes", "yes", "no"], ["yes", "no", "no", "no"]),
)


@check("pope_metrics")
def check_pope_metrics(pope_metrics):
    """``pope_metrics(predictions, labels) -> dict`` with accuracy, precision, recall, f1, yes_ratio."""
    import random

    from minillava.eval.pope import metrics as reference

    hint = ('"yes" is the positive class: tp = yes predicted for a yes label, fp = yes for a no label, fn = no '
            "for a yes label; precision = tp / (tp + fp), recall = tp / (tp + fn), f1 = 2 * precision * recall / "
            "(precision + recall) (the harmonic mean, not the average); yes_ratio = share of PREDICTIONS that are "
            "yes; any ratio whose denominator is 0 is 0.0 (an all-no model must not crash)")
    rng = random.Random(0)  # local RNG: leave the notebook's alone
    labels = [rng.choice(["yes", "no"]) for _ in range(40)]
    cases = [*_POPE_CASES, ([rng.choice(["yes", "yes", "no"]) for _ in labels], labels)]
    for predictions, labels in cases:
        got = pope_metrics(list(predictions), list(labels))
        expected = reference(predictions, labels)
        what = f"pope_metrics(predictions={predictions}, labels={labels})"
        if len(predictions) > 8:
            what = f"pope_metrics on {len(predictions)} seeded random answers"
        if not isinstance(got, dict):
            raise GradingError(f"{what}: expected a dict", got=type(got).__name__, hint=hint)
        for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            if key not in got:
                raise GradingError(f"{what}: the key {key!r} is missing", got=sorted(got), hint=hint)
            _assert_number(got[key], expected[key], what=f'{what}["{key}"]', hint=hint)


_CHAIR_VOCAB = {  # a COCO-like vocabulary: single words, irregular plurals listed as synonyms
    "person": ["person", "man", "woman", "men", "women", "people", "child", "children"],
    "dog": ["dog", "dogs", "puppy", "puppies"],
    "cat": ["cat", "cats", "kitten", "kittens"],
    "car": ["car", "cars", "taxi", "taxis"],
    "bench": ["bench", "benches"],
}
# (descriptions, objects really there): synonyms, repeats, capitals and punctuation, a description
# with no object word, whole words only ("category" and "scattered" hold no cat).
_CHAIR_CASES = (
    (["A man walks a dog past a bench.", "Two kittens sleep on a car.", "A woman and a child sit on a bench."],
     [["person", "dog", "bench"], ["cat"], ["person"]]),
    (["A dog chases a cat. Another dog barks at the cat, and more dogs join.", "People wait for a taxi.",
      "An empty street in the rain."],
     [["cat"], ["person", "car"], ["car"]]),
    (["Puppies, puppies everywhere!", "The CAR is parked; a Man leans on it.", "A category of scattered data.",
      "Children feed a kitten while their dog watches."],
     [["dog"], ["person"], [], ["person", "dog"]]),
    (["", "Nothing but sky."], [["dog"], []]),
)


@check("chair_scores")
def check_chair_scores(chair_scores):
    """``chair_scores(descriptions, present_objects, vocab) -> (chair_i, chair_s)`` like ``chair.chair``."""
    from minillava.eval.assistants import HallucinatingDescriber
    from minillava.eval.chair import Vocabulary, chair
    from minillava.eval.scenes import DESCRIBE_PROMPT, eval_seeds, scene_annotation, scene_image
    from minillava.toyworld import SYNONYMS

    hint = ("find the words of each description (lowercase, whole words); a word mentions the object whose list "
            "in vocab contains it (synonyms count: 'puppy' is a dog); count each object ONCE per description; "
            "chair_i = hallucinated objects / mentioned objects, summed over all descriptions (0.0 if nothing is "
            "mentioned); chair_s = descriptions mentioning at least one absent object / all descriptions; "
            "return (chair_i, chair_s) in that order")
    seeds = eval_seeds(12, seed=0)
    describer = HallucinatingDescriber.for_seeds(seeds)
    toy = ([describer.answer(scene_image({"seed": s}), DESCRIBE_PROMPT) for s in seeds],
           [sorted({o["shape"] for o in scene_annotation(s)["objects"]}) for s in seeds])
    cases = [(descriptions, present, _CHAIR_VOCAB) for descriptions, present in _CHAIR_CASES]
    cases.append((*toy, SYNONYMS))
    for descriptions, present, vocab in cases:
        expected = chair(descriptions, present, Vocabulary(vocab))
        got = chair_scores(list(descriptions), [list(p) for p in present], {k: list(v) for k, v in vocab.items()})
        what = (f"chair_scores(descriptions={descriptions}, present_objects={present})" if vocab is _CHAIR_VOCAB
                else "chair_scores on the hallucinating describer's descriptions of 12 toy scenes")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise GradingError(f"{what}: expected a pair (chair_i, chair_s)", got=repr(got), hint=hint)
        for value, key in zip(got, ("chair_i", "chair_s")):
            _assert_number(value, expected[key], what=f"{what}: {key}", hint=hint)


# Judge replies: good first lines, garbage, out-of-range scores, scores below a first line of prose.
_JUDGE_REPLIES = (
    "8 7", "8 7\nAssistant 1 is more detailed, Assistant 2 misses the colour.", "8, 7", "9.5 6\nclose call",
    "  10 1  \n\nAssistant 2 did not answer.", "\n\n7 8\nboth fine", "7,8", "1 10",
    "", "   \n  ", "Assistant 1 is better.", "8", "8 7 6", "eight seven", "Scores: 8 7", "8/10 7/10",
    "Assistant 1: 8\nAssistant 2: 7", "The scores are\n8 7", "I cannot judge this.\nAssistant 1 gets 9 and Assistant 2 gets 4.",
    "11 3", "0 5", "-1 -1", "10.5 9", "nan 7", "inf 5", "7 -2",
)


@check("parse_judgement")
def check_parse_judgement(parse_judgement):
    """``parse_judgement(text) -> (float, float) | None`` like ``judge.parse_scores``."""
    from minillava.eval.judge import parse_scores

    hint = ("read ONLY the first line of the stripped text (never numbers further down); replace commas by spaces "
            "and split it; it must hold exactly two numbers, each between 1 and 10 inclusive; return them as a "
            "tuple of floats; anything else (no text, words, one or three numbers, out of range, nan) is a failed "
            "judgement: return None, never a placeholder such as (-1, -1)")
    for text in _JUDGE_REPLIES:
        expected = parse_scores(text)
        got = parse_judgement(text)
        if isinstance(got, list):
            got = tuple(got)
        what = f"parse_judgement({text!r})"
        if expected is None:
            if got is not None:
                raise GradingError(f"{what}: a failed judgement must be None", expected=None, got=repr(got), hint=hint)
            continue
        if not isinstance(got, tuple) or len(got) != 2:
            raise GradingError(f"{what}: expected a pair of scores", expected=expected, got=repr(got), hint=hint)
        for value, want, which in zip(got, expected, ("first", "second")):
            _assert_number(value, want, what=f"{what}: {which} score", hint=hint)


# ------------------------------------------------------------------ chapter 6: chat templates


def _first_char_difference(got: Any, expected: str, what: str, hint: str) -> None:
    """Require two strings to be equal; otherwise show both around the first differing character."""
    if not isinstance(got, str):
        raise GradingError(f"{what}: expected a str", got=type(got).__name__, hint=hint)
    if got == expected:
        return
    at = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
    window = slice(max(0, at - 25), at + 25)   # enough context to recognise the spot
    raise GradingError(f"{what}: first difference at character {at} (of {len(expected)} expected)",
                       expected=repr(expected[window]), got=repr(got[window]), hint=hint)


# Conversations that separate right from plausibly wrong renderings: default and overridden system
# prompts, one to three rounds, open and closed, <image> at the start, middle, end or alone, braces.
_VICUNA_CASES = (
    ([{"role": "user", "content": "<image>\nWhat is shown?"}], True),
    ([{"role": "user", "content": "What is shown?"}, {"role": "assistant", "content": "A red circle."}], False),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What colour is it? <image>"},
      {"role": "assistant", "content": "Red."}, {"role": "user", "content": "And its shape?"},
      {"role": "assistant", "content": "A circle."}], False),
    ([{"role": "user", "content": "Describe <image> briefly."}, {"role": "assistant", "content": "Two squares."},
      {"role": "user", "content": "How many corners in all?"}], True),
    ([{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "<image>"},
      {"role": "assistant", "content": "circle"}], False),
    ([{"role": "user", "content": "What is {x} plus 1?"}, {"role": "assistant", "content": "It is {x} + 1."},
      {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "You're welcome!"}], False),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is there a cat?\n<image>"}], True),
)


@check("render_vicuna")
def check_render_vicuna(render_vicuna):
    """``render_vicuna(messages, add_generation_prompt=False) -> str`` like ``get_template("vicuna_v1").render``."""
    import copy

    from minillava.conversation import get_template

    hint = ("system prompt (the system message's content if there is one, else the default), then ' '; each user "
            "turn 'USER: ' + content + ' '; each answer 'ASSISTANT: ' + content + '</s>' (no space after </s>); "
            "the generation prompt is 'ASSISTANT:' with no trailing space; in the first user turn, "
            "'<image>\\n' + content.replace('<image>', '').strip() (just '<image>' if nothing is left)")
    vicuna = get_template("vicuna_v1")
    for messages, generation in _VICUNA_CASES:
        expected = vicuna.render(messages, add_generation_prompt=generation)
        got = render_vicuna(copy.deepcopy(messages), add_generation_prompt=generation)
        roles = "/".join(m["role"] for m in messages)
        _first_char_difference(got, expected, hint=hint, what=(
            f"render_vicuna of a {roles} conversation (add_generation_prompt={generation}, first user turn "
            f"{next(m['content'] for m in messages if m['role'] == 'user')!r})"))


# (template, conversation): every template's markers, BOS or none, images, several rounds, and a
# plain caption without an image, whose first segment is already the answer.
_LABEL_CASES = (
    ("vicuna_v1", [{"role": "user", "content": "<image>\nWhat is shown?"},
                   {"role": "assistant", "content": "A red circle."}]),
    ("vicuna_v1", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "How many?"},
                   {"role": "assistant", "content": "Two."}, {"role": "user", "content": "Which colour?"},
                   {"role": "assistant", "content": "Both are blue."}]),
    ("llama_2", [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "3 plus 4 is 7."},
                 {"role": "user", "content": "And 5 plus 5?"}, {"role": "assistant", "content": "10."}]),
    ("chatml", [{"role": "user", "content": "<image>\nIs there a green square?"},
                {"role": "assistant", "content": "No, there is no green square."}]),
    ("llama_3", [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi!"},
                 {"role": "user", "content": "What is a circle?"}, {"role": "assistant", "content": "A round shape."}]),
    ("plain", [{"role": "user", "content": "<image>\nDescribe the image concisely."},
               {"role": "assistant", "content": "A red circle on a white background."}]),
    ("plain", [{"role": "user", "content": ""}, {"role": "assistant", "content": "A blue square."}]),
)


@check("build_labels")
def check_build_labels(build_labels):
    """``build_labels(segments, bos_id) -> (input_ids, labels)`` like ``Template.tokenize``.

    ``segments`` are the ``(ids, is_answer)`` pieces a template cuts a conversation into,
    read back off the package's own labels: its runs of masked and supervised tokens.
    """
    from minillava.backbones import zoo
    from minillava.conversation import IGNORE_INDEX, get_template

    hint = ("input_ids: bos_id first (unless it is None), then every segment's ids in order; labels: -100 for BOS "
            "and every prompt token (system, user turns, role markers, <image>), the token's own id for every "
            "answer token -- the end-of-turn marker at its end included; do not shift (the loss shifts)")
    tokenizer = zoo.load_tokenizer("toy-lm")
    for name, messages in _LABEL_CASES:
        template = get_template(name)
        expected = template.tokenize(messages, tokenizer)
        bos_id = tokenizer.bos_token_id if template.bos else None
        start = 0 if bos_id is None else 1
        segments = []   # maximal runs of masked / supervised tokens after BOS
        for token, label in zip(expected["input_ids"][start:], expected["labels"][start:]):
            is_answer = label != IGNORE_INDEX
            if segments and segments[-1][1] == is_answer:
                segments[-1][0].append(token)
            else:
                segments.append(([token], is_answer))
        got = build_labels([(list(ids), is_answer) for ids, is_answer in segments], bos_id)
        what = (f"build_labels for a {name} conversation of {len(segments)} segments "
                f"({'bos_id ' + str(bos_id) if bos_id is not None else 'no BOS'})")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise GradingError(f"{what}: expected a pair (input_ids, labels)", got=repr(got)[:80], hint=hint)
        for key, value in zip(("input_ids", "labels"), got):
            value = [int(v) for v in value]
            want = expected[key]
            if value != want:
                at = next((i for i, (v, w) in enumerate(zip(value, want)) if v != w), min(len(value), len(want)))
                raise GradingError(f"{what}: {key} differ first at position {at} (lengths: expected {len(want)}, "
                                   f"got {len(value)})", expected=want[max(0, at - 3):at + 4],
                                   got=value[max(0, at - 3):at + 4], hint=hint)


# ------------------------------------------------------------------ chapter 1: the paradigm shift


@check("write_scene")
def check_write_scene(write_scene):
    """``write_scene(annotation) -> str``: a toy scene in words, as the toy LM reads it (``rules.scene_text``)."""
    from minillava.data.rules import scene_text
    from minillava.toyworld import make_scene

    hint = ("'On a <background> background, from left to right: ' then the objects sorted by their box's left "
            "edge x1, each as 'a <size> <color> <shape>' (+ ' with a/an <mark> dot' if it has a mark) + ' ' + its "
            "place, joined 'A', 'A and B', 'A, B and C', then '.'; the place comes from the box centre, with y "
            "growing downwards and the canvas cut in thirds: 'in the top left', 'at the top', 'on the left', "
            "'in the centre', ...")
    # Base scenes of 1 to 4 objects, then fine-variant scenes: non-square canvases and dots of every colour.
    scenes = [make_scene(seed) for seed in range(40)] + [make_scene(seed, "fine") for seed in range(10)]
    for scene in scenes:
        annotation = scene.annotation()
        expected = scene_text(annotation)   # before the learner's code runs, in case it edits the dict
        got = write_scene(annotation)
        what = f"written {scene.variant} scene {scene.seed} ({len(scene.objects)} objects)"
        if not isinstance(got, str):
            raise GradingError(f"{what}: expected a str", got=type(got).__name__, hint=hint)
        if got != expected:
            raise GradingError(f"{what} differs", expected=repr(expected), got=repr(got), hint=hint)


# ------------------------------------------------------------------ chapter 4: two-stage training


@check("param_groups")
def check_param_groups(param_groups):
    """``param_groups(model, lrs) -> list[dict]``: train exactly the groups named in ``lrs``, each at its lr."""
    from minillava.train import GROUPS
    from minillava.backbones.zoo import tiny_random_model

    hint = ("a parameter's group is the first part of its name ('projector.0.weight' -> 'projector'), except "
            "AnyRes's 'image_newline', which trains with the projector; set requires_grad = (group in lrs) for "
            "EVERY parameter (a later stage must unfreeze what an earlier one froze); put the modules of trained "
            "groups in train mode and the others in eval mode; return optimizer groups [{'params': [...], "
            "'lr': ...}] holding the trainable parameters only, each once, at its group's lr")
    model = tiny_random_model(image_mode="anyres")   # AnyRes: has the top-level image_newline parameter
    owner = {id(p): "projector" if name == "image_newline" else name.split(".")[0]
             for name, p in model.named_parameters()}
    # Stage 1, stage 2 (the projector at its own lr), a made-up tower-only stage, stage 2 again: all on one
    # model, so each call starts from what the previous one left.
    stages = ({"projector": 1e-3}, {"projector": 2e-4, "language_model": 2e-5}, {"vision_tower": 1e-5},
              {"language_model": 2e-5, "projector": 2e-5})
    for lrs in stages:
        what = f"param_groups(model, {lrs})"
        groups = param_groups(model, dict(lrs))
        if not isinstance(groups, list) or not all(isinstance(g, dict) and {"params", "lr"} <= set(g) for g in groups):
            raise GradingError(f"{what}: expected a list of dicts with 'params' and 'lr'", got=repr(groups)[:120],
                               hint=hint)
        flags = {group: sorted({p.requires_grad for p in model.parameters() if owner[id(p)] == group})
                 for group in GROUPS}
        assert_equal(flags, {group: [group in lrs] for group in GROUPS}, what=f"{what}: requires_grad per group",
                     hint=hint)
        modes = {group: sorted({m.training for m in getattr(model, group).modules()}) for group in GROUPS}
        assert_equal(modes, {group: [group in lrs] for group in GROUPS},
                     what=f"{what}: module.training per group (train mode = True)", hint=hint)
        placed = [(id(p), g["lr"]) for g in groups for p in g["params"]]
        assert_equal(len(placed), len({i for i, _ in placed}), what=f"{what}: parameters listed (each once)",
                     hint=hint)
        expected = {id(p): lrs[owner[id(p)]] for p in model.parameters() if owner[id(p)] in lrs}
        got = dict(placed)
        if set(got) != set(expected):
            frozen = sorted({owner.get(i, "not a parameter of the model") for i in set(got) - set(expected)})
            missing = sorted({owner[i] for i in set(expected) - set(got)})
            raise GradingError(f"{what}: the optimizer would not hold exactly the trainable parameters",
                               expected=f"the parameters of {sorted(lrs)}",
                               got=f"frozen or foreign ones from {frozen}, missing ones from {missing}", hint=hint)
        wrong_lr = sorted({owner[i] for i in got if got[i] != expected[i]})
        assert_equal(wrong_lr, [], what=f"{what}: groups at a learning rate other than their own", hint=hint)
        torch.optim.AdamW(groups)   # what the trainer does with them
    try:
        param_groups(model, {"vision": 1e-3})
    except ValueError:
        return
    raise GradingError("param_groups(model, {'vision': 1e-3}) returned instead of raising ValueError",
                       hint=f"a misspelt group would silently train nothing: raise ValueError naming the valid "
                            f"groups {GROUPS}")


def _accumulation_case():
    """A tiny model and three micro-batches of very different sizes (3, 4 and 33 supervised tokens)."""
    from minillava.backbones.zoo import tiny_random_model

    gen = torch.Generator().manual_seed(0)
    model = tiny_random_model()
    model.vision_tower.requires_grad_(False)
    image_id = model.config.image_token_id

    def micro_batch(lengths, answers, images):
        ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        for row, (n, k, image) in enumerate(zip(lengths, answers, images)):
            ids[row, :n] = torch.randint(3, image_id, (n,), generator=gen)
            if image:
                ids[row, 1] = image_id
            labels[row, n - k:n], mask[row, :n] = ids[row, n - k:n], 1
        n_images = sum(images)
        pixels = torch.randn(n_images, 3, 32, 32, generator=gen) if n_images else None
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}

    return model, [micro_batch([6, 9], [1, 2], [True, True]), micro_batch([5, 7, 12], [1, 1, 2], [True, False, True]),
                   micro_batch([40], [33], [True])]


@check("token_weighted_accumulation")
def check_token_weighted_accumulation(accumulate):
    """``accumulate(model, micro_batches) -> float``: gradients of one big batch, from uneven micro-batches."""
    from minillava.loss import lm_loss_sum

    hint = ("every supervised token of the whole step weighs the same: backward each micro-batch's loss SUM "
            "(lm_loss_sum(out.logits, out.labels), the spliced labels) and divide once by the supervised tokens "
            "of ALL micro-batches (divide the sums before backward, or the gradients after); never average "
            "per micro-batch or per sample, count labels != -100 (not positions), and do not zero the "
            "gradients between micro-batches")
    model, micro = _accumulation_case()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    # The reference: one backward of (sum of all token losses) / (all supervised tokens).
    sums, counts = zip(*(lm_loss_sum(out.logits, out.labels) for out in (model(**batch) for batch in micro)))
    loss = sum(sums) / sum(counts)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in trainable.items()}
    model.zero_grad(set_to_none=True)

    got_loss = accumulate(model, micro)
    what = "the returned loss (mean over every supervised token of the step)"
    if not isinstance(got_loss, (float, torch.Tensor)):
        raise GradingError(f"{what}: expected a float", got=type(got_loss).__name__, hint=hint)
    assert_close(torch.as_tensor(float(got_loss)), loss.detach(), what=what, hint=hint)
    for name, p in trainable.items():
        if p.grad is None:
            raise GradingError(f"gradient of {name}: none was computed", hint=hint)
        assert_close(p.grad, expected[name], what=f"gradient of {name}", hint=hint, atol=1e-6)


# ------------------------------------------------------------------ chapter 7: data mixing


@check("ratio_sampler")
def check_ratio_sampler(ratio_sample):
    """``ratio_sample(sizes, weights, total, seed) -> [(source, index), ...]``, shares as ``data.mix.mix`` draws them."""
    from minillava.data.mix import Source, mix

    hint = ("give each source round(total * weight / sum of weights) records by the LARGEST REMAINDER (floor every "
            "share, then hand the records still missing to the largest fractional parts, ties to the earlier "
            "source); draw each source's indices from a shuffled pass over its pool, starting a freshly shuffled "
            "pass when one runs out (no index twice before every index once); shuffle the whole list; use "
            "random.Random(seed), never the global RNG")
    sizes = {"captions": 50, "vqa": 30, "text": 20}
    cases = [(sizes, {"captions": 2, "vqa": 1, "text": 1}, 60), (sizes, {"captions": 2, "vqa": 1, "text": 1}, 200),
             ({"a": 10, "b": 10, "c": 10}, {"a": 1, "b": 1, "c": 1}, 10),
             (sizes, {"captions": 3, "vqa": 0, "text": 1}, 41)]
    for sizes, weights, total in cases:
        what = f"ratio_sample({sizes}, {weights}, total={total}, seed=0)"
        drawn = ratio_sample(dict(sizes), dict(weights), total, 0)
        if not isinstance(drawn, list) or not all(isinstance(d, tuple) and len(d) == 2 for d in drawn):
            raise GradingError(f"{what}: expected a list of (source, index) tuples", got=repr(drawn)[:120], hint=hint)
        _, table = mix([Source(name, list(range(size)), weights[name]) for name, size in sizes.items()], total)
        counts = {name: sum(source == name for source, _ in drawn) for name in sizes}
        assert_equal(counts, {row["source"]: row["records"] for row in table}, what=f"{what}: records per source",
                     hint=hint)
        for name, size in sizes.items():
            indices = [i for source, i in drawn if source == name]
            if indices and not all(isinstance(i, int) and 0 <= i < size for i in indices):
                raise GradingError(f"{what}: source {name!r} has indices outside 0..{size - 1}", hint=hint)
            uses = [indices.count(i) for i in range(size)]
            if indices and max(uses) - min(uses) > 1:
                raise GradingError(f"{what}: source {name!r} repeats some records before using others",
                                   expected="each index used floor or ceil of (records / pool) times",
                                   got=f"between {min(uses)} and {max(uses)} times", hint=hint)
            if 0 < len(indices) < size and sorted(indices) == list(range(len(indices))):
                raise GradingError(f"{what}: source {name!r} contributed its first {len(indices)} records",
                                   hint="a source larger than its share gives a random subset: " + hint)
        assert_equal(ratio_sample(dict(sizes), dict(weights), total, 0), drawn,
                     what=f"{what} called twice: the same draw", hint=hint)
    if ratio_sample(dict(sizes), dict(weights), total, 1) == drawn:
        raise GradingError("seed=1 drew exactly what seed=0 drew", hint=hint)
    long = ratio_sample({"captions": 50, "vqa": 30, "text": 20}, {"captions": 2, "vqa": 1, "text": 1}, 200, 0)
    switches = sum(a[0] != b[0] for a, b in zip(long, long[1:]))
    if switches < 50:   # a shuffled list switches source about 125 times; blocks switch twice
        raise GradingError(f"the sources come in blocks ({switches} switches of source in 200 records)",
                           hint="shuffle the whole list, so that every stretch of training sees the mixture")
    for weights in ({"captions": 1, "vqa": -1, "text": 1}, {"captions": 0, "vqa": 0, "text": 0}):
        try:
            ratio_sample({"captions": 50, "vqa": 30, "text": 20}, weights, 10, 0)
        except ValueError:
            continue
        raise GradingError(f"weights {weights} were accepted instead of raising ValueError",
                           hint="weights must be >= 0 with a positive sum: raise ValueError saying so")


def _looking_samples(seed: int, n: int, topics_wanted: tuple[str, ...] | None = None) -> tuple[list, list]:
    """(right, blank): samples of the same toy questions, answered right at random rates per view."""
    import random

    from minillava.eval.failures import topic
    from minillava.eval.scenes import FORMAT_PROMPT, answer_key, eval_seeds, scene_annotation

    rng = random.Random(seed)   # local RNG: leave the notebook's alone
    questions = [q for s in eval_seeds(30, seed=seed) for q, a in answer_key(scene_annotation(s)).items()
                 if a.short is not None and (topics_wanted is None or topic(q) in topics_wanted)]
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
    from minillava.eval.failures import gap_by_topic as reference

    hint = ("group each list by failures.topic(sample['prompt']); per topic, 'with image' and 'blank' are the mean "
            "of result['accuracy'] over that topic's samples in right and in blank, 'gap' = with image - blank, "
            "'n' the number of questions of the topic (once, not counted in both lists); list the topics that "
            "have samples, in the order of failures.TOPICS; raise ValueError unless both lists hold the same "
            "prompts in the same order")
    cases = [_looking_samples(0, 120), _looking_samples(1, 25), _looking_samples(2, 40, ("count", "position")),
             _looking_samples(3, 1)]
    for right, blank in cases:
        what = f"gap_by_topic on {len(right)} questions"
        got = gap_by_topic([dict(s) for s in right], [dict(s) for s in blank])
        expected = reference(right, blank)
        if not isinstance(got, dict):
            raise GradingError(f"{what}: expected a dict of topics", got=type(got).__name__, hint=hint)
        assert_equal(list(got), list(expected), what=f"{what}: the topics, in order", hint=hint)
        for name, row in expected.items():
            if not isinstance(got[name], dict) or sorted(got[name]) != sorted(row):
                raise GradingError(f"{what}: the row of {name!r} must have the keys {sorted(row)}",
                                   got=got[name], hint=hint)
            for key, value in row.items():
                _assert_number(got[name][key], value, what=f"{what}: [{name!r}][{key!r}]", hint=hint)
    right, blank = cases[1]
    for broken, why in ((blank[:-1], "one sample fewer in blank"), (blank[::-1], "blank in another order")):
        try:
            gap_by_topic(right, broken)
        except ValueError:
            continue
        raise GradingError(f"gap_by_topic accepted lists that do not match ({why})", hint=hint)
