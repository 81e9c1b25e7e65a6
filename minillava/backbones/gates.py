"""How good are the toy backbones? The quality gates of tests/test_zoo.py.

Each gate measures one skill a later stage builds on, on held-out scenes and questions that
no training saw: what a linear read-out of toy-vision's frozen features knows (presence and
count), whether toy-clip matches an image with its own caption, whether toy-lm knows the
world and reads a written scene. benchmarks/bench_zoo.py prints the measured numbers.
"""

import random

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM

from minillava.backbones.recipe import MAX_OBJECTS, feature_layer
from minillava.backbones.toy_clip import ToyCLIP, embed_captions, label_loss, scene_labels, scene_pixels
from minillava.backbones.toy_lm import answer
from minillava.backbones.toy_text import written_scene_turn
from minillava.data import rules
from minillava.eval.failures import accuracy_by_topic
from minillava.toyworld import CATEGORIES, HELDOUT_SEEDS, Scene, make_scene
from minillava.vision import VisionTower


def held_out_scenes(n: int, offset: int = 0) -> list[Scene]:
    """n scenes no training saw (toyworld.HELDOUT_SEEDS) from ``offset`` on: each gate reads its own stretch."""
    return [make_scene(s) for s in HELDOUT_SEEDS[offset:offset + n]]


def _read_as_later_stages(vision: nn.Module, layer: int | None) -> VisionTower:
    """The tower read at ``layer``; None: where later stages read it (recipe.feature_layer, by its kind)."""
    return VisionTower(vision.eval(), feature_layer=feature_layer(vision.config) if layer is None else layer)


@torch.no_grad()
def probe_features(vision: nn.Module, scenes: list[Scene], layer: int | None = None) -> torch.Tensor:
    """(N, 2C): the tower's tokens as later stages read them (layer None: recipe.feature_layer),
    averaged and max-pooled over the image."""
    tower = _read_as_later_stages(vision, layer)
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


def linear_probe(vision: nn.Module, n_train: int = 5000, n_test: int = 1000, steps: int = 1000,
                 layer: int | None = None) -> dict:
    """What a linear read-out of frozen features knows, on scenes neither it nor the tower saw.

    Trains one linear layer on held-out scenes to predict, per image, the presence of each
    of the 30 categories (colour and shape) and the number of objects; tests it on others.
    Returns presence accuracy per label (mean and worst over the labels), the accuracy of
    always answering "absent" for comparison, and count accuracy.
    """
    scenes = held_out_scenes(n_train + n_test)
    present, count = scene_labels(scenes)
    out = fit_linear_probe(probe_features(vision, scenes, layer), n_train, len(CATEGORIES) + MAX_OBJECTS,
                           lambda logits: label_loss(logits, present[:n_train], count[:n_train]), steps)
    truth = present[n_train:]
    per_label = ((out[:, :len(CATEGORIES)] > 0).float() == truth).float().mean(0)
    return {"presence": per_label.mean().item(), "presence_worst": per_label.min().item(),
            "presence_all_absent": (1 - truth).mean().item(),
            "count": (out[:, len(CATEGORIES):].argmax(-1) == count[n_train:]).float().mean().item()}


def token_position_probe(vision: nn.Module, n_train: int = 2500, n_test: int = 500, steps: int = 300,
                         layer: int | None = None) -> dict:
    """Does a token know where it sits? A linear read-out of each token's features alone, asked
    its index in the token grid, on held-out scenes.

    A ViT adds a position embedding to every patch, so its tokens carry their place into every
    feature LLaVA reads; a convolution computes the same features wherever an object is, so only
    the zero padding at the borders tells its tokens apart. The language model sees the tokens in
    order, but its rotary positions are relative: what a token's *features* do not say about
    where it is, the answer to "where is the red circle?" has to recover from attention alone.
    Returns the accuracy over all tokens, per token (rows of the grid) and chance (1 / tokens);
    layer None reads where later stages do (recipe.feature_layer).
    """
    tower = _read_as_later_stages(vision, layer)
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
