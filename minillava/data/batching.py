"""Batching: padding a list of samples into tensors, and choosing which samples go together.

Padding wastes compute: a batch costs as much as its longest sample times the batch size.
LLaVA's ``group_by_modality_length`` therefore (1) keeps image samples and text-only
samples in separate batches (the two have very different lengths once images are
spliced in) and (2) within a modality, puts samples of similar length together, while
still shuffling the order of the batches so training sees a random stream. We do the
same: shuffle, cut into "mega-batches" of 50 batches, sort each mega-batch by length,
cut it into batches, shuffle the batches. Deterministic given (seed, epoch), which is
what makes an interrupted run resumable exactly.
"""

import torch

from minillava.splicing import IGNORE_INDEX

MEGABATCH = 50


def pad_views(images: list[torch.Tensor]) -> torch.Tensor:
    """AnyRes images of (views_i, C, H, W) -> (N, max views, C, H, W), zero views appended.

    The model reads only as many views as each image's size asks for, so the zeros are
    never seen (transformers lays a batch out the same way).
    """
    batch = images[0].new_zeros((len(images), max(len(v) for v in images), *images[0].shape[1:]))
    for i, views in enumerate(images):
        batch[i, :len(views)] = views
    return batch


def collate(samples: list[dict], pad_token_id: int) -> dict:
    """Right-pad samples into a training batch.

    Each sample: ``input_ids`` and ``labels`` (lists of ints, one placeholder per image)
    and ``pixel_values`` ((n_images, C, H, W) tensor, or None for text only); AnyRes
    samples hold (n_images, views, C, H, W) and ``image_sizes`` [(height, width), ...].
    Returns input_ids / attention_mask / labels as (B, T) tensors and pixel_values as
    (sum of n_images, C, H, W) or None; AnyRes batches pixel_values as (sum of n_images,
    max views, C, H, W) and image_sizes as a (sum of n_images, 2) long tensor.

    A lazily read dataset returns a skip marker ``{"skip": reason, "id": record id}`` for a
    bad record: markers are left out, and listed as ``"skipped": [(reason, id), ...]`` for the
    training loop to count (``batch.pop("skipped", [])``: the key is there only when a marker
    was, so ``model(**collate(samples))`` keeps working). If every sample was skipped, the
    batch is ``{"skipped": [...]}`` alone.
    """
    skipped = [(s["skip"], s["id"]) for s in samples if "skip" in s]
    samples = [s for s in samples if "skip" not in s]
    if not samples:
        return {"skipped": skipped}
    length = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(s["input_ids"]), torch.tensor(s["labels"]), 1
    images = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": None}
    if skipped:
        batch["skipped"] = skipped
    if images and images[0].dim() == 5:   # AnyRes: samples differ in their number of views
        batch["pixel_values"] = pad_views([image for sample in images for image in sample])
        batch["image_sizes"] = torch.tensor([size for s in samples for size in s.get("image_sizes") or []])
    elif images:
        batch["pixel_values"] = torch.cat(images)
    return batch


def batch_schedule(n_samples: int, batch_size: int, seed: int, epoch: int,
                   lengths: list[int] | None = None, has_image: list[bool] | None = None) -> list[list[int]]:
    """The micro-batches of one epoch, as lists of sample indices.

    Without ``lengths``: a plain shuffle cut into batches. With ``lengths`` (and
    ``has_image``): batches grouped by modality and similar length, in shuffled order.
    The last batch of each group may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_samples, generator=g).tolist()
    if lengths is None:
        return [order[i: i + batch_size] for i in range(0, n_samples, batch_size)]
    if len(lengths) != n_samples or (has_image is not None and len(has_image) != n_samples):
        raise ValueError(f"lengths/has_image must have one entry per sample ({n_samples})")
    groups = [[i for i in order if has_image is None or has_image[i] == flag] for flag in (True, False)]
    batches = []
    for group in groups:
        for start in range(0, len(group), batch_size * MEGABATCH):
            mega = sorted(group[start: start + batch_size * MEGABATCH], key=lambda i: -lengths[i])
            batches += [mega[i: i + batch_size] for i in range(0, len(mega), batch_size)]
    shuffle = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in shuffle]
