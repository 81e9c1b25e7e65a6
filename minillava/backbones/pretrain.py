"""How the toy foundation models are made: a tokenizer, a CLIP and a language model.

LLaVA trains neither of its backbones. It starts from CLIP (a vision encoder trained
contrastively on 400M image-caption pairs) and Vicuna (LLaMA fine-tuned on chats), and
only teaches the bridge between them. A model trained end to end from random weights
on a CPU learns nothing useful in minutes, so the course ships toy counterparts, made
here from the toy world:

1. a tokenizer: byte-level BPE trained on the toy text, with <image> and the chat
   markers as single special tokens;
2. ``toy-clip``: a vision tower and a text tower trained together with CLIP's
   contrastive loss on rendered scenes and their captions; later stages use only its
   vision tower (``toy-vision``);
3. ``toy-lm``: a LLaMA trained on toy text -- captions, chats, world knowledge, and
   questions answered over *written* scenes in the vicuna_v1 template. That is the
   toy version of Vicuna's skills: stage 1 then only has to make images readable as
   such words, and stage 2 learns fast.

    minillava zoo build            # rewrites minillava/backbones/weights/ (about 47 minutes on a 2-core CPU)
    minillava zoo build --quick    # a few steps of everything, for tests (seconds)

Everything is drawn from fixed seeds in a fixed order, so a rebuild sees the same data;
with one thread (the default) it also gives the same weights on the same machine.
"""

import dataclasses
import json
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (AutoModel, CLIPImageProcessorPil, CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, RegNetConfig, RegNetModel)

from minillava.conversation import IMAGE_MARKER, TEMPLATES, get_template
from minillava.data import rules
from minillava.data.batching import batch_schedule, collate
from minillava.data.prompts import BRIEF_INSTRUCTIONS, DETAIL_INSTRUCTIONS
from minillava.eval.failures import accuracy_by_topic
from minillava.image import CLIP_MEAN, CLIP_STD, normalize
from minillava.splicing import IGNORE_INDEX
from minillava.toyworld import CATEGORIES, COLORS, HELDOUT_SEEDS, SHAPES, TRAIN_SEEDS, VARIANTS, Scene, make_scene, render
from minillava.train import set_lr
from minillava.vision import VisionTower
from minillava.backbones.zoo import MANIFEST, sha256

# ----------------------------------------------------------------------------
# The recipe: every number that decides what gets built

IMAGE_SIZE = 64
# Where later stages read the toy vision tower: its last stage, a 4 x 4 map (16 tokens).
# LLaVA reads CLIP's penultimate layer (-2) because CLIP's last layer is tuned to the
# contrastive objective; the toy tower's last stage is its most informative map, and
# 16 tokens instead of 64 keep the language model's sequences short on a CPU.
VISION_FEATURE_LAYER = -1
MAX_OBJECTS = VARIANTS["base"].n_objects[1]   # a base scene holds 1..4 objects


@dataclass(frozen=True)
class Recipe:
    """Sizes and schedules of one build; FULL ships, QUICK is a smoke test."""
    clip_steps: int
    clip_batch: int
    clip_captions: int   # captions per image and step, each a positive of its own
    clip_lr: float
    clip_label_weight: float   # weight of the auxiliary label loss (see scene_labels)
    lm_documents: int
    lm_steps: int
    lm_batch: int
    lm_lr: float
    seed: int = 0


# The language model's rate is a third of CLIP's on purpose: at 3e-3 a toy-lm learns to copy
# a word of the scene by its kind (a colour, a size) but never which object it belongs to
# ("the size of the *red square*", among four objects); at 1e-3 that binding emerges with
# enough steps (benchmarks/lm_reading.py measures both).
FULL = Recipe(clip_steps=1600, clip_batch=64, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
              lm_documents=40_000, lm_steps=5000, lm_batch=32, lm_lr=1e-3)
QUICK = Recipe(clip_steps=12, clip_batch=16, clip_captions=2, clip_lr=3e-3, clip_label_weight=1.0,
               lm_documents=200, lm_steps=12, lm_batch=8, lm_lr=1e-3)
WARMUP_RATIO = 0.03   # both trainings warm up over 3 % of their steps, then decay (train.set_lr)


# ----------------------------------------------------------------------------
# 1. The tokenizer

