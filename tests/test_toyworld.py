"""Tests for minillava.toyworld: determinism, geometry, rendering, captions, statistics, data sets."""

import itertools
import json
import random
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from minillava.toyworld import (BACKGROUNDS, CATEGORIES, COLORS, COMPANIONS, GAP, NUMBER_WORDS,
                                SHAPE_CORNERS, SHAPES, SYNONYMS, Obj, Scene, cooccurrence,
                                iter_scenes, make_scene, render, to_dataset)

VARIANTS = ["base", "fine"]
SEEDS = st.integers(0, 10**6)
COUNT = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}
SHAPE_RE = "|".join(SHAPES)


def two_object_scene(**kw):
    """A large red circle in the top left, a small blue square in the bottom right."""
    return Scene(3, [Obj("circle", "red", "large", (0.05, 0.05, 0.40, 0.40)),
                     Obj("square", "blue", "small", (0.70, 0.70, 0.90, 0.90))], **kw)


def pixels(image):
    return np.asarray(image).astype(int)


# ----------------------------------------------------------------------------
# Vocabulary and determinism

def test_vocabulary_is_consistent():
    assert set(SHAPE_CORNERS) == set(SYNONYMS) == set(SHAPES)
    assert len(CATEGORIES) == len(set(CATEGORIES)) == len(SHAPES) * len(COLORS)
    # Every synonym names exactly one shape, or CHAIR could not map a mention back.
    words = [w for ws in SYNONYMS.values() for w in ws]
    assert len(words) == len(set(words))
    # Object colours are far apart from each other and from every background.
    palette = list(COLORS.values()) + list(BACKGROUNDS.values())
    assert min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(palette, 2)) > 70


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_scene_regardless_of_global_rng(variant):
    random.seed(1)
    np.random.seed(1)
    a = make_scene(42, variant)
    random.seed(2)
    np.random.seed(2)
    b = make_scene(42, variant)
    assert a == b
    assert a.captions() == b.captions()
    assert render(a).tobytes() == render(b).tobytes()


@pytest.mark.parametrize("variant", VARIANTS)
def test_different_seeds_give_different_scenes(variant):
    annotations = {json.dumps(make_scene(s, variant).annotation()) for s in range(50)}
    assert len(annotations) == 50


def test_fine_canvases_vary_in_aspect_ratio():
    assert len({(make_scene(s, "fine").height, make_scene(s, "fine").width) for s in range(30)}) >= 2


# ----------------------------------------------------------------------------
# Geometry and rendering

