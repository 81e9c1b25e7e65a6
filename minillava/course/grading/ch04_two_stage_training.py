"""Chapter 4, two-stage training: which parameters each stage trains, and token-weighted accumulation."""

from collections.abc import Iterable

import torch

from minillava.backbones.zoo import tiny_random_model
from minillava.course.grading.core import GradingError, assert_close, assert_equal, check, expect_type, your_code
from minillava.loss import lm_loss_sum
from minillava.splicing import IGNORE_INDEX
from minillava.train import GROUPS


def _optimizer_groups(groups) -> bool:
    """A list of dicts, each with an iterable 'params' and an 'lr': what an optimizer takes."""
    return all(isinstance(g, dict) and {"params", "lr"} <= set(g) and isinstance(g["params"], Iterable)
               for g in groups)


@check("param_groups")
def check_param_groups(param_groups):
    """``param_groups(model, lrs) -> list[dict]``: train exactly the groups named in ``lrs``, each at its lr."""
    hint = ("a parameter's group is the first part of its name ('projector.0.weight' -> 'projector'), except "
            "AnyRes's 'image_newline', which trains with the projector; set requires_grad = (group in lrs) for "
            "EVERY parameter (a later stage must unfreeze what an earlier one froze); put the modules of trained "
            "groups in train mode and the others in eval mode; return optimizer groups [{'params': [...], "
            "'lr': ...}] holding the trainable parameters only, each once, at its group's lr")
    model = tiny_random_model(image_mode="anyres")   # AnyRes: has the top-level image_newline parameter
    owner = {id(p): "projector" if name == "image_newline" else name.split(".")[0]
             for name, p in model.named_parameters()}
    # Stage 1, stage 2 (the projector at its own lr), a made-up tower-only stage, stage 2 again: all on one
    # model, so each call starts from what the previous one left.
    stages = ({"projector": 1e-3}, {"projector": 2e-4, "language_model": 2e-5}, {"vision_tower": 1e-5},
              {"language_model": 2e-5, "projector": 2e-5})
    for lrs in stages:
        what = f"param_groups(model, {lrs})"
        with your_code(param_groups):
            groups = param_groups(model, dict(lrs))
        expect_type(groups, list, what=what, hint=hint, expected="a list of dicts with 'params' and 'lr'",
                    where=_optimizer_groups)
        flags = {group: sorted({p.requires_grad for p in model.parameters() if owner[id(p)] == group})
                 for group in GROUPS}
        assert_equal(flags, {group: [group in lrs] for group in GROUPS}, what=f"{what}: requires_grad per group",
                     hint=hint)
        modes = {group: sorted({m.training for m in getattr(model, group).modules()}) for group in GROUPS}
        assert_equal(modes, {group: [group in lrs] for group in GROUPS},
                     what=f"{what}: module.training per group (train mode = True)", hint=hint)
        placed = [(id(p), g["lr"]) for g in groups for p in g["params"]]
        assert_equal(len(placed), len({i for i, _ in placed}), what=f"{what}: parameters listed (each once)",
                     hint=hint)
        expected = {id(p): lrs[owner[id(p)]] for p in model.parameters() if owner[id(p)] in lrs}
        got = dict(placed)
        if set(got) != set(expected):
            frozen = sorted({owner.get(i, "not a parameter of the model") for i in set(got) - set(expected)})
            missing = sorted({owner[i] for i in set(expected) - set(got)})
            raise GradingError(f"{what}: the optimizer would not hold exactly the trainable parameters",
                               expected=f"the parameters of {sorted(lrs)}",
                               got=f"frozen or foreign ones from {frozen}, missing ones from {missing}", hint=hint)
        wrong_lr = sorted({owner[i] for i in got if got[i] != expected[i]})
        assert_equal(wrong_lr, [], what=f"{what}: groups at a learning rate other than their own", hint=hint)
        try:
            torch.optim.AdamW(groups)   # what the trainer does with them
        except (TypeError, ValueError) as err:
            raise GradingError(f"{what}: torch.optim.AdamW refuses these groups: {err}", hint=hint) from err
    with your_code(param_groups):
        try:
            param_groups(model, {"vision": 1e-3})
        except ValueError:
            return
    raise GradingError("param_groups(model, {'vision': 1e-3}) returned instead of raising ValueError",
                       hint=f"a misspelt group would silently train nothing: raise ValueError naming the valid "
                            f"groups {GROUPS}")


def _accumulation_case():
    """A tiny model and three micro-batches of very different sizes (3, 4 and 33 supervised tokens)."""
    gen = torch.Generator().manual_seed(0)
    model = tiny_random_model()
    model.vision_tower.requires_grad_(False)
    image_id = model.config.image_token_id

    def micro_batch(lengths, answers, images):
        ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for row, (n, k, image) in enumerate(zip(lengths, answers, images)):
            ids[row, :n] = torch.randint(3, image_id, (n,), generator=gen)
            if image:
                ids[row, 1] = image_id
            labels[row, n - k:n], mask[row, :n] = ids[row, n - k:n], 1
        n_images = sum(images)
        pixels = torch.randn(n_images, 3, 32, 32, generator=gen) if n_images else None
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}

    return model, [micro_batch([6, 9], [1, 2], [True, True]), micro_batch([5, 7, 12], [1, 1, 2], [True, False, True]),
                   micro_batch([40], [33], [True])]


@check("token_weighted_accumulation")
def check_token_weighted_accumulation(accumulate):
    """``accumulate(model, micro_batches) -> float``: gradients of one big batch, from uneven micro-batches."""
    hint = ("every supervised token of the whole step weighs the same: backward each micro-batch's loss SUM "
            "(lm_loss_sum(out.logits, out.labels), the spliced labels) and divide once by the supervised tokens "
            "of ALL micro-batches (divide the sums before backward, or the gradients after); never average "
            "per micro-batch or per sample, count labels != -100 (not positions), and do not zero the "
            "gradients between micro-batches")
    model, micro = _accumulation_case()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    # The reference: one backward of (sum of all token losses) / (all supervised tokens).
    sums, counts = zip(*(lm_loss_sum(out.logits, out.labels) for out in (model(**batch) for batch in micro)))
    loss = sum(sums) / sum(counts)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in trainable.items()}
    model.zero_grad(set_to_none=True)

    with your_code(accumulate):
        got_loss = accumulate(model, micro)
    what = "the returned loss (mean over every supervised token of the step)"
    expect_type(got_loss, (float, torch.Tensor), what=what, hint=hint, expected="a float",
                where=lambda value: not isinstance(value, torch.Tensor) or value.numel() == 1)
    assert_close(torch.as_tensor(float(got_loss)), loss.detach(), what=what, hint=hint)
    for name, p in trainable.items():
        if p.grad is None:
            raise GradingError(f"gradient of {name}: none was computed", hint=hint)
        # Relative to the gradient's scale: in bf16 matrix products (a GPU's autocast) the per-micro-batch
        # and the one-batch paths round differently, by up to 0.7 % of the largest entry (measured under
        # MINILLAVA_EMULATE=bf16); the averaging mistakes this checker is for are off by about 200 %.
        scale = expected[name].abs().max().item()
        assert_close(p.grad, expected[name], what=f"gradient of {name}", hint=hint, atol=1e-6 + 0.05 * scale)
