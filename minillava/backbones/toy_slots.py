"""Slots: the written scene as the vision tower shows it, so that toy-lm learns to read image tokens.

An image reaches the language model as one vector per patch, each holding everything about what is
under it. A scene written in words spreads an object over several tokens ("a large yellow square at
the bottom"), and an LM that learns to read those words learns lookups over words, which image tokens
cannot use (issue 19; benchmarks/bench_pipeline.py measures it). So toy-lm can also be pretrained on
scenes written as the tower shows them: GRID x GRID SLOTS in raster order, one per image token, each a
single position whose input vector is the sum of its words' embeddings, the same table the words use:

    <slot:gray cell0><slot:large blue cross cell1><slot:large blue cross cell2><slot:gray cell3>...

A slot holds an object's size, colour and shape, or the background's colour, plus a learnt vector of
its own cell, as a ViT adds a position embedding to every patch. Stage 1 then only has to put each
image token where its slot was. Layouts (``LAYOUTS``), which say which object a cell holds:

    grid_cells  an object in the one cell under its centre, background elsewhere
    grid_cover  an object in every cell it covers most of, as the image tokens show it (the tower's own
                per-token read-out rule, toy_vit.token_targets; a large object is 4-9 slots)

The slots and cell words are added tokens during training only: ``strip`` returns the plain LM with
the tokenizer's own vocabulary, so the shipped toy-lm is an ordinary LlamaForCausalLM.
"""

import copy
import itertools
import random
from dataclasses import replace

import torch
from torch import nn
from transformers import LlamaForCausalLM

from minillava.backbones.recipe import IMAGE_SIZE, SLOT_LAYOUTS, VIT, Recipe
from minillava.backbones.toy_lm import lm_config, tokenize_documents, train_lm
from minillava.backbones.toy_text import DOCUMENT_KINDS, document_messages, lm_documents
from minillava.backbones.toy_vit import centre_token, token_targets
from minillava.data import rules
from minillava.splicing import IGNORE_INDEX
from minillava.toyworld import BACKGROUNDS, CATEGORIES, COLORS, SHAPES, SIZES, TRAIN_SEEDS, Scene, make_scene

GRID = IMAGE_SIZE // VIT.vit_patch   # 4: the ViT's 16 px patches of a 64 px image (the RegNet's last stage is 4 x 4 too)


def slot_token(words) -> str:
    return f"<slot:{' '.join(words)}>"


def cell_word(i: int) -> str:
    """The word that names image-token cell i in a slot (an added token of its own, <cellI>)."""
    return f"cell{i}"


def centre_scene(annotation: dict, grid: int = GRID, cells: bool = True) -> str:
    """grid x grid slots; an object in the cell under its centre (two objects there: two slots).

    cells=False leaves the cell words out: a slot's place is then only its index in the sequence
    (benchmarks/lm_slots.py --layout grid shows that a toy LM does not learn place from that).
    """
    scene = Scene.from_annotation(annotation)
    where = [(cell_word(i),) if cells else () for i in range(grid * grid)]
    slots = [[] for _ in range(grid * grid)]
    for o in sorted(scene.objects, key=lambda o: o.box[0]):
        i = centre_token(o.box, grid)
        slots[i].append(slot_token((o.size, o.color, o.shape, *where[i])))
    return "".join("".join(c) if c else slot_token((scene.background, *where[i])) for i, c in enumerate(slots))


def cover_scene(annotation: dict, grid: int = GRID) -> str:
    """grid x grid slots; an object in every cell it covers most of (at least 15 % of the cell).

    A small object split across four cells may cover 15 % of none (about 1 object in 100): it is
    then written in the cell under its centre, beside whatever that cell holds, so that no object
    of the scene is missing from its written form.
    """
    scene = Scene.from_annotation(annotation)
    cats, sizes, _ = token_targets([scene], grid)
    slots = [[] if int(c) == len(CATEGORIES) else [(SIZES[int(z) - 1], *CATEGORIES[int(c)].split())]
             for c, z in zip(cats[0], sizes[0])]
    for o in scene.objects:
        words = (o.size, o.color, o.shape)
        x1, y1, x2, y2 = o.box
        mine = [r * grid + c for r in range(grid) for c in range(grid)
                if x1 < (c + 1) / grid and x2 > c / grid and y1 < (r + 1) / grid and y2 > r / grid]
        if not any(words in slots[i] for i in mine):
            slots[centre_token(o.box, grid)].append(words)
    return "".join("".join(slot_token((*words, cell_word(i))) for words in cell) if cell
                   else slot_token((scene.background, cell_word(i))) for i, cell in enumerate(slots))