@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, height=st.integers(24, 300), width=st.integers(24, 300))
def test_render_any_size_draws_each_object_in_its_colour(seed, height, width):
    scene = make_scene(seed)
    image = render(scene, height, width)
    assert image.size == (width, height) and image.mode == "RGB"
    px = pixels(image)
    for o in scene.objects:
        x1, y1, x2, y2 = o.pixel_box(height, width)
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        # Every shape here is filled at its box centre.
        assert tuple(px[(y1 + y2 - 1) // 2, (x1 + x2 - 1) // 2]) == COLORS[o.color], o
    # Corners of the canvas are background: MARGIN keeps shapes off the edge.
    assert tuple(px[0, 0]) == tuple(px[-1, -1]) == BACKGROUNDS[scene.background]


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_never_overlap_at_native_resolution(variant):
    for seed in range(300):
        scene = make_scene(seed, variant)
        assert 1 <= len(scene.objects)
        for a, b in itertools.combinations(scene.objects, 2):
            ax1, ay1, ax2, ay2 = a.pixel_box(scene.height, scene.width)
            bx1, by1, bx2, by2 = b.pixel_box(scene.height, scene.width)
            assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1
            # ...and are separated by at least the normalised GAP (up to 3-decimal rounding).
            gaps = (b.box[0] - a.box[2], a.box[0] - b.box[2], b.box[1] - a.box[3], a.box[1] - b.box[3])
            assert max(gaps) >= GAP - 1e-9


def test_objects_are_square_in_pixels_on_the_native_canvas():
    for seed in range(50):
        for variant in VARIANTS:
            scene = make_scene(seed, variant)
            for o in scene.objects:
                x1, y1, x2, y2 = o.pixel_box(scene.height, scene.width)
                assert abs((x2 - x1) - (y2 - y1)) <= 1


def test_render_draws_the_expected_shape_outlines():
    scene = Scene(0, [Obj(shape, "red", "large", (0.1 + 0.16 * i, 0.3, 0.24 + 0.16 * i, 0.44))
                      for i, shape in enumerate(SHAPES)], height=100, width=100)
    px = pixels(render(scene))
    red = (px == COLORS["red"]).all(-1)
    for o in scene.objects:
        x1, y1, x2, y2 = o.pixel_box(100, 100)
        filled = red[y1:y2, x1:x2].mean()
        corner = red[y1, x1]
        # Only the square fills its box corner; a circle covers pi/4, a diamond and a triangle 1/2.
        assert corner == (o.shape == "square"), o.shape
        expected = {"square": 1.0, "circle": np.pi / 4, "diamond": 0.5, "triangle": 0.5, "cross": 5 / 9}
        assert abs(filled - expected[o.shape]) < 0.12, (o.shape, filled)


# ----------------------------------------------------------------------------
# Relations and counts

def test_relations_of_a_known_scene():
    assert sorted(two_object_scene().relations()) == [(0, "above", 1), (0, "larger than", 1), (0, "left of", 1)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_relations_agree_with_boxes(variant):
    for seed in range(200):
        scene = make_scene(seed, variant)
        rel = set(scene.relations())
        for (i, a), (j, b) in itertools.permutations(enumerate(scene.objects), 2):
            ax1, ay1, ax2, ay2 = a.pixel_box(scene.height, scene.width)
            bx1, by1, bx2, by2 = b.pixel_box(scene.height, scene.width)
            if (i, "left of", j) in rel:
                assert ax2 <= bx1 and (j, "left of", i) not in rel
            if (i, "above", j) in rel:
                assert ay2 <= by1 and (j, "above", i) not in rel
            if (i, "larger than", j) in rel:
                assert (ax2 - ax1) * (ay2 - ay1) >= 2 * (bx2 - bx1) * (by2 - by1)
            # Non-overlapping boxes are always separated along x or y.
            assert {(i, "left of", j), (j, "left of", i), (i, "above", j), (j, "above", i)} & rel


def test_counts():
    scene = Scene(0, [Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2)),
                      Obj("circle", "red", "small", (0.3, 0.3, 0.4, 0.4)),
                      Obj("circle", "blue", "small", (0.5, 0.5, 0.6, 0.6))])
    assert scene.counts() == {"shapes": {"circle": 3}, "categories": {"red circle": 2, "blue circle": 1}}


# ----------------------------------------------------------------------------
# Captions

def test_captions_of_a_known_scene():
    caps = two_object_scene().captions()
    assert caps[0] == "A red circle and a blue square on a white background."
    assert caps[1] == "Two shapes: a large red circle and a small blue square."
    assert caps[2] == "The image contains a circle and a square."
    assert caps[3] in {"A red circle is to the left of a blue square.", "A blue square is to the right of a red circle.",
                       "A red circle is above a blue square.", "A blue square is below a red circle.",
                       "A red circle is larger than a blue square.", "A blue square is smaller than a red circle."}
    assert caps[4] == "A red circle in the top left and a blue square in the bottom right."


def test_captions_group_plurals_articles_and_marks():
    crosses = [Obj("cross", "orange", "small", (x, 0.45, x + 0.1, 0.55), mark="blue") for x in (0.1, 0.75)]
    caps = Scene(0, crosses, background="black", variant="fine").captions()
    assert caps[0] == "Two orange crosses on a black background."
    assert caps[1] == "Two shapes: two small orange crosses with blue dots."
    assert caps[2] == "The image contains two crosses."
    assert caps[3] in {"An orange cross is to the left of an orange cross.",
                       "An orange cross is to the right of an orange cross."}
    assert caps[4] == "An orange cross on the left and an orange cross on the right."
    lone = Scene(0, [Obj("diamond", "green", "small", (0.4, 0.4, 0.6, 0.6), mark="red")], variant="fine")
    assert lone.captions()[1] == "One shape: a small green diamond with a red dot."
    assert lone.captions()[3] == "A lone green diamond sits on a white background."


def mentioned(text, words):
    return {w for w in words if re.search(rf"\b{w}(e?s)?\b", text)}


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, variant=st.sampled_from(VARIANTS))
def test_captions_are_five_distinct_and_truthful(seed, variant):
    scene = make_scene(seed, variant)
    caps = scene.captions()
    assert len(caps) == 5 and len(set(caps)) == 5
    assert caps == make_scene(seed, variant).captions()
    names = {o.name for o in scene.objects}
    colors = {o.color for o in scene.objects} | {o.mark for o in scene.objects if o.mark}
    for cap in caps:
        assert mentioned(cap, CATEGORIES) <= names, cap
        assert mentioned(cap, SHAPES) <= {o.shape for o in scene.objects}, cap
        assert mentioned(cap, COLORS) <= colors, cap
        assert mentioned(cap, BACKGROUNDS) <= {scene.background}, cap
    # Caption 2 counts all objects, and its groups add up per (size, colour, shape).
    assert COUNT[caps[1].split()[0].lower()] == len(scene.objects)
    groups = re.findall(rf"\b(an?|{'|'.join(NUMBER_WORDS)}) (small|large) (\w+) ({SHAPE_RE})", caps[1])
    parsed = {}
    for n, size, color, shape in groups:
        parsed[(size, color, shape)] = parsed.get((size, color, shape), 0) + COUNT[n]
    truth = {}
    for o in scene.objects:
        truth[(o.size, o.color, o.shape)] = truth.get((o.size, o.color, o.shape), 0) + 1
    assert parsed == truth, caps[1]
    # Caption 3 gives the exact count of every shape.
    per_shape = {s: COUNT[n] for n, s in re.findall(rf"\b(an?|{'|'.join(NUMBER_WORDS)}) ({SHAPE_RE})", caps[2])}
    assert per_shape == scene.counts()["shapes"], caps[2]
    # Caption 5 places each object, in order, in the right third of the canvas along x and y.
    places = re.findall(rf"\b(?:an?) (\w+) ({SHAPE_RE}) (?:in|at|on) the ([a-z ]+?)(?=,| and|\.)", caps[4].lower())
    assert [f"{c} {s}" for c, s, _ in places] == [o.name for o in scene.objects], caps[4]
    for (_, _, where), o in zip(places, scene.objects):
        cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
        assert ("top" in where, "bottom" in where) == (cy < 1 / 3, cy > 2 / 3), (caps[4], o)
        assert ("left" in where, "right" in where) == (cx < 1 / 3, cx > 2 / 3), (caps[4], o)
    # Caption 4 states a relation that holds between two objects of the scene.
    m = re.fullmatch(r"An? (\w+ \w+) is (to the left of|to the right of|above|below|larger than|smaller than) "
                     r"an? (\w+ \w+)\.", caps[3])
    if len(scene.objects) > 1:
        assert m, caps[3]
        subj, words, obj = m.groups()
        rel, flip = {"to the left of": ("left of", False), "to the right of": ("left of", True),
                     "above": ("above", False), "below": ("above", True),
                     "larger than": ("larger than", False), "smaller than": ("larger than", True)}[words]
        if flip:
            subj, obj = obj, subj
        objs = scene.objects
        assert any(objs[i].name == subj and objs[j].name == obj for i, r, j in scene.relations() if r == rel)


