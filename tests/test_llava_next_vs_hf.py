"""MiniLlava in AnyRes mode is transformers' LLaVA-NeXT: same pixels, tokens, logits, generations.

Tiny random models are built in the test (no download): a CLIP tower seeing 32x32 tiles
of 8x8 patches (p = 4), so a 2x2 canvas is 64x64 px. transformers expects each image
expanded into its own number of placeholders, counted here by its LLaVA-NeXT processor;
MiniLlava takes ONE placeholder per image and expands it itself.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tokenizers import Tokenizer, models
from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                          LlavaNextProcessor, PreTrainedTokenizerFast)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from minillava import MiniLlava, MiniLlavaConfig
from minillava.anyres import default_pinpoints, num_image_tokens
from minillava.image import ImageProcessor, preprocess
from minillava.interop import from_hf, to_hf
from minillava.backbones.zoo import tiny_backbones

import hf_compare

IMG, TILE, PATCH = 99, 32, 8
PINPOINT_SETS = {
    "llava_next": default_pinpoints(TILE),  # 1x2, 2x1, 2x2, 3x1, 1x3 tiles
    "other": [(32, 32), (64, 128), (128, 64), (96, 96), (32, 128)],
}
# (height, width): tall, wide, tiny, large / square, odd, wide, tall
IMAGE_SETS = [[(90, 20), (20, 90), (3, 5), (500, 300)], [(64, 64), (37, 100), (31, 250), (333, 111)]]
SAMPLES = [[1, 5, IMG, 6, 7, 8], [1, 9, 10, 11], [1, IMG, 12, IMG, 13], [1, 14, IMG]]  # 0-2 images, padding


def random_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_hf(pinpoints, seed=0):
    tower, lm = tiny_backbones(seed=seed)
    config = LlavaNextConfig(vision_config=tower.config.to_dict(), text_config=lm.config.to_dict(),
                             image_token_id=IMG, image_grid_pinpoints=[list(p) for p in pinpoints])
    torch.manual_seed(seed)
    return LlavaNextForConditionalGeneration(config).eval()


def hf_processor(pinpoints, tile=TILE, patch=PATCH):
    """transformers' LLaVA-NeXT processor with a throwaway one-word tokenizer."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<image>": IMG}, unk_token="<unk>")), unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})  # so "<image><image>" splits
    images = LlavaNextImageProcessorPil(size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile},
                                        image_grid_pinpoints=[list(p) for p in pinpoints])
    return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch, image_token="<image>",
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


def hf_token_counts(pinpoints, images):
    """Placeholders transformers' processor writes for each image."""
    processor = hf_processor(pinpoints)
    return [int((processor(images=[im], text=["<image>"], return_tensors="pt")["input_ids"] == IMG).sum()) for im in images]


def batch(samples, counts, side="right"):
    return hf_compare.batch(samples, counts, IMG, side)


@pytest.mark.parametrize("pins_name", PINPOINT_SETS)
@pytest.mark.parametrize("image_set", [0, 1])
def test_logits_loss_and_token_counts_match_transformers(pins_name, image_set):
    pins, sizes = PINPOINT_SETS[pins_name], IMAGE_SETS[image_set]
    hf = make_hf(pins)
    ours = from_hf(hf).eval()
    images = [random_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    inputs = ImageProcessor("anyres", TILE, pinpoints=pins)(images)
    counts = hf_token_counts(pins, images)
    assert counts == [num_image_tokens(s, pins, TILE, PATCH) for s in sizes]
    assert len(set(counts)) > 1  # the batch really mixes token counts

    (ids, mask), (hf_ids, hf_mask) = batch(SAMPLES, counts)
    labels = ids.masked_fill((mask == 0) | (ids == IMG), -100)
    hf_labels = hf_ids.masked_fill((hf_mask == 0) | (hf_ids == IMG), -100)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, labels=labels, **inputs)
        want = hf(input_ids=hf_ids, attention_mask=hf_mask, labels=hf_labels, **inputs)
    # (transformers raises unless its features fill exactly the placeholders counted above)
    assert got.image_mask.sum(1).tolist() == [counts[0], 0, counts[1] + counts[2], counts[3]]
    real = hf_mask.bool()
    assert torch.equal(got.attention_mask, hf_mask) and torch.equal(got.labels, hf_labels)
    assert (got.logits[real] - want.logits[real]).abs().max() <= 1e-4
    assert abs(got.loss.item() - want.loss.item()) <= 1e-5


def test_greedy_generate_matches_transformers_batched_left_padding():
    pins = PINPOINT_SETS["llava_next"]
    hf = make_hf(pins, seed=1)
    ours = from_hf(hf).eval()
    images = [random_image(90, 20), random_image(40, 130, seed=1)]
    inputs = ImageProcessor("anyres", TILE, pinpoints=pins)(images)
    samples = [[1, 5, IMG, 6, 7, 8], [1, IMG, 9], [1, 10, 11]]
    (ids, mask), (hf_ids, hf_mask) = batch(samples, hf_token_counts(pins, images), side="left")
    want = hf.generate(input_ids=hf_ids, attention_mask=hf_mask, max_new_tokens=12, do_sample=False,
                       eos_token_id=2, pad_token_id=0, **inputs)[:, hf_ids.shape[1]:]
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=2, **inputs)
    assert torch.equal(got[:, : want.shape[1]], want)