LAYOUTS = {"grid_cells": centre_scene, "grid_cover": cover_scene}
assert tuple(LAYOUTS) == SLOT_LAYOUTS   # the recipe names them (it cannot import this module)


def slot_combos(grid: int = GRID, cells: bool = True) -> list[tuple[str, ...]]:
    """Every slot a grid layout can write, in a fixed order (so a saved LM's slot ids stay valid)."""
    contents = [(b,) for b in BACKGROUNDS] + list(itertools.product(SIZES, COLORS, SHAPES))
    return [(*c, cell_word(i)) for i in range(grid * grid) for c in contents] if cells else contents


class SlotEmbedding(nn.Module):
    """The LM's embedding, except that a slot's id embeds as the sum of its words' embeddings.

    combos[i] lists the word ids of slot i (padded with -1); ids >= first_slot are slots.
    """

    def __init__(self, base: nn.Embedding, first_slot: int, combos: torch.Tensor):
        super().__init__()
        self.base, self.first_slot = base, first_slot
        self.register_buffer("combos", combos, persistent=False)

    @property
    def weight(self):   # tied lm_head and transformers' helpers look for it
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_slot = ids >= self.first_slot
        out = self.base(ids.masked_fill(is_slot, 0))
        if is_slot.any():
            words = self.combos[ids[is_slot] - self.first_slot]   # (n, K)
            vectors = (self.base(words.clamp(min=0)) * (words >= 0)[..., None]).sum(1)
            out = out.masked_scatter(is_slot[..., None], vectors)
        return out


def add_slots(tokenizer, combos: list[tuple[str, ...]], cells: bool = True, grid: int = GRID) -> tuple[int, torch.Tensor]:
    """Add a token per cell word (a learnt row) and one per slot; (first slot id, the slots' word ids).

    Every other word of a slot must already be ONE token of the tokenizer (with its leading space).
    cells=False: no cell words (layouts whose slots do not hold their cell).
    """
    cell_tokens = {cell_word(i): f"<{cell_word(i)}>" for i in range(grid * grid)} if cells else {}
    tokenizer.add_tokens(list(cell_tokens.values()), special_tokens=True)
    first = len(tokenizer)
    tokenizer.add_tokens([slot_token(c) for c in combos], special_tokens=True)
    width = max(map(len, combos))
    word_ids = []
    for combo in combos:
        ids = [[tokenizer.convert_tokens_to_ids(cell_tokens[w])] if w in cell_tokens else
               tokenizer.encode(" " + w, add_special_tokens=False) for w in combo]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"a slot word is not one token of this tokenizer: {combo} -> {ids}")
        word_ids.append([i[0] for i in ids] + [-1] * (width - len(ids)))
    return first, torch.tensor(word_ids)


def drill_documents(n: int, write, seed: int = 0, questions: int = 8) -> list[tuple[str, list[dict]]]:
    """The reading drill: each of the first n training scenes written by write(annotation) (a layout),
    then short-answer questions on it, one chat per scene."""
    rng = random.Random(f"lm-layouts-{seed}")   # benchmarks/lm_layouts.py's drill: the same questions
    documents = []
    for scene_seed in TRAIN_SEEDS[:n]:
        ann = make_scene(scene_seed).annotation()
        messages = document_messages(rules.short_answer_qa(ann, rng, questions))
        messages[0]["content"] = write(ann) + "\n" + messages[0]["content"]
        documents.append(("vicuna_v1", messages))
    return documents


