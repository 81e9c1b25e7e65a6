"""Unit tests of the core pieces: projector, splicing, loss, vision tower (token counts), generate."""

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from transformers import (CLIPVisionConfig, CLIPVisionModel, ConvNextConfig, ConvNextModel, ResNetConfig, ResNetModel,
                          SiglipVisionConfig, SiglipVisionModel)

from minillava.backbones import zoo
from minillava.backbones.zoo import tiny_random_model
from minillava.loss import lm_loss_sum, masked_lm_loss
from minillava.projector import build_projector
from minillava.splicing import IGNORE_INDEX, splice
from minillava.vision import SELECT_STRATEGIES, VisionTower

IMG = 99


# ---------------------------------------------------------------- projector
@pytest.mark.parametrize("name,n_linear", [("linear", 1), ("mlp1x_gelu", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_depth_and_shape(name, n_linear):
    proj = build_projector(name, 12, 20)
    assert sum(isinstance(m, torch.nn.Linear) for m in proj.modules()) == n_linear
    assert proj(torch.randn(2, 5, 12)).shape == (2, 5, 20)


def test_mlp2x_gelu_is_linear_gelu_linear():
    proj = build_projector("mlp2x_gelu", 6, 8)
    x = torch.randn(3, 6)
    want = F.linear(F.gelu(F.linear(x, proj.linear_1.weight, proj.linear_1.bias)), proj.linear_2.weight, proj.linear_2.bias)
    assert torch.allclose(proj(x), want)


@pytest.mark.parametrize("name", ["mlp0x_gelu", "mlp2x_relu", "conv", ""])
def test_unknown_projector_lists_valid_names(name):
    with pytest.raises(ValueError, match="valid names: linear, mlp"):
        build_projector(name, 4, 4)


def test_identity_needs_equal_widths():
    assert isinstance(build_projector("identity", 4, 4), torch.nn.Identity)
    with pytest.raises(ValueError, match="4 != text 8"):
        build_projector("identity", 4, 8)


# ---------------------------------------------------------------- splicing
embed = torch.nn.Embedding(100, 3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=3), min_size=1, max_size=4),
       st.integers(1, 5), st.sampled_from(["left", "right"]), st.data())
def test_splice_lengths_masks_and_positions(images_per_sample, n_feat, side, data):
    """Any mix of 0..k images per sample: lengths add up, labels are -100 on images,
    features land where the placeholders were, positions count real tokens."""
    rows, feats = [], []
    for sample_images in images_per_sample:
        text = data.draw(st.lists(st.integers(3, 50), min_size=len(sample_images) + 1, max_size=8))
        ids = text[:1]
        for extra_text in sample_images:  # placeholder, then some text
            ids += [IMG] + text[1: 1 + extra_text]
            feats.append(torch.randn(n_feat, 3))
        rows.append(ids)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    s = splice(ids, feats, embed, IMG, attention_mask=mask, labels=ids.clone(), padding_side=side)
    lengths = [len(r) + r.count(IMG) * (n_feat - 1) for r in rows]
    assert s.embeds.shape == (len(rows), max(lengths), 3)
    assert s.attention_mask.sum(1).tolist() == lengths
    assert (s.labels[s.image_mask] == IGNORE_INDEX).all()
    assert (s.labels[s.attention_mask == 0] == IGNORE_INDEX).all()
    assert int(s.image_mask.sum()) == len(feats) * n_feat
    assert torch.equal(s.embeds[s.image_mask], torch.cat(feats) if feats else torch.zeros(0, 3))
    for i, n in enumerate(lengths):
        real = s.attention_mask[i].bool()
        assert s.position_ids[i][real].tolist() == list(range(n))
        assert real.tolist() == ([False] * (s.embeds.shape[1] - n) + [True] * n if side == "left"
                                 else [True] * n + [False] * (s.embeds.shape[1] - n))
        text_ids = s.labels[i][real & ~s.image_mask[i]]
        assert text_ids.tolist() == [t for t in rows[i] if t != IMG]


def test_splice_count_mismatch_names_both_numbers():
    ids = torch.tensor([[1, IMG, 5, IMG]])
    with pytest.raises(ValueError, match=r"hold 2 image placeholder\(s\).*but 1 image\(s\)"):
        splice(ids, [torch.randn(4, 3)], embed, IMG)


def test_truncation_keeps_text_but_refuses_to_cut_an_image():
    ids = torch.tensor([[1, 5, IMG, 6, 7]])
    s = splice(ids, [torch.randn(4, 3)], embed, IMG, max_length=7)
    assert s.embeds.shape[1] == 7 and int(s.image_mask.sum()) == 4
    with pytest.raises(ValueError, match="would cut image features.*at least 6"):
        splice(ids, [torch.randn(4, 3)], embed, IMG, max_length=5)


# ---------------------------------------------------------------- loss
def test_masked_loss_equals_reference_cross_entropy():
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = IGNORE_INDEX
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(masked_lm_loss(logits, labels), want)


def test_sum_form_weights_every_token_equally_across_uneven_micro_batches():
    logits = torch.randn(3, 8, 7)
    labels = torch.randint(0, 7, (3, 8))
    labels[0, 2:] = IGNORE_INDEX  # a micro-batch with only one supervised token
    whole = masked_lm_loss(logits, labels)
    parts = [lm_loss_sum(logits[i: i + 1], labels[i: i + 1]) for i in range(3)]
    accumulated = sum(s for s, _ in parts) / sum(n for _, n in parts)
    naive = sum(masked_lm_loss(logits[i: i + 1], labels[i: i + 1]) for i in range(3)) / 3
    assert torch.allclose(accumulated, whole)
    assert not torch.allclose(naive, whole)  # averaging the means would weight tokens unequally


def test_all_masked_refuses_a_silent_zero():
    with pytest.raises(ValueError, match="no supervised tokens"):
        masked_lm_loss(torch.randn(1, 4, 5), torch.full((1, 4), IGNORE_INDEX))


def test_loss_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="spliced labels"):
        lm_loss_sum(torch.randn(1, 9, 5), torch.zeros(1, 4, dtype=torch.long))


