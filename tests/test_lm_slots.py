"""benchmarks/lm_slots.py (issue 19): the layouts it adds to minillava.backbones.toy_slots' (tested in
tests/test_toy_slots.py) write what they say, with the same slot ids as the package's."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import lm_slots  # noqa: E402

from minillava.backbones import toy_slots, zoo  # noqa: E402
from minillava.toyworld import Scene, make_scene  # noqa: E402


def test_every_object_is_one_slot_token_holding_its_words():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer)
    for seed in range(20):
        ann = make_scene(seed).annotation()
        ids = tokenizer.encode(lm_slots.slot_scene(ann), add_special_tokens=False)
        slots = [i for i in ids if i >= first]
        assert len(slots) == len(ann["objects"])   # one position per object, no more
        objects = sorted(Scene.from_annotation(ann).objects, key=lambda o: o.box[0])
        for slot, o in zip(slots, objects):   # left to right, each slot's words are its object's
            words = [w for w in combos[slot - first].tolist() if w >= 0]
            assert tokenizer.decode(words).split() == [o.size, o.color, o.shape, *lm_slots.lm_layouts._place(o).split()]


def test_the_grid_layout_is_one_slot_per_image_token_with_objects_under_their_centres():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer, "grid")
    grid = toy_slots.GRID
    for seed in range(30):
        ann = make_scene(seed).annotation()
        scene = Scene.from_annotation(ann)
        ids = tokenizer.encode(lm_slots.SCENES["grid"](ann), add_special_tokens=False)
        assert all(i >= first for i in ids)   # nothing but slots: the place is the index
        words = [tokenizer.decode([w for w in combos[i - first].tolist() if w >= 0]).split() for i in ids]
        centres = {toy_slots.centre_token(o.box, grid) for o in scene.objects}
        if len(centres) < len(scene.objects):
            continue   # two objects under one token: that cell writes two slots (rare; not this check's case)
        assert len(ids) == grid * grid
        for cell, w in enumerate(words):
            here = [o for o in scene.objects if toy_slots.centre_token(o.box, grid) == cell]
            assert w == ([here[0].size, here[0].color, here[0].shape] if here else [scene.background])
            if here:   # the cell agrees with the place the world's words give, where they can agree
                row, col = divmod(cell, grid)
                place = lm_slots.lm_layouts._place(here[0])
                assert ("left" in place) == (col == 0) or col == 1
                assert ("top" in place) == (row == 0) or row == 1


def test_grid_cells_give_every_slot_its_own_cell_vector():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer, "grid_cells")
    cell_ids = tokenizer.convert_tokens_to_ids([f"<cell{i}>" for i in range(toy_slots.GRID ** 2)])
    assert max(cell_ids) < first and len(set(cell_ids)) == toy_slots.GRID ** 2   # learnt rows, not slots
    plain = lm_slots.SCENES["grid"](make_scene(3).annotation())
    ids = tokenizer.encode(lm_slots.SCENES["grid_cells"](make_scene(3).annotation()), add_special_tokens=False)
    assert len(ids) == toy_slots.GRID ** 2 == plain.count("<slot:")
    for cell, i in enumerate(ids):   # the same contents as the grid layout, plus the cell's own row
        words = [w for w in combos[i - first].tolist() if w >= 0]
        assert words[-1] == cell_ids[cell]
        assert f"<slot:{tokenizer.decode(words[:-1]).strip()}>" == re.findall(r"<slot:[^>]*>", plain)[cell]




def test_the_grid_layouts_keep_the_slot_ids_of_the_package():
    """So that an LM saved by this script (--save) reads the package's slots, and --init works across layouts."""
    ours, package = zoo.load_tokenizer("toy-lm"), zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(ours, "grid_cells")
    assert (first, combos.tolist()) == tuple(x.tolist() if hasattr(x, "tolist") else x for x in
                                             toy_slots.add_slots(package, toy_slots.slot_combos()))
    assert ours.get_vocab() == package.get_vocab()
    assert lm_slots.SCENES["grid_cover"] is toy_slots.cover_scene