# ----------------------------------------------------------------------------
# Statistics: skewed frequencies, companion pairs

def test_cooccurrence_counts_scenes_not_objects():
    a = Scene(0, [Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2)),
                  Obj("circle", "red", "small", (0.5, 0.5, 0.6, 0.6)),
                  Obj("square", "blue", "small", (0.1, 0.5, 0.2, 0.6))])
    b = Scene(1, [Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2))])
    frequency, pairs = cooccurrence([a, b])
    assert frequency == {"red circle": 2, "blue square": 1}
    assert pairs == {("blue square", "red circle"): 1}


def test_cooccurrence_is_skewed_and_companions_stick_together():
    frequency, pairs = cooccurrence(make_scene(s) for s in range(2000))
    ranked = [n for n, _ in frequency.most_common()]
    assert frequency[ranked[0]] > 5 * frequency[ranked[-1]]
    companions = {tuple(sorted(p)) for p in COMPANIONS}
    others = [c for p, c in pairs.items() if p not in companions]
    mean_other = sum(others) / len(others)
    for pair in companions:
        assert pairs[pair] > 5 * mean_other, (pair, pairs[pair], mean_other)
        # Seeing one member makes the other likely, unlike for frequency alone.
        assert pairs[pair] > 0.4 * min(frequency[n] for n in pair)


# ----------------------------------------------------------------------------
# Annotation and data sets

@pytest.mark.parametrize("variant", VARIANTS)
def test_annotation_round_trips_through_json(variant):
    for seed in range(20):
        scene = make_scene(seed, variant)
        text = json.dumps(scene.annotation())
        assert Scene.from_annotation(json.loads(text)) == scene
        assert Scene.from_annotation(text) == scene
    ann = make_scene(5, variant).annotation()
    assert set(ann) == {"seed", "variant", "height", "width", "background", "objects", "relations", "counts"}
    o = ann["objects"][0]
    assert o["name"] == f"{o['color']} {o['shape']}"
    assert all(v == round(v, 3) for v in o["box"])
    assert (o["mark"] is not None) == (variant == "fine")


