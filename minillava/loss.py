"""Masked next-token loss: learn to write the answers, never the question or the image.

Position t of the logits predicts token t + 1, so logits and labels are shifted against
each other by one. Every label set to -100 (system prompt, user turns, role markers,
image positions, padding) is ignored; the loss averages over the *supervised* tokens.

Why a sum/count form as well? With gradient accumulation, averaging per micro-batch and
then over micro-batches weights a token in a short micro-batch more than one in a long
micro-batch. Summing token losses and dividing once by the total number of supervised
tokens of the whole accumulated batch weights every token equally.

Why a lean form for training? The vocabulary logits are the largest tensor of a step: with
Qwen2's 152K vocabulary a 1,088-position sample has 165 M of them, 662 MB in float32, and
the plain loss holds several such copies (the float32 upcast, log-softmax's saved output, their
gradients). Training needs logits only where a token is scored -- never at image, prompt or
padding positions -- and needs them in float32 only one chunk at a time. ``lean_loss_sum``
takes the logits at the supervised positions alone (the model asks its language model for
nothing else: transformers' ``logits_to_keep``) and scores them a chunk at a time, each chunk
recomputed in backward instead of kept.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minillava.errors import UserError
from minillava.splicing import IGNORE_INDEX

# How many logits one chunk of the lean loss upcasts to float32: 2**24 values, 64 MiB (110
# positions of a 152K vocabulary; its backward holds about four such tensors at once). Still
# large enough to keep a GPU busy; the toy models' whole batch is one chunk.
CHUNK_VALUES = 2 ** 24


class DivergenceError(UserError):
    """Training produced a NaN or an infinity (a loss, a gradient or a weight to be saved).

    The message names where, and what to try: a lower learning rate, another precision.
    """


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) labels -> (B, L) targets: position t is scored against the label at t + 1 (-100 at the end).

    Shifting the (small) labels left avoids copying the (large) logits.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


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
    targets = next_token_targets(labels).reshape(-1)
    scores = logits.reshape(-1, logits.shape[-1]).float()
    loss_sum = F.cross_entropy(scores, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, int((targets != IGNORE_INDEX).sum())


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) True where the prediction is scored: the next label is supervised."""
    return next_token_targets(labels) != IGNORE_INDEX


def lean_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``lm_loss_sum`` from the logits at the scored positions only, upcast a chunk at a time.

    Args:
        logits: (N, V) the logits at ``scored_positions(labels)``, in reading order (what a
            transformers causal LM returns for ``logits_to_keep=scored_positions(labels)``).
        labels: (B, L) the spliced labels (-100 = ignore).
    Returns:
        (loss_sum, n_tokens), as ``lm_loss_sum`` on the full logits.
    """
    targets = next_token_targets(labels)[scored_positions(labels)]
    if logits.shape != (len(targets), logits.shape[-1]):
        raise ValueError(f"logits {tuple(logits.shape)} are not one row per scored position ({len(targets)}); "
                         "ask the language model for logits_to_keep=scored_positions(labels)")
    rows = max(1, CHUNK_VALUES // logits.shape[-1])
    recompute = torch.is_grad_enabled() and logits.requires_grad
    loss_sum = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), rows):
        chunk, chunk_targets = logits[start:start + rows], targets[start:start + rows]
        # Recomputed in backward: the chunk's float32 copy and log-softmax are not kept for it.
        loss_sum = loss_sum + (checkpoint(_cross_entropy_sum, chunk, chunk_targets, use_reentrant=False)
                               if recompute else _cross_entropy_sum(chunk, chunk_targets))
    return loss_sum, len(targets)


def _cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="sum")


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
