"""A procedural toy world: seeded scenes of coloured shapes with exact annotations.

LLaVA learns from COCO photos, their five human captions and their object boxes.
This course runs offline on a CPU, so it swaps them for a world it can generate:
each scene is a handful of coloured shapes on a plain background, drawn from an
integer seed. Because we *made* the scene, we know everything about it exactly --
which objects are there, how many, where, and how they relate -- so captions,
instruction data, POPE probes and CHAIR checks all get ground truth for free.

    scene = make_scene(7)              # same seed -> same scene, on any machine
    image = render(scene, 64, 64)      # boxes are normalised: any resolution works
    scene.captions()                   # five true captions, like COCO's five
    scene.annotation()                 # JSON-able: objects, boxes, relations, counts

Two choices matter for later chapters:
* Co-occurrence is not uniform. Some categories are far more common than others
  (CATEGORY_WEIGHTS) and a few pairs show up together on purpose (COMPANIONS), so
  POPE's "popular" and "adversarial" negatives are harder than its "random" ones,
  just as "fork" is a tempting hallucination next to a COCO "dining table".
* The "fine" variant puts small objects on a larger, often non-square canvas, and
  each carries a tiny coloured dot. At native resolution the dot is plain to see;
  squashed to 64x64 it blurs into its object. LLaVA-NeXT's AnyRes tiling closes
  exactly that gap.
"""

import json
import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, NamedTuple

from PIL import Image, ImageDraw


# ----------------------------------------------------------------------------
# Vocabulary

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SHAPE_CORNERS = {"circle": 0, "square": 4, "triangle": 3, "diamond": 4, "cross": 12}
# Pairwise far apart in RGB, so a small encoder (and a nearest-colour test) can tell them apart.
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 210, 30),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 180),
}
# Neutral backgrounds, deliberately not object colours: a colour word in a caption names an object.
BACKGROUNDS = {"white": (255, 255, 255), "gray": (170, 170, 170), "black": (0, 0, 0)}
SIZES = ("small", "large")
CATEGORIES = tuple(f"{color} {shape}" for shape in SHAPES for color in COLORS)
# Object nouns for CHAIR: every word that counts as mentioning a shape, plurals included,
# so a plain word match is enough.
SYNONYMS = {
    "circle": ["circle", "circles", "disc", "discs", "disk", "disks"],
    "square": ["square", "squares", "box", "boxes"],
    "triangle": ["triangle", "triangles"],
    "diamond": ["diamond", "diamonds", "rhombus", "rhombi"],
    "cross": ["cross", "crosses", "plus", "pluses"],
}
RELATIONS = ("left of", "above", "larger than")
# How captions say each relation, forwards and with subject and object swapped.
RELATION_WORDS = {"left of": ("to the left of", "to the right of"), "above": ("above", "below"),
                  "larger than": ("larger than", "smaller than")}
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# ----------------------------------------------------------------------------
# Statistics of the world: skewed frequencies and companion pairs

# A category's weight is its shape weight times its colour weight: red circles are 30x
# as likely as purple crosses, giving POPE's "popular" negatives something to find.
SHAPE_WEIGHTS = {"circle": 5, "square": 4, "triangle": 3, "diamond": 2, "cross": 1}
COLOR_WEIGHTS = {"red": 6, "blue": 5, "green": 4, "yellow": 3, "orange": 2, "purple": 1}
CATEGORY_WEIGHTS = {c: COLOR_WEIGHTS[c.split()[0]] * SHAPE_WEIGHTS[c.split()[1]] for c in CATEGORIES}
# When one member of a pair is drawn, the other joins it with COMPANION_PROB (room permitting):
# these are the pairs POPE's "adversarial" negatives should exploit.
COMPANIONS = (("red circle", "blue square"), ("green triangle", "yellow diamond"),
              ("orange circle", "purple cross"))
COMPANION_PROB = 0.8
_PARTNER = {a: b for pair in COMPANIONS for a, b in (pair, pair[::-1])}


# ----------------------------------------------------------------------------
# Geometry


class Variant(NamedTuple):
    canvases: tuple       # (height, width) choices for the native canvas; one is drawn per seed
    n_objects: tuple      # (min, max) objects drawn per scene
    sides: dict           # size label -> (min, max) side length in native pixels
    marks: bool           # does every object carry a small coloured dot?


