"""MiniLlava is transformers' LLaVA: same weights -> same logits, loss and generations.

Tiny random models are built in the test (no download). transformers expects each
image already expanded into N placeholder tokens; MiniLlava takes ONE placeholder per
image and expands it itself -- the comparison feeds each model its own convention.
"""

import pytest
import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from minillava.interop import from_hf, to_hf
from minillava.backbones.zoo import tiny_backbones

import hf_compare

IMG = 99  # image placeholder id (last vocab id of the tiny LM)


def make_hf(vision="clip", feature_layer=-2, select="default", seed=0):
    tower, lm = tiny_backbones(vision=vision, seed=seed)
    config = LlavaConfig(
        vision_config=tower.config.to_dict(), text_config=lm.config.to_dict(), image_token_id=IMG,
        vision_feature_layer=feature_layer, vision_feature_select_strategy=select,
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def tokens_per_image(hf):
    v = hf.config.vision_config
    grid = (v.image_size // v.patch_size) ** 2
    has_cls = v.model_type == "clip_vision_model"
    return grid + 1 if (has_cls and hf.config.vision_feature_select_strategy == "full") else grid


def batch(samples, counts, side="right"):
    return hf_compare.batch(samples, counts, IMG, side)


# 0, 1 and 2 images per sample, text-only rows and padding in one batch
SAMPLES = [[1, 5, IMG, 6, 7, 8], [1, 9, 10, 11], [1, IMG, 12, IMG, 13], [1, 14, IMG]]


@pytest.mark.parametrize("vision,layer,select", [
    ("clip", -1, "default"), ("clip", -2, "default"), ("clip", [-3, -1], "default"),
    ("clip", -2, "full"), ("clip", [0, -2], "full"), ("siglip", -2, "full"), ("siglip", [-2, -1], "full"),
])
def test_logits_and_loss_match_transformers(vision, layer, select):
    hf = make_hf(vision, layer, select)
    ours = from_hf(hf).eval()
    n_images = sum(s.count(IMG) for s in SAMPLES)
    pixels = torch.randn(n_images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    (ids, mask), (hf_ids, hf_mask) = batch(SAMPLES, tokens_per_image(hf))
    labels = ids.masked_fill((mask == 0) | (ids == IMG), -100)
    hf_labels = hf_ids.masked_fill((hf_mask == 0) | (hf_ids == IMG), -100)
    with torch.no_grad():
        got = ours(ids, pixel_values=pixels, attention_mask=mask, labels=labels)
        want = hf(input_ids=hf_ids, pixel_values=pixels, attention_mask=hf_mask, labels=hf_labels)
    assert got.logits.shape == want.logits.shape
    real = hf_mask.bool()
    assert torch.equal(got.attention_mask, hf_mask)
    assert torch.equal(got.labels, hf_labels)
    assert (got.logits[real] - want.logits[real]).abs().max() <= 1e-4
    assert abs(got.loss.item() - want.loss.item()) <= 1e-5


def test_wrong_select_would_be_caught():
    """The comparison above can fail: reading a different layer changes the logits."""
    hf = make_hf(feature_layer=-2)
    ours = from_hf(hf)
    ours.vision_tower.layers = [-1]
    (ids, mask), (hf_ids, hf_mask) = batch(SAMPLES[:1], tokens_per_image(hf))
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        diff = ours(ids, pixels, mask).logits - hf(input_ids=hf_ids, pixel_values=pixels, attention_mask=hf_mask).logits
    assert diff.abs().max() > 1e-3


def test_greedy_generate_matches_transformers_batched_left_padding():
    hf = make_hf()
    ours = from_hf(hf).eval()
    samples = [[1, 5, IMG, 6, 7, 8], [1, IMG, 9], [1, 10, 11]]
    (ids, mask), (hf_ids, hf_mask) = batch(samples, tokens_per_image(hf), side="left")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    want = hf.generate(input_ids=hf_ids, pixel_values=pixels, attention_mask=hf_mask, max_new_tokens=12,
                       do_sample=False, eos_token_id=2, pad_token_id=0)[:, hf_ids.shape[1]:]
    got = ours.generate(ids, pixels, mask, max_new_tokens=12, eos_token_id=2)
    assert torch.equal(got[:, : want.shape[1]], want)


def test_round_trip_save_pretrained(tmp_path):
    hf = make_hf(select="full", feature_layer=[-2, -1])
    ours = from_hf(hf)
    to_hf(ours).save_pretrained(tmp_path)
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert (tmp_path / "model.safetensors").exists()
    (ids, mask), (hf_ids, hf_mask) = batch(SAMPLES, tokens_per_image(hf))
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a = ours(ids, pixels, mask).logits
        b = reloaded(input_ids=hf_ids, pixel_values=pixels, attention_mask=hf_mask).logits
    assert torch.equal(a[hf_mask.bool()], b[hf_mask.bool()])