def mix_documents(n: int, write, seed: int = 0, weights: dict[str, float] | None = None) -> list[tuple[str, list[dict]]]:
    """toy_text.lm_documents (the shipped LM's text, its kinds' weights as given), every written scene
    as write(annotation) writes it.

    lm_documents writes scene i of TRAIN_SEEDS as rules.scene_text, deterministically, so the same
    words are found and replaced; documents without a scene (chats, knowledge) stay as they are.
    """
    documents = lm_documents(n, seed, weights)
    for scene_seed, (_, messages) in zip(TRAIN_SEEDS, documents):
        ann = make_scene(scene_seed).annotation()
        messages[0]["content"] = messages[0]["content"].replace(rules.scene_text(ann), write(ann))
    return documents


CAPTION_TEMPLATE = DOCUMENT_KINDS["caption"][1]   # stage 1's layout: "<image>" + caption + "\n"


def scene_captions(documents, samples: list[dict], write, tokenizer) -> int:
    """Put each caption document's scene before its caption, unsupervised, as stage 1 puts the image.

    The toy text's caption documents are stage 1's layout without the image (BOS, caption, newline):
    an LM trained on them learns to caption from nothing. With the slots first, stage 1 asks the LM
    for what it already does (caption the scene in front of it). Returns how many it changed.
    """
    changed = 0
    for scene_seed, (template, _), sample in zip(TRAIN_SEEDS, documents, samples):
        if template != CAPTION_TEMPLATE:
            continue
        scene = tokenizer.encode(write(make_scene(scene_seed).annotation()), add_special_tokens=False)
        bos = int(sample["input_ids"][:1] == [tokenizer.bos_token_id])
        sample["input_ids"][bos:bos] = scene
        sample["labels"][bos:bos] = [IGNORE_INDEX] * len(scene)
        changed += 1
    return changed


def strip(lm, vocab_size: int):
    """The plain LM: its own embedding back in place, rows beyond vocab_size (cells, slots) dropped.

    Nothing else changes: the dropped rows were never a target, so every remaining logit and every
    greedy answer on ordinary text is the same.
    """
    if isinstance(lm.model.embed_tokens, SlotEmbedding):
        lm.model.embed_tokens = lm.model.embed_tokens.base
    lm.resize_token_embeddings(vocab_size, mean_resizing=False)
    lm.config.vocab_size = vocab_size
    return lm


def train_reader(tokenizer, recipe: Recipe, log=print) -> tuple[LlamaForCausalLM, list[float]]:
    """toy-lm pretrained in slots: the reading drill (recipe.lm_drill_steps), then the toy text.

    The slots are added to a copy of the tokenizer; the LM returned is stripped back to the
    tokenizer's own vocabulary. Returns (LM, losses of both trainings).
    """
    reader = copy.deepcopy(tokenizer)
    first, combos = add_slots(reader, slot_combos())
    torch.manual_seed(recipe.seed)   # the fresh LM's weights: the same recipe builds the same LM
    lm = LlamaForCausalLM(lm_config(reader))
    lm.model.embed_tokens = SlotEmbedding(lm.model.embed_tokens, first, combos)
    write = LAYOUTS[recipe.lm_layout]
    documents = mix_documents(recipe.lm_documents, write, recipe.seed, dict(recipe.lm_mix))   # bad lm_mix: fail now
    drill = tokenize_documents(drill_documents(recipe.lm_documents, write, recipe.seed), reader)
    log(f"lm: reading drill, {len(drill)} scenes in slots ({recipe.lm_layout})")
    lm, drill_losses = train_lm(reader, drill, replace(recipe, lm_steps=recipe.lm_drill_steps), log, init=lm)
    samples = tokenize_documents(documents, reader)
    if recipe.lm_scene_captions:
        log(f"lm: {scene_captions(documents, samples, write, reader)} caption documents read their scene")
    lm, losses = train_lm(reader, samples, recipe, log, init=lm)
    return strip(lm, len(tokenizer)), drill_losses + losses
