"""Chapter 3, the architecture: the projector, splicing image features into the text, the masked loss."""

import torch
import torch.nn.functional as F

from minillava.course.grading.core import assert_close, assert_equal, check, expect_type, your_code
from minillava.loss import masked_lm_loss
from minillava.splicing import IGNORE_INDEX, splice


@check("projector")
def check_projector(Projector):
    """``Projector(vision_dim, text_dim)`` must be LLaVA-1.5's mlp2x_gelu: Linear, GELU, Linear."""
    hint = "two nn.Linear layers (vision_dim -> text_dim, then text_dim -> text_dim) with nn.GELU() between"
    with your_code(Projector):
        proj = Projector(8, 16)
    expect_type(proj, torch.nn.Module, what="Projector(8, 16)", hint=hint, expected="a torch.nn.Module")
    linears = [m for m in proj.modules() if isinstance(m, torch.nn.Linear)]
    assert_equal([tuple(m.weight.shape) for m in linears], [(16, 8), (16, 16)], what="Linear layer shapes", hint=hint)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    first, second = linears
    # mlp2x_gelu written out on the learner's own weights: what their forward must compute.
    expected = F.linear(F.gelu(F.linear(x, first.weight, first.bias)), second.weight, second.bias)
    with your_code(proj):
        got = proj(x)
    assert_close(got, expected, what="projector output", hint=hint + "; the exact GELU, not tanh or ReLU")


@check("splice")
def check_splice(splice_sample):
    """``splice_sample(input_ids, labels, text_embeds, image_features, image_token_id)`` for one sample."""
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.Embedding(20, 4)
    hint = ("replace each placeholder position by its image's feature rows, in order; labels there are -100; "
            "text rows and labels keep their order")
    for ids in ([1, 5, 6, 7], [1, 19, 5, 6], [1, 5, 19, 6, 19, 7, 8], [19, 2]):
        input_ids = torch.tensor(ids)
        labels = torch.tensor([i * 10 for i in range(len(ids))])
        feats = [torch.randn(3, 4, generator=gen) for _ in range(ids.count(19))]
        text_embeds = table(input_ids.masked_fill(input_ids == 19, 0)).detach()
        want = splice(input_ids[None], feats, table, 19, labels=labels[None])
        with your_code(splice_sample):
            got = splice_sample(input_ids, labels, text_embeds, feats, 19)
        case = f"input_ids {ids} (image token 19)"
        expect_type(got, (tuple, list), what=f"splice_sample for {case}", hint=hint,
                    expected="a pair (embeds, labels)", where=lambda pair: len(pair) == 2)
        embeds, got_labels = got
        assert_close(embeds, want.embeds[0].detach(), what=f"embeddings for {case}", hint=hint)
        assert_equal(got_labels, want.labels[0], what=f"labels for {case}", hint=hint)


@check("masked_loss")
def check_masked_loss(masked_loss):
    """``masked_loss(logits, labels)``: next-token cross-entropy averaged over labels != -100."""
    gen = torch.Generator().manual_seed(0)
    hint = ("shift by one (logits[:, :-1] predict labels[:, 1:]), ignore -100, "
            "and average over the supervised tokens only")
    for supervised in ([0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]):
        logits = torch.randn(2, 6, 7, generator=gen)
        labels = torch.randint(0, 7, (2, 6), generator=gen)
        labels[0][torch.tensor(supervised) == 0] = IGNORE_INDEX
        labels[1, :2] = IGNORE_INDEX
        with your_code(masked_loss):
            got = masked_loss(logits, labels)
        assert_close(got, masked_lm_loss(logits, labels), what="loss", hint=hint)