# Ids 0..3 are fixed. The end-of-sequence id is deliberately not 2: CLIP's text tower
# takes a config with eos_token_id == 2 for an old checkpoint and then pools at the
# highest token id instead of at the end of the caption.
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", IMAGE_MARKER]
# Every other template's markers are single tokens as well, so any template in
# conversation.py tokenises without merging across its markers.
CHAT_MARKERS = ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<|im_start|>", "<|im_end|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama-3's pre-tokenizer: a word keeps its leading space (" yes"), digits go in groups
# of up to three, newlines are words of their own. Answers in the vicuna template start
# with a space, so the prompt/answer cut is always a word boundary (see conversation.py).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
MAX_VOCAB = 1024


def train_tokenizer(texts: list[str], vocab_size: int = MAX_VOCAB) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``, as a transformers tokenizer.

    Bytes are the base alphabet, so any string tokenises (no unknown token). The toy
    text has only about 300 distinct words: at 1024 entries almost every one of them
    is a single token, with and without its leading space.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + CHAT_MARKERS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[IMAGE_MARKER] + CHAT_MARKERS, model_max_length=1024)
    # So that tokenizer.apply_chat_template renders vicuna_v1, the template the LM learns.
    tokenizer.chat_template = get_template("vicuna_v1").to_jinja()
    return tokenizer


# ----------------------------------------------------------------------------
# 2. The toy text: what the language model reads

def written_scene_turn(annotation: dict, instruction: str) -> str:
    """A user turn with the scene written where LLaVA puts "<image>\\n"."""
    return rules.scene_text(annotation) + "\n" + instruction


def to_messages(pairs: list[tuple[str, str]], annotation: dict | None = None) -> list[dict]:
    """(question, answer) pairs -> messages; the written scene opens the first question."""
    messages = []
    for i, (q, a) in enumerate(pairs):
        if i == 0 and annotation is not None:
            q = written_scene_turn(annotation, q)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages


# Each kind of document: (weight, template, how to write it from a scene and an rng).
DOCUMENT_KINDS = {
    # questions over a written scene, answered in full sentences (LLaVA's conversations)
    "conversation": (4, "vicuna_v1", lambda ann, rng: to_messages(
        rules.conversation_qa(ann, rng, rng.randint(4, 8)), ann)),
    # the same facts in one word, with LLaVA-1.5's format prompt (its VQA data)
    "short_answer": (5, "vicuna_v1", lambda ann, rng: to_messages(
        rules.short_answer_qa(ann, rng, rng.randint(4, 8)), ann)),
    "detail": (1, "vicuna_v1", lambda ann, rng: to_messages(
        [(rng.choice(DETAIL_INSTRUCTIONS), rules.detailed_description(ann, rng))], ann)),
    "reasoning": (1, "vicuna_v1", lambda ann, rng: to_messages([rules.complex_reasoning(ann, rng)], ann)),
    "brief": (1, "vicuna_v1", lambda ann, rng: to_messages(
        [(rng.choice(BRIEF_INSTRUCTIONS), rng.choice(Scene.from_annotation(ann).captions()))], ann)),
    # a caption alone in stage 1's layout ("<image>" + caption + "\n", here without the image)
    "caption": (1, "plain", lambda ann, rng: to_messages(
        [("", rng.choice(Scene.from_annotation(ann).captions()))])),
    # text-only chats: greetings and world knowledge (ShareGPT's place in the LLaVA mix)
    "chat": (1, "vicuna_v1", lambda ann, rng: to_messages(rules.text_only_chat(rng))),
    # many knowledge questions in one chat: more facts per system prompt
    "knowledge": (2, "vicuna_v1", lambda ann, rng: to_messages(rules.knowledge_qa(rng, rng.randint(4, 8)))),
}


def lm_documents(n: int, seed: int = 0) -> list[tuple[str, list[dict]]]:
    """n documents as (template name, messages): the first n training scenes, one each."""
    rng = random.Random(f"lm-documents-{seed}")
    kinds = list(DOCUMENT_KINDS)
    weights = [DOCUMENT_KINDS[k][0] for k in kinds]
    documents = []
    for scene_seed in TRAIN_SEEDS[:n]:
        _, template, write = DOCUMENT_KINDS[rng.choices(kinds, weights)[0]]
        documents.append((template, write(make_scene(scene_seed).annotation(), rng)))
    return documents


