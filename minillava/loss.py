"""Masked next-token loss: learn to write the answers, never the question or the image.

Position t of the logits predicts token t + 1, so logits and labels are shifted against
each other by one. Every label set to -100 (system prompt, user turns, role markers,
image positions, padding) is ignored; the loss averages over the *supervised* tokens.

Why a sum/count form as well? With gradient accumulation, averaging per micro-batch and
then over micro-batches weights a token in a short micro-batch more than one in a long
micro-batch. Summing token losses and dividing once by the total number of supervised
tokens of the whole accumulated batch weights every token equally.
"""

import torch
import torch.nn.functional as F

from minillava.splicing import IGNORE_INDEX


def lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropies over supervised tokens, and their count.

    Args:
        logits: (B, L, V) scores for the next token at each position.
        labels: (B, L) target ids aligned with the input (-100 = ignore).
    Returns:
        (loss_sum, n_tokens): a scalar tensor and a Python int.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits (B, L, V) = {tuple(logits.shape)} and labels (B, L) = {tuple(labels.shape)} "
            "disagree; pass the spliced labels returned by the model, not the text labels"
        )
    # Shift: the prediction at position t is scored against the label at t + 1. Shifting the
    # (small) labels left, with -100 for the last position, avoids copying the (large) logits.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)
    scores = logits.reshape(-1, logits.shape[-1]).float()
    loss_sum = F.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, int((targets != IGNORE_INDEX).sum())


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over supervised tokens (a scalar).

    Raises instead of returning a silent 0 when nothing is supervised: that is the
    "tokenization mismatch ... (ignored)" bug of the original code in disguise.
    """
    loss_sum, n_tokens = lm_loss_sum(logits, labels)
    if n_tokens == 0:
        raise ValueError(
            "no supervised tokens: every label is -100, so the loss would be a silent 0; "
            "check the label mask built by the conversation template"
        )
    return loss_sum / n_tokens