def test_iter_scenes_overrides_the_canvas_consistently():
    rows = list(iter_scenes([1, 2], height=48, width=80))
    assert [r["seed"] for r in rows] == [1, 2]
    for r in rows:
        assert r["image"].size == (80, 48)
        assert (r["annotation"]["height"], r["annotation"]["width"]) == (48, 80)
        px = pixels(r["image"])
        for o in r["annotation"]["objects"]:
            x1, y1, x2, y2 = o["pixel_box"]
            assert tuple(px[(y1 + y2 - 1) // 2, (x1 + x2 - 1) // 2]) == COLORS[o["color"]]
        assert r["captions"] == make_scene(r["seed"]).captions()


def test_to_dataset_stores_images_captions_and_json_annotations():
    ds = to_dataset(range(4), variant="fine")
    assert len(ds) == 4 and set(ds.column_names) == {"seed", "image", "captions", "annotation"}
    row = ds[2]
    assert isinstance(row["image"], Image.Image)
    scene = Scene.from_annotation(row["annotation"])
    assert scene == make_scene(2, "fine")
    assert row["image"].size == (scene.width, scene.height)
    assert pixels(row["image"]).tobytes() == pixels(render(scene)).tobytes()  # PNG is lossless
    assert row["captions"] == scene.captions()


# ----------------------------------------------------------------------------
# Fine variant: detail readable at native resolution, lost at 64x64

def mark_share(scene, size, resample):
    """Per object, the largest fraction of the dot's colour contrast any pixel keeps after resizing."""
    plain = replace(scene, objects=[replace(o, mark=None) for o in scene.objects])
    a, b = (pixels(render(s).resize(size, resample)) for s in (scene, plain))
    diff = np.abs(a - b).sum(-1)
    shares = []
    for o in scene.objects:
        x1, y1, x2, y2 = o.pixel_box(size[1], size[0])
        contrast = np.abs(np.subtract(COLORS[o.mark], COLORS[o.color])).sum()
        shares.append(diff[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1].max() / contrast)
    return shares


@pytest.mark.parametrize("seed", range(8))
def test_fine_marks_survive_in_native_tiles_but_not_at_64px(seed):
    scene = make_scene(seed, "fine")
    native = pixels(render(scene))
    assert scene.height % 64 == 0 and scene.width % 64 == 0
    for o in scene.objects:
        x1, y1, x2, y2 = o.pixel_box(scene.height, scene.width)
        # The 64x64 tile holding the box centre shows the dot in its exact colour.
        ty, tx = (y1 + y2) // 2 // 64 * 64, (x1 + x2) // 2 // 64 * 64
        tile = native[ty:ty + 64, tx:tx + 64]
        assert (tile == COLORS[o.mark]).all(-1).sum() >= 4
    # Squashed to 64x64, no pixel keeps even 40% of the dot's contrast...
    for resample in (Image.Resampling.BICUBIC, Image.Resampling.BILINEAR):
        assert max(mark_share(scene, (64, 64), resample)) < 0.4
    # ...while resizing to the native size keeps all of it.
    assert min(mark_share(scene, (scene.width, scene.height), Image.Resampling.BICUBIC)) == 1.0
    # Rendering straight at 64x64 leaves sub-pixel dots out rather than drawing exact-colour pixels.
    assert render(scene, 64, 64).tobytes() == render(replace(
        scene, objects=[replace(o, mark=None) for o in scene.objects]), 64, 64).tobytes()


# ----------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("size", [(0, 64), (64, -1), (64.0, 64), (True, 64)])
def test_render_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="positive integer"):
        render(make_scene(0), *size)


def test_bad_input_raises_helpful_errors():
    with pytest.raises(ValueError, match="unknown variant 'huge'.*'base', 'fine'"):
        make_scene(0, "huge")
    with pytest.raises(ValueError, match="unknown variant"):
        next(iter_scenes([0], variant="huge"))
    with pytest.raises(ValueError, match="positive integer"):
        next(iter_scenes([0], height=-5))
    with pytest.raises(TypeError, match="seed must be an int"):
        make_scene("7")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        Obj("hexagon", "red", "small", (0.1, 0.1, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown color 'teal'"):
        Obj("circle", "teal", "small", (0.1, 0.1, 0.2, 0.2))
    with pytest.raises(ValueError, match="normalised"):
        Obj("circle", "red", "small", (10, 10, 20, 20))
    with pytest.raises(ValueError, match="at least one object"):
        Scene(0, [])
    with pytest.raises(ValueError, match="missing key 'objects'"):
        Scene.from_annotation({"seed": 0})
    with pytest.raises(ValueError, match="overlap"):
        Scene(0, [Obj("circle", "red", "small", (0.1, 0.1, 0.3, 0.3)), Obj("cross", "blue", "small", (0.2, 0.2, 0.4, 0.4))])
    with pytest.raises(ValueError, match="unknown mark color 'red'"):
        Obj("circle", "red", "small", (0.1, 0.1, 0.2, 0.2), mark="red")
