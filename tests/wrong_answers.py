"""Plausible wrong answers that every graded checker must reject.

``WRONG`` maps a checker's name (``"projector"`` for ``grading.check_projector``) to a
list of wrong implementations, each passed to the checker the way a learner's would be.
tests/test_course.py requires an entry for every checker that a solution notebook calls,
and a GradingError from the checker for each wrong answer. These are mistakes learners
make (a missing activation, an off-by-one mask, a transposed shape), not random junk.
"""

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- projector
def _mlp(act):
    class Projector(nn.Sequential):
        def __init__(self, vision_dim, text_dim):
            super().__init__(nn.Linear(vision_dim, text_dim), act, nn.Linear(text_dim, text_dim))
    return Projector


class SingleLinear(nn.Linear):  # LLaVA v1's projector, not 1.5's
    def __init__(self, vision_dim, text_dim):
        super().__init__(vision_dim, text_dim)


class GeluAtTheEnd(nn.Sequential):
    def __init__(self, vision_dim, text_dim):
        super().__init__(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim), nn.GELU())


# ---------------------------------------------------------------- splice
def _splice(image_labels, keep_placeholder=False, reverse=False):
    def splice_sample(input_ids, labels, text_embeds, image_features, image_token_id):
        features = list(reversed(image_features)) if reverse else list(image_features)
        embeds, out_labels = [], []
        for i, token in enumerate(input_ids.tolist()):
            if token == image_token_id:
                f = features.pop(0)
                if keep_placeholder:
                    embeds.append(text_embeds[i:i + 1]); out_labels.append(labels[i:i + 1])
                embeds.append(f)
                out_labels.append(torch.full((len(f),), int(labels[i]) if image_labels == "copy" else -100))
            else:
                embeds.append(text_embeds[i:i + 1]); out_labels.append(labels[i:i + 1])
        return torch.cat(embeds), torch.cat(out_labels)
    return splice_sample


# ---------------------------------------------------------------- masked loss
def loss_without_shift(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def loss_over_all_positions(logits, labels):  # masked tokens add 0 but still count
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                ignore_index=-100, reduction="none")
    return per_token.mean()


def loss_mean_of_sample_means(logits, labels):  # weights a token in a short answer more
    return torch.stack([F.cross_entropy(logits[i, :-1], labels[i, 1:], ignore_index=-100)
                        for i in range(len(logits))]).mean()


WRONG = {
    "projector": [_mlp(nn.ReLU()), _mlp(nn.GELU(approximate="tanh")), SingleLinear, GeluAtTheEnd],
    "splice": [_splice("copy"), _splice(-100, keep_placeholder=True), _splice(-100, reverse=True)],
    "masked_loss": [loss_without_shift, loss_over_all_positions, loss_mean_of_sample_means],
}