def tokenizer_texts(documents: list[tuple[str, list[dict]]]) -> list[str]:
    """The strings the tokenizer learns from: every document as rendered, every template."""
    texts = [get_template(template).render(messages) for template, messages in documents]
    demo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    return texts + [t.render(demo) for t in TEMPLATES.values()]


# ----------------------------------------------------------------------------
# 3. toy-clip: two towers and a contrastive loss

def vision_config() -> RegNetConfig:
    """A three-stage RegNet: 64 px -> 32 (stem) -> 16 -> 8 -> 4.

    Small convolutions with batch norm learn which colour sits on which shape faster
    on a CPU than a ViT of the same cost, which has to assemble shapes from 8-pixel
    patches by attention. hidden_states[-1] is the 4 x 4 map of the last stage: 16
    patch tokens of width 64 (VISION_FEATURE_LAYER); [-2] is the 8 x 8 map before it.
    """
    return RegNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 64],
                        depths=[1, 1, 1], groups_width=8, layer_type="x")


def text_config(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


HEADS_FILE = "heads.safetensors"   # ToyCLIP's own weights: the two projections and the temperature


class ToyCLIP(nn.Module):
    """CLIP at toy scale: a vision tower, a text tower, a projection each, one temperature.

    An image and a caption are each mapped to a unit vector of size ``dim``; their dot
    product, times exp(logit_scale), is how well they match.
    """

    def __init__(self, vision: nn.Module, text: CLIPTextModel, dim: int = 64):
        super().__init__()
        self.vision, self.text = vision, text
        width = vision.config.hidden_sizes[-1]
        self.visual_projection = nn.Linear(width, dim, bias=False)
        self.text_projection = nn.Linear(text.config.hidden_size, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))   # CLIP's initial temperature
        # The auxiliary read-outs (see scene_labels): is each category somewhere in the image
        # (asked of every patch token, the answer is the most confident one: the projector later
        # reads tokens, so each token should know what sits on it), and how many objects.
        self.presence_head = nn.Linear(width, len(CATEGORIES))
        self.count_head = nn.Linear(width, MAX_OBJECTS)

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dim) unit vectors, from the tower's pooled output."""
        return self.image_embeds_and_labels(pixel_values)[0]

    def image_embeds_and_labels(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (B, dim) unit vectors and (B, 30 + 4) label logits (presence, count)."""
        out = self.vision(pixel_values)
        pooled = out.pooler_output.flatten(1)   # a conv tower pools to (B, C, 1, 1)
        tokens = out.last_hidden_state.flatten(2).transpose(1, 2)   # (B, C, h, w) -> (B, h * w, C)
        labels = torch.cat([self.presence_head(tokens).amax(1), self.count_head(pooled)], dim=-1)
        return F.normalize(self.visual_projection(pooled), dim=-1), labels

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids ending in </s> -> (B, dim) unit vectors, from the state at </s>."""
        pooled = self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def save(self, folder: Path) -> None:
        """vision/ and text/ as transformers folders, the projections and temperature beside them."""
        self.vision.save_pretrained(folder / "vision")
        self.text.save_pretrained(folder / "text")
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith(("vision.", "text."))}
        save_file({k: v.contiguous() for k, v in heads.items()}, str(folder / HEADS_FILE))

    @classmethod
    def load(cls, folder: Path) -> "ToyCLIP":
        vision = AutoModel.from_pretrained(folder / "vision", local_files_only=True)
        text = CLIPTextModel.from_pretrained(folder / "text", local_files_only=True)
        heads = load_file(str(folder / HEADS_FILE))
        model = cls(vision, text, dim=heads["visual_projection.weight"].shape[0])
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not name.startswith(("vision.", "text.")):
                    param.copy_(heads[name])
        return model.eval()


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
              hard_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric contrastive loss; image i belongs with text i.

    image, text: (B, D) unit vectors. hard_negatives: (H, D) extra captions that match
    no image -- each a true caption with one object's colour or shape changed. In-batch
    negatives of a small batch rarely differ in a single word, so without them the
    encoder can get away with a bag of colours and a bag of shapes; a caption that
    names the wrong colour *on the right shape* forces it to bind the two.
    """
    candidates = text if hard_negatives is None else torch.cat([text, hard_negatives])
    logits = logit_scale.exp().clamp(max=100) * image @ candidates.T   # (B, B + H)
    target = torch.arange(len(image))
    image_to_text = F.cross_entropy(logits, target)
    text_to_image = F.cross_entropy(logits[:, :len(text)].T, target)
    return (image_to_text + text_to_image) / 2


def _altered_caption(scene: Scene, which: int, rng: random.Random) -> str | None:
    """Caption number ``which`` of the scene with one object recoloured or reshaped.

    None when the change does not show in that caption (e.g. a colour change in the
    shape-count caption).
    """
    i = rng.randrange(len(scene.objects))
    obj = scene.objects[i]
    if rng.random() < 0.5:
        obj = dataclasses.replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
    else:
        obj = dataclasses.replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    altered = dataclasses.replace(scene, objects=scene.objects[:i] + (obj,) + scene.objects[i + 1:])
    caption = altered.captions()[which]
    return None if caption == scene.captions()[which] else caption


def scene_labels(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """What is in each scene: (B, 30) presence of every category (0/1) and (B,) object count - 1.

    CLIP learns these from captions alone, given 400M pairs. In the few minutes a CPU
    gives the toy CLIP, captions teach colours and shapes but bind them slowly, and never
    teach "how many" well (a probe on a contrastive-only tower stayed near the all-absent
    prior). So the tower also trains a linear read-out of its pooled features against the
    scene's own annotation -- the supervised shortcut a toy world can afford. Its weight
    is ``Recipe.clip_label_weight``; 0 gives pure CLIP.
    """
    present = torch.tensor([[c in {o.name for o in s.objects} for c in CATEGORIES] for s in scenes]).float()
    return present, torch.tensor([len(s.objects) - 1 for s in scenes])


def label_loss(logits: torch.Tensor, present: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, 30 + MAX_OBJECTS) logits -> presence BCE plus count cross-entropy.

    The BCE is summed over the 30 categories, not averaged: each is a question of its
    own, and averaged, the rare "present" answers get so little gradient that the
    read-out settles on "absent" for everything (right 92 % of the time).
    """
    k = len(CATEGORIES)
    presence = F.binary_cross_entropy_with_logits(logits[:, :k], present, reduction="none").sum(1).mean()
    return presence + F.cross_entropy(logits[:, k:], count)


