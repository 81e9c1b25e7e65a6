"""Shared by the comparisons with transformers: one batch in both conventions.

MiniLlava takes ONE placeholder per image and expands it itself; transformers expects
each image already expanded into as many placeholders as the image has tokens.
"""

import itertools

import torch


def batch(samples, counts, image_token_id, side="right"):
    """Ids with one placeholder per image -> (ours, theirs), each a padded (ids, mask).

    counts: tokens per image -- one int for all images, or one per image in reading order.
    """
    counts = itertools.repeat(counts) if isinstance(counts, int) else iter(counts)
    expanded = [sum(([t] * next(counts) if t == image_token_id else [t] for t in s), []) for s in samples]

    def pad(rows):
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            ids[i, sl], mask[i, sl] = torch.tensor(r), 1
        return ids, mask

    return pad(samples), pad(expanded)