# ---------------------------------------------------------------- vision tower: token counts without running it
def tokens_of_a_forward(tower: VisionTower, height: int, width: int) -> int:
    with torch.no_grad():
        return tower(torch.zeros(1, tower.num_channels, height, width)).shape[1]


def tiny_vit(kind: str, image_size: int, patch_size: int):
    config = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=patch_size)
    if kind == "clip":
        return CLIPVisionModel(CLIPVisionConfig(**config)).eval()
    return SiglipVisionModel(SiglipVisionConfig(**config)).eval()


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["clip", "siglip"]), st.integers(2, 8), st.integers(1, 6), st.integers(0, 7),
       st.sampled_from(SELECT_STRATEGIES), st.sampled_from([-2, -1, 0, [0, -1]]))
def test_num_patches_of_tiny_vits_is_what_a_forward_makes(kind, patch, grid, extra, select, layer):
    """image_size (any, not only a multiple of the patch) and num_patches come from the config alone:
    the patch grid, plus CLIP's CLS when it is kept; SigLIP has none to keep."""
    size = patch * grid + extra % patch
    tower = VisionTower(tiny_vit(kind, size, patch), layer, select)
    assert tower.image_size == size
    assert tower.patch_grid(size, size) == (grid, grid)
    assert tower.num_patches == tokens_of_a_forward(tower, size, size)
    assert tower.num_patches == grid * grid + (kind == "clip" and select == "cls_patch")


@pytest.mark.parametrize("select,tokens", [("patch", 576), ("cls_patch", 577)])
def test_clip_l_336_makes_576_tokens(select, tokens):
    """A CLIP-L/14-336-shaped tower (narrow, one layer): (336 / 14)^2 = 576 patches, CLS on top if kept."""
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=336, patch_size=14)).eval()
    tower = VisionTower(clip, -1, select)
    assert (tower.image_size, tower.num_patches) == (336, tokens) == (336, tokens_of_a_forward(tower, 336, 336))


@pytest.fixture(scope="module")
def toy_tower():
    return zoo.load("toy-vision")


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 90), st.integers(8, 90), st.sampled_from([0, 1, 2, -2, -1]))
def test_patch_grid_of_the_toy_conv_tower_is_its_feature_map(toy_tower, height, width, layer):
    """The shipped RegNet halves its map (rounding up) at the stem and at every stage, at any input size."""
    tower = VisionTower(toy_tower, layer)
    with torch.no_grad():
        hidden = toy_tower(torch.zeros(1, 3, height, width), output_hidden_states=True).hidden_states[layer]
    assert tower.patch_grid(height, width) == tuple(hidden.shape[-2:])


def test_the_toy_tower_counts_its_tokens_once_told_its_size(toy_tower):
    """A conv tower takes any size, so it needs to be told one; then it says its 16 tokens of 64 px views."""
    tower = VisionTower(copy.deepcopy(toy_tower), feature_layer=-1)
    assert tower.image_size is None
    with pytest.raises(ValueError, match="convolutional and takes any size.*config.image_size"):
        tower.num_patches
    tower.model.config.image_size = 64
    assert tower.num_patches == 16 == tokens_of_a_forward(tower, 64, 64)