VARIANTS = {
    # 64x64 like the course's vision encoder; disjoint side ranges keep "larger than" clear-cut.
    "base": Variant(((64, 64),), (1, 4), {"small": (10, 13), "large": (19, 24)}, False),
    # Canvases that tile into 64x64 crops, >= 3x the base size along each axis so a
    # squashed 64x64 copy blurs the 2 px dots away; objects are 12-16 px.
    "fine": Variant(((192, 256), (256, 192), (256, 256)), (3, 6), {"small": (12, 16)}, True),
}
# The seed spaces: one range per use, disjoint, so that no scene a model is evaluated or
# probed on was ever trained on.
TRAIN_SEEDS = range(0, 1_000_000)             # training data: the backbones, the data engine, the pipeline
EVAL_SEEDS = range(1_000_000, 2_000_000)      # evaluation scenes (eval.scenes.eval_seeds draws from here)
HELDOUT_SEEDS = range(10_000_000, 11_000_000) # scenes that probe the backbones (tests, chapters, gates)

PLACE_EDGES = (1 / 3, 2 / 3)   # where "left"/"top" end and "right"/"bottom" begin, as fractions of the canvas
MARGIN = 0.03          # normalised distance kept free along the canvas edge
GAP = 0.03             # normalised distance kept free between boxes, so counting is unambiguous
MARK_FRACTION = 0.15   # dot diameter as a fraction of its object's side
MIN_MARK_PX = 2        # a dot under 2 px is not drawn: sub-pixel detail is lost at low resolution


def _check_size(height, width):
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}; "
                             f"e.g. render(scene, 64, 64)")