def scene_pixels(scenes: list[Scene]) -> torch.Tensor:
    """Scenes -> (B, 3, 64, 64) pixels, normalised as minillava.image does for CLIP."""
    return normalize(np.stack([np.asarray(render(s, IMAGE_SIZE, IMAGE_SIZE)) for s in scenes]), CLIP_MEAN, CLIP_STD)


def caption_batch(tokenizer, captions: list[str]) -> dict:
    """Captions -> padded input_ids / attention_mask, each ending in </s> (where CLIP pools)."""
    return tokenizer([c + tokenizer.eos_token for c in captions], padding=True, return_tensors="pt",
                     add_special_tokens=False)


def embed_captions(model: ToyCLIP, tokenizer, captions: list[str], chunk: int = 96) -> torch.Tensor:
    """Captions -> (N, dim) unit vectors, in the order given.

    A padded batch costs as much as its longest caption times its size, and the five
    kinds of caption differ in length by a factor of three: embedding them in chunks of
    similar length costs about a third less.
    """
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    chunks = [order[i:i + chunk] for i in range(0, len(order), chunk)]
    embeds = torch.cat([model.text_embeds(**caption_batch(tokenizer, [captions[i] for i in c])) for c in chunks])
    return embeds[torch.argsort(torch.tensor(order))]