@pytest.mark.parametrize("stage_one_halves", [False, True])
def test_patch_grid_of_a_resnet_tower_is_its_feature_map(stage_one_halves):
    """ResNet's stem halves twice (a stride-2 conv, then a max-pool); its first stage only if told to."""
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1],
                                      downsample_in_first_stage=stage_one_halves)).eval()
    with torch.no_grad():
        hidden = resnet(torch.zeros(1, 3, 75, 50), output_hidden_states=True).hidden_states
    for layer in range(len(hidden)):
        assert VisionTower(resnet, layer).patch_grid(75, 50) == tuple(hidden[layer].shape[-2:])


def test_an_unknown_conv_tower_says_it_cannot_count():
    convnext = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
    convnext.config.image_size = 64
    with pytest.raises(ValueError, match="cannot tell the feature map size of a convnext tower"):
        VisionTower(convnext, -1).num_patches


# ---------------------------------------------------------------- model
@pytest.fixture(scope="module")
def model():
    return tiny_random_model()


def test_wrong_pixel_shape_and_size(model):
    ids = torch.tensor([[1, IMG, 5]])
    with pytest.raises(ValueError, match=r"shape \(num_images, 3, height, width\)"):
        model(ids, pixel_values=torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="16x16 but the vision tower expects 32x32"):
        model(ids, pixel_values=torch.randn(1, 3, 16, 16))


def test_frozen_tower_builds_no_graph_and_projector_gets_gradients():
    """Even for pixels that ask for gradients, a frozen tower runs without autograd: its features
    hang on no graph (nothing of the tower is kept for a backward), while the projector learns."""
    model = tiny_random_model()  # its own model: the shared fixture stays untouched
    pixels = torch.randn(1, 3, 32, 32, requires_grad=True)
    trainable = model.vision_tower(pixels)
    assert trainable.requires_grad and trainable.grad_fn is not None  # unfrozen: a graph back to the pixels
    model.vision_tower.requires_grad_(False)
    features = model.vision_tower(pixels)
    assert not features.requires_grad and features.grad_fn is None
    ids = torch.tensor([[1, IMG, 5, 6]])
    out = model(ids, pixel_values=pixels, labels=ids)
    out.loss.backward()
    assert model.projector.linear_1.weight.grad is not None
    assert all(p.grad is None for p in model.vision_tower.parameters()) and pixels.grad is None


def test_return_loss_false_keeps_logits_and_spliced_labels_for_the_sum_form(model):
    """The trainer's call: no mean loss, but the logits and spliced labels lm_loss_sum needs."""
    ids = torch.tensor([[1, IMG, 5, 6, 7], [1, 8, 9, 0, 0]])
    mask = (ids != 0).long()
    labels = ids.masked_fill((mask == 0) | (ids == IMG), IGNORE_INDEX)
    px = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        full = model(ids, px, mask, labels=labels)
        summed = model(ids, px, mask, labels=labels, return_loss=False)
    assert summed.loss is None and full.loss is not None
    assert torch.equal(summed.logits, full.logits) and torch.equal(summed.labels, full.labels)
    loss_sum, n = lm_loss_sum(summed.logits, summed.labels)
    assert n == 5 and torch.allclose(loss_sum / n, full.loss)  # 5, 6, 7 and 8, 9: the first token is never a target


def test_sampling_is_reproducible_and_tiny_top_p_is_greedy(model):
    ids = torch.tensor([[1, IMG, 5, 6]])
    px = torch.randn(1, 3, 32, 32)
    gen = lambda seed, **kw: model.generate(ids, px, max_new_tokens=6, generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(gen(0, temperature=1.0), gen(0, temperature=1.0))
    assert torch.equal(gen(0, temperature=1.0, top_p=1e-6), gen(0))


def test_generation_stops_on_eos_and_pads_finished_rows(model):
    ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    greedy = model.generate(ids, max_new_tokens=6)
    eos = int(greedy[0, 1])  # pretend the second token row 0 produced is EOS
    out = model.generate(ids, max_new_tokens=6, eos_token_id=eos)
    assert out[0, 1] == eos and (out[0, 2:] == model.config.pad_token_id).all()


class FakeTokenizer:
    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(f"w{t}" for t in r.tolist()) for r in rows]


def test_stop_strings(model):
    ids = torch.tensor([[1, 5, 6]])
    greedy = model.generate(ids, max_new_tokens=6)
    stop = f"w{int(greedy[0, 2])}"
    out = model.generate(ids, max_new_tokens=6, stop_strings=[stop], tokenizer=FakeTokenizer())
    assert out.shape[1] <= 3 and torch.equal(out[0], greedy[0, : out.shape[1]])
    with pytest.raises(ValueError, match="need a tokenizer"):
        model.generate(ids, stop_strings=["x"])