def _apart(a: tuple, b: tuple, gap: float = 0.0) -> bool:
    """Are boxes a and b separated by at least gap along x or along y?"""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _check_in(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class Obj:
    """One shape. box = (x1, y1, x2, y2) as fractions of the canvas width and height."""
    shape: str
    color: str
    size: str
    box: tuple
    mark: str | None = None   # colour of the small dot at its centre (fine variant)

    def __post_init__(self):
        _check_in("shape", self.shape, SHAPES)
        _check_in("color", self.color, tuple(COLORS))
        _check_in("size", self.size, SIZES)
        if self.mark is not None:
            _check_in("mark color", self.mark, tuple(c for c in COLORS if c != self.color))
        b = self.box
        if len(b) != 4 or not (0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1):
            raise ValueError(f"box {self.box} must be normalised (x1, y1, x2, y2) with "
                             f"0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    @property
    def name(self) -> str:
        """The category, e.g. "red circle"."""
        return f"{self.color} {self.shape}"

    def pixel_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in pixels on a height x width canvas; x2, y2 exclusive, at least 1 px."""
        _check_size(height, width)
        x1, y1, x2, y2 = (int(v * n + 0.5) for v, n in zip(self.box, (width, height, width, height)))
        x1, y1 = min(x1, width - 1), min(y1, height - 1)
        return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


@dataclass(frozen=True)
class Scene:
    """A canvas of height x width pixels (its native size) holding non-overlapping objects."""
    seed: int
    objects: tuple
    background: str = "white"
    height: int = 64
    width: int = 64
    variant: str = "base"

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects or not all(isinstance(o, Obj) for o in self.objects):
            raise ValueError("a scene needs at least one object, all of type Obj")
        for i, a in enumerate(self.objects):
            for b in self.objects[i + 1:]:
                # Overlapping shapes would make counts and "left of" ill-defined.
                if not _apart(a.box, b.box):
                    raise ValueError(f"boxes of the {a.name} and the {b.name} overlap; "
                                     f"move one so they are disjoint")
        _check_in("background", self.background, tuple(BACKGROUNDS))
        _check_in("variant", self.variant, tuple(VARIANTS))
        _check_size(self.height, self.width)

    def counts(self) -> dict[str, dict[str, int]]:
        """{"shapes": {"circle": 2, ...}, "categories": {"red circle": 1, ...}}."""
        return {"shapes": dict(Counter(o.shape for o in self.objects)),
                "categories": dict(Counter(o.name for o in self.objects))}

    def relations(self) -> list[tuple[int, str, int]]:
        """All (i, relation, j) facts between objects i and j, relation in RELATIONS.

        "left of" / "above": box i ends before box j starts along x / y. Boxes never overlap,
        so every pair is related one way or another, and no relation depends on a threshold.
        "larger than": sizes come from disjoint side ranges, so the label decides it.
        """
        facts = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if a.box[2] <= b.box[0]:
                    facts.append((i, "left of", j))
                if a.box[3] <= b.box[1]:
                    facts.append((i, "above", j))
                if a.size == "large" and b.size == "small":
                    facts.append((i, "larger than", j))
        return facts

    def annotation(self) -> dict:
        """JSON-serialisable ground truth; boxes normalised to 3 decimals, plus native pixel boxes."""
        return {
            "seed": self.seed, "variant": self.variant, "height": self.height, "width": self.width,
            "background": self.background,
            "objects": [{"name": o.name, "shape": o.shape, "color": o.color, "size": o.size,
                         "mark": o.mark, "box": [round(v, 3) for v in o.box],
                         "pixel_box": list(o.pixel_box(self.height, self.width))} for o in self.objects],
            "relations": [list(r) for r in self.relations()],
            "counts": self.counts(),
        }

    @classmethod
    def from_annotation(cls, annotation: dict | str) -> "Scene":
        """Rebuild a scene from annotation() output (or its JSON string)."""
        ann = json.loads(annotation) if isinstance(annotation, str) else annotation
        try:
            objects = [Obj(o["shape"], o["color"], o["size"], tuple(o["box"]), o.get("mark"))
                       for o in ann["objects"]]
            return cls(ann["seed"], objects, ann["background"], ann["height"], ann["width"], ann["variant"])
        except KeyError as err:
            raise ValueError(f"annotation is missing key {err}; "
                             f"pass a dict made by Scene.annotation()") from None

    def captions(self) -> list[str]:
        """Five true captions in five templates: objects, sizes, shape counts, a relation, positions."""
        objs, n = self.objects, len(self.objects)
        rng = random.Random(f"captions-{self.seed}")  # own stream: captions never shift the scene
        by_name = join_words([noun_phrase(k, shape, color) for (color, shape), k in
                         Counter((o.color, o.shape) for o in objs).items()])
        by_size = join_words([noun_phrase(k, shape, f"{size} {color}", mark) for (size, color, shape, mark), k in
                         Counter((o.size, o.color, o.shape, o.mark) for o in objs).items()])
        by_shape = join_words([noun_phrase(k, shape) for shape, k in Counter(o.shape for o in objs).items()])
        if n == 1:
            relation = f"A lone {objs[0].name} sits on a {self.background} background."
        else:
            i, rel, j = rng.choice(self.relations())
            words, inverse = RELATION_WORDS[rel]
            a, words, b = rng.choice(((objs[i], words, objs[j]), (objs[j], inverse, objs[i])))
            relation = capitalize(f"{article(a.name)} {a.name} is {words} {article(b.name)} {b.name}.")
        return [
            capitalize(f"{by_name} on a {self.background} background."),
            capitalize(f"{NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: {by_size}."),
            f"The image contains {by_shape}.",
            relation,
            capitalize(join_words([f"{article(o.name)} {o.name} {position_words(o)}" for o in objs]) + "."),
        ]


# ----------------------------------------------------------------------------
# Caption helpers (the rule teacher in data/rules.py writes with them too)


def article(word: str) -> str:
    """The indefinite article for ``word``: "an orange", "a red"."""
    return "an" if word[0] in "aeiou" else "a"


def capitalize(text: str) -> str:
    """The text with its first letter upper-cased (the rest untouched, unlike str.capitalize)."""
    return text[0].upper() + text[1:]


def join_words(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def noun_phrase(count: int, shape: str, adjectives: str = "", mark: str | None = None) -> str:
    """'a red circle', 'two small blue squares with green dots'."""
    noun = shape if count == 1 else shape + ("es" if shape.endswith("s") else "s")
    head = f"{adjectives} {noun}".strip()
    if mark:
        head += f" with {article(mark)} {mark} dot" if count == 1 else f" with {mark} dots"
    return f"{article(head)} {head}" if count == 1 else f"{NUMBER_WORDS[count]} {head}"


def position_words(o: Obj) -> str:
    """Coarse position of the box centre on the grid PLACE_EDGES draws (3x3): 'in the top left', 'on the right'..."""
    cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
    low, high = PLACE_EDGES
    row = "top" if cy < low else "bottom" if cy > high else ""
    col = "left" if cx < low else "right" if cx > high else ""
    if row and col:
        return f"in the {row} {col}"
    return f"at the {row}" if row else f"on the {col}" if col else "in the centre"


# ----------------------------------------------------------------------------
# Sampling scenes


def _sample_categories(rng: random.Random, n: int) -> list[str]:
    """n category names: weighted draws, each possibly followed by its companion."""
    names, weights = [], list(CATEGORY_WEIGHTS.values())
    while len(names) < n:
        names.append(rng.choices(CATEGORIES, weights)[0])
        partner = _PARTNER.get(names[-1])
        if partner and len(names) < n and rng.random() < COMPANION_PROB:
            names.append(partner)
    return names


def _place(rng: random.Random, w: float, h: float, taken: list[tuple]) -> tuple | None:
    """A free normalised box of size w x h, or None when rejection sampling finds no room."""
    for _ in range(100):
        x1, y1 = rng.uniform(MARGIN, 1 - MARGIN - w), rng.uniform(MARGIN, 1 - MARGIN - h)
        # Rounded here, so annotation() (3 decimals) describes the scene exactly.
        box = tuple(round(v, 3) for v in (x1, y1, x1 + w, y1 + h))
        if all(_apart(box, t, GAP) for t in taken):
            return box
    return None


def make_scene(seed: int, variant: str = "base") -> Scene:
    """The scene for this seed and variant; deterministic, independent of global RNG state."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _check_in("variant", variant, tuple(VARIANTS))
    spec, rng = VARIANTS[variant], random.Random(f"{variant}-{seed}")
    height, width = rng.choice(spec.canvases)
    background = rng.choice(list(BACKGROUNDS))
    objects = []
    for name in _sample_categories(rng, rng.randint(*spec.n_objects)):
        color, shape = name.split()
        size = rng.choice(list(spec.sides))
        side = rng.uniform(*spec.sides[size])  # in native pixels, so shapes are square on the canvas
        box = _place(rng, side / width, side / height, [o.box for o in objects])
        if box is None:
            continue  # canvas full: a scene with fewer objects is still a valid scene
        mark = rng.choice([c for c in COLORS if c != color]) if spec.marks else None
        objects.append(Obj(shape, color, size, box, mark))
    return Scene(seed, objects, background, height, width, variant)


# ----------------------------------------------------------------------------
# Rendering


def render(scene: Scene, height: int | None = None, width: int | None = None) -> Image.Image:
    """Draw the scene on a fresh height x width RGB canvas (default: its native size).

    Shapes are drawn at the target size, never resized from a fixed canvas. A canvas of
    another aspect ratio than the native one stretches the shapes.
    """
    height = scene.height if height is None else height
    width = scene.width if width is None else width
    _check_size(height, width)
    image = Image.new("RGB", (width, height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        box = o.pixel_box(height, width)
        _draw_shape(draw, o.shape, box, COLORS[o.color])
        if o.mark:
            _draw_mark(draw, box, COLORS[o.mark])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple, fill: tuple):
    """Fill the shape inscribed in the pixel box (x1, y1, x2, y2), x2 and y2 exclusive."""
    x1, y1, x2, y2 = box[0], box[1], box[2] - 1, box[3] - 1   # PIL's corners are inclusive
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=fill)
    elif shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    else:  # cross: two bars, each a third of the box thick
        tx, ty = (x2 - x1) / 3, (y2 - y1) / 3
        draw.rectangle((round(x1 + tx), y1, round(x2 - tx), y2), fill=fill)
        draw.rectangle((x1, round(y1 + ty), x2, round(y2 - ty)), fill=fill)


def _draw_mark(draw: ImageDraw.ImageDraw, box: tuple, fill: tuple):
    """A dot MARK_FRACTION of the box side wide at its centre, left out below MIN_MARK_PX."""
    d = round(MARK_FRACTION * min(box[2] - box[0], box[3] - box[1]))
    if d < MIN_MARK_PX:
        return
    x, y = (box[0] + box[2] - d) // 2, (box[1] + box[3] - d) // 2
    draw.ellipse((x, y, x + d - 1, y + d - 1), fill=fill)


# ----------------------------------------------------------------------------
# Data sets


def iter_scenes(seeds: Iterable[int], *, variant: str = "base", height: int | None = None,
                width: int | None = None) -> Iterator[dict]:
    """Yield {"seed", "image", "annotation", "captions"} per seed.

    height/width override the native canvas; the annotation then describes that canvas,
    so its pixel boxes always match the image.
    """
    for seed in seeds:
        scene = make_scene(seed, variant)
        scene = replace(scene, height=scene.height if height is None else height,
                        width=scene.width if width is None else width)
        yield {"seed": seed, "image": render(scene), "annotation": scene.annotation(),
               "captions": scene.captions()}


def to_dataset(seeds: Iterable[int], **kwargs) -> "datasets.Dataset":  # noqa: F821
    """A datasets.Dataset of iter_scenes(seeds, **kwargs); "annotation" is a JSON string."""
    import datasets  # heavy import, only needed here

    features = datasets.Features({"seed": datasets.Value("int64"), "image": datasets.Image(),
                                  "captions": datasets.List(datasets.Value("string")),
                                  "annotation": datasets.Value("string")})
    rows = [dict(r, annotation=json.dumps(r["annotation"])) for r in iter_scenes(seeds, **kwargs)]
    return datasets.Dataset.from_list(rows, features=features)


def cooccurrence(scenes: Iterable[Scene]) -> tuple[Counter, Counter]:
    """(frequency, pairs): scenes containing each category, and each unordered pair.

    Pair keys are sorted tuples, e.g. ("blue square", "red circle").
    """
    frequency, pairs = Counter(), Counter()
    for scene in scenes:
        names = sorted({o.name for o in scene.objects})
        frequency.update(names)
        pairs.update((a, b) for i, a in enumerate(names) for b in names[i + 1:])
    return frequency, pairs