def test_to_hf_round_trip_is_exact():
    hf = make_hf(PINPOINT_SETS["other"])
    back = to_hf(from_hf(hf))
    assert isinstance(back, LlavaNextForConditionalGeneration)
    assert back.config.image_grid_pinpoints == hf.config.image_grid_pinpoints
    want = hf.state_dict()
    assert back.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in back.state_dict().items())


def test_a_wrong_newline_or_swapped_sizes_would_be_caught():
    """The comparisons above can fail: the newline vector and the (h, w) order both matter."""
    pins = PINPOINT_SETS["llava_next"]
    ours = from_hf(make_hf(pins)).eval()
    inputs = ImageProcessor("anyres", TILE, pinpoints=pins)([random_image(90, 20)])
    with torch.no_grad():
        right = ours.encode_images(**inputs)[0]
        swapped = ours.encode_images(inputs["pixel_values"], inputs["image_sizes"].flip(1))[0]
        ours.image_newline.zero_()
        no_newline = ours.encode_images(**inputs)[0]
    assert swapped.shape != right.shape
    assert (no_newline - right).abs().max() > 1e-3


def test_image_sizes_errors_name_the_fix():
    anyres = MiniLlava(MiniLlavaConfig(IMG, image_mode="anyres"), *tiny_backbones()).eval()
    single = MiniLlava(MiniLlavaConfig(IMG), *tiny_backbones()).eval()
    ids = torch.tensor([[1, IMG, 5]])
    inputs = ImageProcessor("anyres", TILE)([random_image(40, 70)])
    with pytest.raises(ValueError, match="needs pixel_values .* and image_sizes"):
        anyres(ids, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="image_sizes is only used by image_mode='anyres'"):
        single(ids, pixel_values=inputs["pixel_values"][:, 0], image_sizes=inputs["image_sizes"])
    cls_model = MiniLlava(MiniLlavaConfig(IMG, image_mode="anyres", vision_feature_select="cls_patch"),
                          *tiny_backbones())
    with pytest.raises(ValueError, match="no CLS"):
        cls_model(ids, **inputs)
    with pytest.raises(ValueError, match="unknown image mode .tiles."):
        MiniLlavaConfig(IMG, image_mode="tiles")


# --- preprocessing: our pixels are transformers' pixels, bit for bit -----------------

@settings(max_examples=15, deadline=None)
@given(st.integers(1, 1200), st.integers(1, 1200), st.sampled_from(list(PINPOINT_SETS)))
def test_anyres_pixels_equal_transformers(height, width, pins_name):
    """CLIP-L/14-336 settings with the default pinpoints, and the tiny tile settings."""
    image = random_image(height, width)
    for tile, pins in [(336, default_pinpoints(336)), (TILE, PINPOINT_SETS[pins_name])]:
        want = hf_processor(pins, tile).image_processor(images=[image], return_tensors="pt")
        got = ImageProcessor("anyres", tile, pinpoints=pins)([image])
        assert torch.equal(got["image_sizes"], want["image_sizes"])
        assert got["pixel_values"].shape == want["pixel_values"].shape
        assert (got["pixel_values"] - want["pixel_values"]).abs().max() == 0  # both resize with PIL bicubic


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.sampled_from(["pad", "resize"]))
def test_single_view_pixels_equal_transformers_llava(height, width, mode):
    """"pad" is LLaVA-1.5's processor (do_pad); "resize" is a plain squash to the square."""
    hf = LlavaImageProcessorPil(do_pad=mode == "pad", do_center_crop=False, size={"height": 336, "width": 336})
    image = random_image(height, width)
    want = hf(images=[image], return_tensors="pt")["pixel_values"]
    assert torch.equal(ImageProcessor(mode)([image])["pixel_values"], want)
    assert torch.equal(preprocess(image, mode), want[0])


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "array"])
def test_other_image_kinds_match_transformers(mode):
    rgba = random_image(50, 80).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 80), dtype=np.uint8)))
    image = np.array(rgba.convert("RGB")) if mode == "array" else rgba.convert(mode)
    want = hf_processor(default_pinpoints(TILE)).image_processor(images=[image], return_tensors="pt")
    assert torch.equal(ImageProcessor("anyres", TILE)([image])["pixel_values"], want["pixel_values"])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(height, width, 3\) uint8"):
        preprocess(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown image mode"):
        ImageProcessor("crop")
    with pytest.raises(ValueError, match="multiples of the tile size"):
        ImageProcessor("anyres", 336, pinpoints=[(336, 600)])
