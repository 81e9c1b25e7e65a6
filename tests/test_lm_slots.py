"""benchmarks/lm_slots.py (issue 19): a slot is one token of the written scene that embeds as the sum of
its words' embeddings, and the training reaches those word rows through it."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import lm_slots  # noqa: E402

import torch  # noqa: E402
from minillava.backbones import zoo  # noqa: E402
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


def test_a_slot_embeds_as_the_sum_of_its_words_and_trains_them():
    base = torch.nn.Embedding(10, 4)
    combos = torch.tensor([[1, 2, -1], [3, 4, 5]])
    embed = lm_slots.SlotEmbedding(base, first_slot=10, combos=combos)
    ids = torch.tensor([[0, 10, 7, 11]])
    out = embed(ids)
    w = base.weight
    torch.testing.assert_close(out[0, 0], w[0])
    torch.testing.assert_close(out[0, 1], w[1] + w[2])
    torch.testing.assert_close(out[0, 2], w[7])
    torch.testing.assert_close(out[0, 3], w[3] + w[4] + w[5])
    out[0, 1].sum().backward()   # only the slot's own words receive its gradient
    touched = (w.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert touched == [1, 2]


def test_the_grid_layout_is_one_slot_per_image_token_with_objects_under_their_centres():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer, "grid")
    grid = lm_slots.GRID
    for seed in range(30):
        ann = make_scene(seed).annotation()
        scene = Scene.from_annotation(ann)
        ids = tokenizer.encode(lm_slots.grid_scene(ann), add_special_tokens=False)
        assert all(i >= first for i in ids)   # nothing but slots: the place is the index
        words = [tokenizer.decode([w for w in combos[i - first].tolist() if w >= 0]).split() for i in ids]
        centres = {lm_slots.centre_token(o.box, grid) for o in scene.objects}
        if len(centres) < len(scene.objects):
            continue   # two objects under one token: that cell writes two slots (rare; not this check's case)
        assert len(ids) == grid * grid
        for cell, w in enumerate(words):
            here = [o for o in scene.objects if lm_slots.centre_token(o.box, grid) == cell]
            assert w == ([here[0].size, here[0].color, here[0].shape] if here else [scene.background])
            if here:   # the cell agrees with the place the world's words give, where they can agree
                row, col = divmod(cell, grid)
                place = lm_slots.lm_layouts._place(here[0])
                assert ("left" in place) == (col == 0) or col == 1
                assert ("top" in place) == (row == 0) or row == 1


def test_scene_captions_put_the_scene_unsupervised_where_stage_1_puts_the_image():
    tokenizer = zoo.load_tokenizer("toy-lm")
    lm_slots.add_slots(tokenizer, "grid")
    documents = lm_slots.slot_documents(60, {}, "grid")
    samples = lm_slots.toy_lm.tokenize_documents(documents, tokenizer)
    before = [dict(input_ids=list(s["input_ids"]), labels=list(s["labels"])) for s in samples]
    changed = lm_slots.scene_captions(documents, samples, "grid", tokenizer)
    plain = [i for i, (template, _) in enumerate(documents) if template == "plain"]
    assert changed == len(plain) > 0
    for i, (old, new) in enumerate(zip(before, samples)):
        if i not in plain:
            assert new == old
            continue
        scene = tokenizer.encode(lm_slots.grid_scene(make_scene(lm_slots.TRAIN_SEEDS[i]).annotation()),
                                 add_special_tokens=False)
        assert new["input_ids"] == old["input_ids"][:1] + scene + old["input_ids"][1:]   # after BOS, as <image>
        assert new["labels"] == old["labels"][:1] + [lm_slots.IGNORE_INDEX] * len(scene) + old["labels"][1:]


def test_grid_cells_give_every_slot_its_own_cell_vector():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer, "grid_cells")
    cell_ids = tokenizer.convert_tokens_to_ids([f"<cell{i}>" for i in range(lm_slots.GRID ** 2)])
    assert max(cell_ids) < first and len(set(cell_ids)) == lm_slots.GRID ** 2   # learnt rows, not slots
    plain = lm_slots.grid_scene(make_scene(3).annotation())
    ids = tokenizer.encode(lm_slots.SCENES["grid_cells"](make_scene(3).annotation()), add_special_tokens=False)
    assert len(ids) == lm_slots.GRID ** 2 == plain.count("<slot:")
    for cell, i in enumerate(ids):   # the same contents as the grid layout, plus the cell's own row
        words = [w for w in combos[i - first].tolist() if w >= 0]
        assert words[-1] == cell_ids[cell]
        assert f"<slot:{tokenizer.decode(words[:-1]).strip()}>" == re.findall(r"<slot:[^>]*>", plain)[cell]


def test_grid_cover_writes_an_object_in_every_cell_it_mostly_covers():
    tokenizer = zoo.load_tokenizer("toy-lm")
    first, combos = lm_slots.add_slots(tokenizer, "grid_cover")
    grid, big = lm_slots.GRID, 0
    cell_ids = tokenizer.convert_tokens_to_ids([f"<cell{i}>" for i in range(grid * grid)])
    for seed in range(40):
        ann = make_scene(seed).annotation()
        scene = Scene.from_annotation(ann)
        ids = tokenizer.encode(lm_slots.cover_scene(ann), add_special_tokens=False)
        assert len(ids) == grid * grid and all(i >= first for i in ids)   # one slot per image token, always
        slots = [[w for w in combos[i - first].tolist() if w >= 0] for i in ids]
        assert [s[-1] for s in slots] == cell_ids   # in raster order, each with its cell's own row
        words = [tokenizer.decode(s[:-1]).split() for s in slots]
        if len({(o.size, o.name) for o in scene.objects}) < len(scene.objects):
            continue   # two objects that write the same slot: which cell is whose is not this check's case
        for o in scene.objects:
            cells = [k for k, w in enumerate(words) if w == [o.size, o.color, o.shape]]
            x1, y1, x2, y2 = o.box   # each of its cells overlaps the object's box
            for k in cells:
                r, c = divmod(k, grid)
                assert x1 < (c + 1) / grid and x2 > c / grid and y1 < (r + 1) / grid and y2 > r / grid
            if o.size == "large":
                assert len(cells) >= 2   # a large object (19-24 px of 64) always spans more than one 16 px token
                big += 1
        assert all(w == [scene.background] for w in words if len(w) == 1)   # the rest is background
    assert big > 5
