"""Token splicing: how an image enters a language model's input sequence.

The text side marks each image with ONE placeholder id (``image_token_id``) in
``input_ids``. Splicing replaces that single position by the image's whole feature
sequence (e.g. 576 projected patch features for CLIP-L/14 at 336 px), so a sample

    [BOS, "USER", ":", <image>, "What", "is", ...]       (T text tokens, 1 placeholder)

becomes an embedding sequence of T - 1 + P positions. Everything that is indexed by
position must follow the expansion: the attention mask, the position ids, and the
labels, which are -100 at every image position (the model never predicts pixels).

Samples in a batch expand by different amounts (0..k images each), so we strip each
sample's padding, splice it, and pad the batch again: on the right for training, on
the left for batched generation (so that every sample's next token sits at the last
position). Truncation to ``max_length`` happens after expansion -- the only moment the
true length is known -- and refuses to cut an image in half.
"""

from dataclasses import dataclass

import torch
from torch import nn

IGNORE_INDEX = -100


@dataclass
class Spliced:
    """The language model's input after splicing; every tensor is (B, L)-shaped.

    embeds: (B, L, D) input embeddings; attention_mask: (B, L) 1 = real, 0 = padding;
    position_ids: (B, L) counting real tokens from 0; labels: (B, L) or None, -100 where
    nothing is supervised; image_mask: (B, L) True at image-feature positions.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    image_mask: torch.Tensor


def splice(
    input_ids: torch.Tensor,
    image_features: list[torch.Tensor],
    embed_tokens: nn.Module,
    image_token_id: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    max_length: int | None = None,
    padding_side: str = "right",
) -> Spliced:
    """Expand each image placeholder into its feature sequence.

    Args:
        input_ids: (B, T) token ids with one ``image_token_id`` per image.
        image_features: one (P_i, D) tensor per image, in the order the placeholders
            appear when reading the batch row by row (P_i may differ between images).
        embed_tokens: the language model's input embedding table.
        attention_mask: (B, T), 1 for real tokens; None means no padding.
        labels: (B, T) next-token targets (-100 = ignore), or None.
        max_length: truncate spliced sequences to this length (never through an image).
        padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    n_placeholders = int((input_ids == image_token_id).sum())
    if n_placeholders != len(image_features):
        raise ValueError(
            f"input_ids hold {n_placeholders} image placeholder(s) (id {image_token_id}) but "
            f"{len(image_features)} image(s) were given; pass exactly one image per placeholder"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    # The placeholder id may lie outside the vocabulary (LLaVA uses -200): look up a
    # harmless id there, the row is replaced anyway.
    text_embeds = embed_tokens(input_ids.masked_fill(input_ids == image_token_id, 0))
    features = iter(f.to(text_embeds.dtype) for f in image_features)

    rows = []  # per sample: (embeds, labels, is_image)
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool()
        ids, emb = input_ids[b][keep], text_embeds[b][keep]
        lab = labels[b][keep] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
        pieces_e, pieces_l, pieces_i, start = [], [], [], 0
        for p in (ids == image_token_id).nonzero().flatten().tolist() + [len(ids)]:
            pieces_e.append(emb[start:p])
            pieces_l.append(lab[start:p])
            pieces_i.append(torch.zeros(p - start, dtype=torch.bool, device=ids.device))
            if p < len(ids):  # an image placeholder: insert its features
                f = next(features)
                pieces_e.append(f)
                pieces_l.append(torch.full((len(f),), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
                pieces_i.append(torch.ones(len(f), dtype=torch.bool, device=ids.device))
            start = p + 1
        row = [torch.cat(pieces_e), torch.cat(pieces_l), torch.cat(pieces_i)]
        if max_length is not None and len(row[0]) > max_length:
            _check_truncation(row[2], max_length, b)
            row = [t[:max_length] for t in row]
        rows.append(row)
    return _pad(rows, labels is not None, padding_side)


def _check_truncation(is_image: torch.Tensor, max_length: int, b: int) -> None:
    """Refuse a cut at max_length that would drop all or part of an image."""
    if is_image[max_length:].any():
        first_lost = int(is_image[max_length:].nonzero()[0]) + max_length
        raise ValueError(
            f"sample {b}: spliced length {len(is_image)} exceeds max_length={max_length} and "
            f"truncation would cut image features (first lost image position {first_lost}); "
            f"raise max_length to at least {int(is_image.nonzero()[-1]) + 1}, shorten the text, "
            "or drop the sample"
        )


def _pad_to(t: torch.Tensor, length: int, fill, side: str) -> torch.Tensor:
    """Pad ``t`` along its first dimension to ``length`` with ``fill`` on ``side``."""
    padding = t.new_full((length - len(t), *t.shape[1:]), fill)
    return torch.cat([padding, t] if side == "left" else [t, padding])


def _pad(rows: list, with_labels: bool, side: str) -> Spliced:
    """Stack variable-length (embeds, labels, is_image) rows into a padded batch."""
    length = max(len(e) for e, _, _ in rows)
    embeds = torch.stack([_pad_to(e, length, 0, side) for e, _, _ in rows])
    labels = torch.stack([_pad_to(lab, length, IGNORE_INDEX, side) for _, lab, _ in rows])
    image_mask = torch.stack([_pad_to(img, length, False, side) for _, _, img in rows])
    ones = [torch.ones(len(e), dtype=torch.long, device=e.device) for e, _, _ in rows]
    mask = torch.stack([_pad_to(o, length, 0, side) for o in ones])
    # Positions count real tokens only, so a left-padded sample starts at position 0.
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return Spliced(embeds, mask, position_ids, labels if with_labels else None, image_mask)