def train_clip(tokenizer, recipe: Recipe, log=print) -> tuple[ToyCLIP, list[float]]:
    """Contrastive pretraining on fresh scenes every step; returns the model and its losses.

    Step s sees training scenes [s * B, (s + 1) * B). Each image is matched with
    ``recipe.clip_captions`` of its five captions in turn (the vision tower, the costly
    half, runs once for all of them), against hard negative captions of the batch.
    """
    torch.manual_seed(recipe.seed)
    model = ToyCLIP(RegNetModel(vision_config()), CLIPTextModel(text_config(tokenizer)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.clip_lr, weight_decay=0.01)
    rng = random.Random(f"clip-{recipe.seed}")
    losses, B, K = [], recipe.clip_batch, recipe.clip_captions
    for step in range(recipe.clip_steps):
        set_lr(optimizer, recipe.clip_lr, step, recipe.clip_steps, WARMUP_RATIO)
        scenes = [make_scene(s) for s in TRAIN_SEEDS[step * B:(step + 1) * B]]
        picks = [rng.sample(range(5), K) for _ in scenes]
        captions = [s.captions()[p[k]] for k in range(K) for s, p in zip(scenes, picks)]
        altered = [_altered_caption(s, p[k], rng) for k in range(K) for s, p in zip(scenes, picks)]
        text = embed_captions(model, tokenizer, captions + [c for c in altered if c])
        positives, hard = text[:K * B].view(K, B, -1), text[K * B:]
        images, label_logits = model.image_embeds_and_labels(scene_pixels(scenes))
        loss = sum(clip_loss(images, positives[k], model.logit_scale, hard) for k in range(K)) / K
        loss = loss + recipe.clip_label_weight * label_loss(label_logits, *scene_labels(scenes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        _log_progress(log, "clip", step, recipe.clip_steps, losses)
    return model.eval(), losses


# ----------------------------------------------------------------------------
# 4. toy-lm: a LLaMA that reads written scenes

def lm_config(tokenizer) -> LlamaConfig:
    """Two layers of width 128 (0.56M parameters). Deeper reads no better at this budget:
    with the FULL recipe otherwise unchanged (5000 steps), three layers read a written scene
    at 0.74 and four at 0.74 (``scene_reading``, own scene), against 0.79 for two, and four
    take twice as long to train; none of the three binds a size or a relation to the named
    object (2026-11-28, ``benchmarks/lm_reading.py --lm``). Longer does not fix that either:
    10,000 steps over 80,000 documents read at 0.84 (colour 0.55, size 0.58), and the assistant
    trained on it scores VQA 0.730 on 300 other held-out scenes against 0.733 for this one; a
    third of the documents as drills of colour, size, place and relation questions reads worse
    (0.65). The LM reads as well on its training scenes as on held-out ones: it under-learns."""
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=1024, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def tokenize_documents(documents, tokenizer) -> list[dict]:
    """Documents -> {"input_ids", "labels"}: only the answers are supervised, as in Vicuna.

    conversation.py checks every sample against whole-prompt tokenisation, so a
    tokenizer that merged across a prompt/answer boundary would fail the build here.
    """
    return [get_template(template).tokenize(messages, tokenizer) for template, messages in documents]


def train_lm(tokenizer, samples: list[dict], recipe: Recipe, log=print,
             config: LlamaConfig | None = None) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token training on the answers of ``samples``, batches grouped by length.

    config: the model's shape (default: ``lm_config``); experiments try others with the same loop.
    """
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(config or lm_config(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lm_lr, weight_decay=0.01)
    lengths = [len(s["input_ids"]) for s in samples]
    batches, epoch, losses = [], 0, []
    for step in range(recipe.lm_steps):
        if not batches:   # a new epoch: reshuffle, deterministically
            batches = batch_schedule(len(samples), recipe.lm_batch, recipe.seed, epoch, lengths)
            epoch += 1
        batch = collate([samples[i] for i in batches.pop()], tokenizer.pad_token_id)
        set_lr(optimizer, recipe.lm_lr, step, recipe.lm_steps, WARMUP_RATIO)
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        # Logits only where a supervised token is predicted (position t predicts t + 1):
        # the answers are about a third of the tokens, and the output layer is the widest.
        targets = batch["labels"][:, 1:]
        supervised = targets != IGNORE_INDEX
        loss = F.cross_entropy(model.lm_head(hidden[:, :-1][supervised]), targets[supervised])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        _log_progress(log, "lm", step, recipe.lm_steps, losses)
    return model.eval(), losses


# ----------------------------------------------------------------------------
# Shared training helpers

def _log_progress(log, name: str, step: int, total: int, losses: list[float]) -> None:
    every = max(1, total // 10)
    if (step + 1) % every == 0 or step + 1 == total:
        recent = losses[-every:]
        log(f"{name} step {step + 1}/{total}  loss {sum(recent) / len(recent):.3f}")


# ----------------------------------------------------------------------------
# 5. The build

NAMES = ("toy-clip", "toy-vision", "toy-lm")
TOKENIZER_DOCUMENTS = 4000


def build(out_dir: str | Path, recipe: Recipe = FULL, processes: int = 2, threads: int | None = 1,
          log=print) -> dict:
    """Train everything and write out_dir/{toy-clip, toy-vision, toy-lm}/ and a manifest.

    processes: the CLIP and the LM do not depend on each other, so by default they train
    side by side in two processes (a core each on a two-core machine); 1 trains them one
    after the other in this process.
    threads: torch threads per training (None: leave torch's setting). One is the
    default: models this small gain little from a second thread, which on a busy machine
    mostly waits for the first; and one thread makes a rebuild on the same machine give
    the same weights bit for bit.
    Returns a report: first and final losses, vocabulary size, seconds.
    """
    out_dir, start = Path(out_dir), time.perf_counter()
    # The first few thousand documents hold every word of the toy text; the LM's own job
    # writes all of them (the same ones first: lm_documents is one seeded stream).
    tokenizer_documents = lm_documents(min(TOKENIZER_DOCUMENTS, recipe.lm_documents), recipe.seed)
    tokenizer = train_tokenizer(tokenizer_texts(tokenizer_documents))
    log(f"tokenizer: {len(tokenizer)} tokens, learnt from {len(tokenizer_documents)} documents")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build in a scratch folder beside out_dir, so a failed build leaves the old weights as they were.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-building-") as scratch:
        scratch = Path(scratch)
        jobs = [(make_clip, (tokenizer, recipe, scratch, threads)), (make_lm, (tokenizer, recipe, scratch, threads))]
        if processes > 1:
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(job, *args, log=print) for job, args in jobs]   # children print
                clip_losses, lm_losses = [f.result() for f in futures]
        else:
            clip_losses, lm_losses = [job(*args, log=log) for job, args in jobs]
        for name in ("toy-clip", "toy-lm"):
            tokenizer.save_pretrained(scratch / name)
        _install(scratch, out_dir)
    report = {"clip_loss": [clip_losses[0], final_loss(clip_losses)], "lm_loss": [lm_losses[0], final_loss(lm_losses)],
              "vocab_size": len(tokenizer), "seconds": round(time.perf_counter() - start, 1)}
    log(f"built {', '.join(NAMES)} in {out_dir} in {report['seconds']:.0f} s")
    return report


def make_clip(tokenizer, recipe: Recipe, out_dir: Path, threads: int | None = 1, log=print) -> list[float]:
    """Train toy-clip; write it and its vision tower (toy-vision) to out_dir. Returns the losses."""
    with _torch_threads(threads):
        clip, losses = train_clip(tokenizer, recipe, log)
    clip.save(out_dir / "toy-clip")
    clip.vision.save_pretrained(out_dir / "toy-vision")
    # The preprocessing it was trained with, for anyone loading it with transformers' AutoImageProcessor.
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(out_dir / "toy-vision")
    return losses


def make_lm(tokenizer, recipe: Recipe, out_dir: Path, threads: int | None = 1, log=print) -> list[float]:
    """Write the toy text, train toy-lm on it, save it to out_dir. Returns the losses."""
    samples = tokenize_documents(lm_documents(recipe.lm_documents, recipe.seed), tokenizer)
    log(f"lm: {len(samples)} documents, {sum(len(s['input_ids']) for s in samples)} tokens")
    with _torch_threads(threads):
        lm, losses = train_lm(tokenizer, samples, recipe, log)
    lm.save_pretrained(out_dir / "toy-lm")
    return losses


@contextmanager
def _torch_threads(threads: int | None):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def final_loss(losses: list[float]) -> float:
    """The mean of the last tenth of the losses: one batch alone is too noisy to compare."""
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


def _install(scratch: Path, out_dir: Path) -> None:
    """Write the manifest (a SHA-256 per file, checked by zoo.path), then swap the folders in."""
    manifest = {name: {str(f.relative_to(scratch / name)): sha256(f)
                       for f in sorted((scratch / name).rglob("*")) if f.is_file()} for name in NAMES}
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for file in scratch.rglob("*"):
        file.chmod(0o755 if file.is_dir() else 0o644)   # package data, readable by everyone
    for name in (*NAMES, MANIFEST):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)
        os.replace(scratch / name, out_dir / name)


# ----------------------------------------------------------------------------
# 6. How good are they? The quality gates of tests/test_zoo.py

def held_out_scenes(n: int, offset: int = 0) -> list[Scene]:
    return [make_scene(s) for s in HELDOUT_SEEDS[offset:offset + n]]


@torch.no_grad()
def probe_features(vision: nn.Module, scenes: list[Scene], layer: int = VISION_FEATURE_LAYER) -> torch.Tensor:
    """(N, 2C): the tower's tokens as later stages read them, averaged and max-pooled over the image."""
    tower = VisionTower(vision.eval(), feature_layer=layer)
    tokens = torch.cat([tower(scene_pixels(scenes[i:i + 500])) for i in range(0, len(scenes), 500)])
    return torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1)


def fit_linear_probe(x: torch.Tensor, n_train: int, outputs: int, loss_fn, steps: int) -> torch.Tensor:
    """A linear read-out of frozen features: (N, D) rows -> (N - n_train, outputs) test logits.

    The features are standardised with the first ``n_train`` rows' statistics, and one linear
    layer is fitted to those rows by full-batch Adam on ``loss_fn(logits)``; the rest are the test.
    """
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-6)
    torch.manual_seed(0)
    probe = nn.Linear(x.shape[1], outputs)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):   # full batch: thousands of rows of at most a few hundred features
        loss = loss_fn(probe(x[:n_train]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return probe(x[n_train:])


def linear_probe(vision: nn.Module, n_train: int = 5000, n_test: int = 1000, steps: int = 1000) -> dict:
    """What a linear read-out of frozen features knows, on scenes neither it nor the tower saw.

    Trains one linear layer on held-out scenes to predict, per image, the presence of each
    of the 30 categories (colour and shape) and the number of objects; tests it on others.
    Returns presence accuracy per label (mean and worst over the labels), the accuracy of
    always answering "absent" for comparison, and count accuracy.
    """
    scenes = held_out_scenes(n_train + n_test)
    present, count = scene_labels(scenes)
    out = fit_linear_probe(probe_features(vision, scenes), n_train, len(CATEGORIES) + MAX_OBJECTS,
                           lambda logits: label_loss(logits, present[:n_train], count[:n_train]), steps)
    truth = present[n_train:]
    per_label = ((out[:, :len(CATEGORIES)] > 0).float() == truth).float().mean(0)
    return {"presence": per_label.mean().item(), "presence_worst": per_label.min().item(),
            "presence_all_absent": (1 - truth).mean().item(),
            "count": (out[:, len(CATEGORIES):].argmax(-1) == count[n_train:]).float().mean().item()}


def token_position_probe(vision: nn.Module, n_train: int = 2500, n_test: int = 500, steps: int = 300,
                         layer: int = VISION_FEATURE_LAYER) -> dict:
    """Does a token know where it sits? A linear read-out of each token's features alone, asked
    its index in the token grid, on held-out scenes.

    A ViT adds a position embedding to every patch, so its tokens carry their place into every
    feature LLaVA reads; a convolution computes the same features wherever an object is, so only
    the zero padding at the borders tells its tokens apart. The language model sees the tokens in
    order, but its rotary positions are relative: what a token's *features* do not say about
    where it is, the answer to "where is the red circle?" has to recover from attention alone.
    Returns the accuracy over all tokens, per token (rows of the grid) and chance (1 / tokens).
    """
    tower = VisionTower(vision.eval(), feature_layer=layer)
    scenes = held_out_scenes(n_train + n_test, offset=200_000)
    with torch.no_grad():
        tokens = torch.cat([tower(scene_pixels(scenes[i:i + 500])) for i in range(0, len(scenes), 500)])
    n, k, _ = tokens.shape
    x, y = tokens.reshape(n * k, -1), torch.arange(k).repeat(n)
    rows = n_train * k   # every token of the training scenes
    out = fit_linear_probe(x, rows, k, lambda logits: F.cross_entropy(logits, y[:rows]), steps)
    right = (out.argmax(-1) == y[rows:]).float().view(n_test, k).mean(0)
    side = int(k ** 0.5)
    return {"accuracy": right.mean().item(), "chance": 1 / k,
            "by_token": [[round(v, 2) for v in row] for row in right.view(side, -1).tolist()]}


@torch.no_grad()
def retrieval_accuracy(clip: ToyCLIP, tokenizer, n: int = 1024, candidates: int = 32) -> float:
    """Image -> caption retrieval: how often an image's own caption is the best match among
    ``candidates`` captions of held-out scenes (its own and those of the others in its group).

    The caption is the first of the five, which names every object and the background.
    """
    scenes = held_out_scenes(n, offset=100_000)
    hits = 0
    for i in range(0, n, candidates):
        group = scenes[i:i + candidates]
        images = clip.image_embeds(scene_pixels(group))
        captions = embed_captions(clip, tokenizer, [s.captions()[0] for s in group])
        hits += (images @ captions.T).argmax(1).eq(torch.arange(len(group))).sum().item()
    return hits / n


@torch.no_grad()
def answer(lm: LlamaForCausalLM, tokenizer, questions: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, one per question, each asked in a fresh vicuna_v1 chat."""
    template = get_template("vicuna_v1")
    prompts = [[tokenizer.bos_token_id] + tokenizer.encode(
        template.render([{"role": "user", "content": q}], add_generation_prompt=True), add_special_tokens=False)
        for q in questions]
    width = max(map(len, prompts))
    # Left padding: every prompt then ends at the last position, where generation continues.
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = lm.eval().generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return [a.strip() for a in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def knowledge_questions(n: int) -> list[tuple[str, str]]:
    """n (question, answer) text-only knowledge pairs, drawn from rng streams no training data uses."""
    return [rules.knowledge_qa(random.Random(f"held-out-knowledge-{i}"), 1)[0] for i in range(n)]


def knowledge_accuracy(lm: LlamaForCausalLM, tokenizer, n: int = 200) -> float:
    """Exact-match accuracy on n held-out text-only knowledge questions."""
    pairs = knowledge_questions(n)
    predicted = answer(lm, tokenizer, [q for q, _ in pairs])
    return sum(p == a for p, (_, a) in zip(predicted, pairs)) / n


def scene_reading(lm: LlamaForCausalLM, tokenizer, n_scenes: int = 300, questions=None,
                  one_object: bool = False) -> dict:
    """Does the LM read a written scene? Held-out questions asked after their own scene's text
    and after another scene's: what the model reads is the difference.

    questions: (annotation, rng) -> [(question, answer)], default two of rules.short_answer_qa's
    one-word questions per scene. one_object: only scenes with one object (nothing to tell apart).
    Returns {"own scene": {"accuracy", "by_topic"}, "another scene": {...}, "gap", "gap_by_topic",
    "questions"}; each question is asked in a fresh vicuna_v1 chat and scored by exact match.
    """
    questions = questions or (lambda annotation, rng: rules.short_answer_qa(annotation, rng, 2))
    pool = held_out_scenes(20 * n_scenes + 1 if one_object else n_scenes + 1, offset=300_000)
    scenes = [s.annotation() for s in pool if not one_object or len(s.objects) == 1][:n_scenes + 1]
    rng = random.Random("scene-reading")
    items = [(i, q, a) for i in range(n_scenes) for q, a in questions(scenes[i], rng)]
    result = {}
    for name, shift in (("own scene", 0), ("another scene", 1)):
        prompts = [written_scene_turn(scenes[i + shift], q) for i, q, _ in items]
        answers = [a for chunk in range(0, len(prompts), 100)
                   for a in answer(lm, tokenizer, prompts[chunk:chunk + 100], max_new_tokens=8)]
        samples = [{"prompt": q, "result": {"accuracy": float(p == a)}} for p, (_, q, a) in zip(answers, items)]
        result[name] = {"accuracy": sum(s["result"]["accuracy"] for s in samples) / len(samples),
                        "by_topic": {t: v["accuracy"] for t, v in accuracy_by_topic(samples).items()}}
    own, other = result["own scene"], result["another scene"]
    result["gap"] = own["accuracy"] - other["accuracy"]
    result["gap_by_topic"] = {t: own["by_topic"][t] - other["by_topic"][t] for t in own["by_topic"]}
    result["questions"] = len(items)
    return result
