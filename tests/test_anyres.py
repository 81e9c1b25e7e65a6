"""AnyRes size logic equals transformers' LLaVA-NeXT, for random image sizes and pinpoints.

Every function of minillava.anyres is compared with the transformers function that
plays the same role; a (width, height) mix-up -- the classic AnyRes bug -- is shown to
be caught. The token count is also checked end to end on a CLIP-L/14-336-shaped tower.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tokenizers import Tokenizer, models
from transformers import CLIPVisionConfig, CLIPVisionModel, LlavaNextImageProcessorPil, LlavaNextProcessor
from transformers import PreTrainedTokenizerFast
from transformers.image_processing_utils import get_patch_output_size
from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution
from transformers.image_utils import ChannelDimension
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)

from minillava import MiniLlava, MiniLlavaConfig
from minillava.anyres import (
    check_pinpoints,
    default_pinpoints,
    fit_size,
    grid_shape,
    num_image_tokens,
    select_best_resolution,
    unpad,
)
from minillava.image import ImageProcessor, views
from minillava.backbones.zoo import tiny_backbones

SETTINGS = settings(max_examples=150, deadline=None)
sizes = st.tuples(st.integers(1, 3000), st.integers(1, 3000))
tiles = st.sampled_from([32, 224, 336])


@st.composite
def pinpoints_and_tile(draw):
    """A tile size and 1-6 canvases of 1..4 x 1..4 tiles, as (height, width) lists."""
    tile = draw(tiles)
    grids = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=6))
    return [[r * tile, c * tile] for r, c in grids], tile


@SETTINGS
@given(sizes, pinpoints_and_tile())
def test_select_best_resolution_grid_and_views_match_transformers(size, pins_tile):
    pins, tile = pins_tile
    assert select_best_resolution(size, pins) == hf_select_best_resolution(size, pins)
    assert grid_shape(size, pins, tile) == get_anyres_image_grid_shape(size, pins, tile)
    rows, cols = grid_shape(size, pins, tile)
    assert 1 + rows * cols == image_size_to_num_patches(size, pins, tile)


@SETTINGS
@given(sizes, st.tuples(st.integers(1, 40), st.integers(1, 40)).map(lambda g: (g[0] * 32, g[1] * 32)))
def test_fit_size_matches_transformers(size, canvas):
    image = np.zeros((1, *size), dtype=np.uint8)  # only its shape is read
    assert fit_size(size, canvas) == get_patch_output_size(image, canvas, ChannelDimension.FIRST)


@SETTINGS
@given(sizes, st.integers(1, 64), st.integers(1, 64))
def test_unpad_matches_transformers(size, height, width):
    features = torch.randn(2, height, width)
    assert torch.equal(unpad(features, size), unpad_image(features, size))


@pytest.fixture(scope="module")
def hf_processor():
    """transformers' LLaVA-NeXT processor for CLIP-L/14-336, with a throwaway tokenizer."""
    vocab = {"<unk>": 0, "<image>": 1}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        unk_token="<unk>")
    images = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14, image_token="<image>",
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)


@settings(max_examples=100, deadline=None)
@given(sizes, st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=6))
def test_num_image_tokens_matches_transformers_processor(hf_processor, size, grids):
    pins = [[r * 336, c * 336] for r, c in grids]
    hf_processor.image_processor.image_grid_pinpoints = pins
    want = hf_processor._get_num_multimodal_tokens(image_sizes=[size]).num_image_tokens[0]
    assert num_image_tokens(size, pins, 336, 14) == want


def test_clip_l_336_token_count_end_to_end():
    """672x672 on a CLIP-L/14-336-shaped tower: 576 base + 48*48 map + 48 newlines = 2928."""
    assert num_image_tokens((672, 672), default_pinpoints(336), 336, 14) == 576 + 48 * 48 + 48 == 2928
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=336, patch_size=14)).eval()
    _, lm = tiny_backbones()
    model = MiniLlava(MiniLlavaConfig(image_token_id=99, image_mode="anyres"), tower, lm).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (672, 672, 3), dtype=np.uint8))
    with torch.no_grad():
        (features,) = model.encode_images(**ImageProcessor("anyres", 336)([image]))
    assert features.shape == (2928, lm.config.hidden_size)


def test_default_pinpoints_are_transformers_defaults():
    assert default_pinpoints(336) == [tuple(p) for p in LlavaNextImageProcessorPil().image_grid_pinpoints]


def test_width_height_swap_is_caught():
    """PIL's image.size is (width, height): passing it where (height, width) is meant picks
    the transposed canvas, which the comparison with transformers detects."""
    pins = default_pinpoints(336)
    image = Image.new("RGB", (900, 300))  # PIL: (width, height) -> a wide image
    right = (image.height, image.width)
    assert grid_shape(right, pins, 336) == get_anyres_image_grid_shape(right, pins, 336) == (1, 3)
    assert grid_shape(image.size, pins, 336) != get_anyres_image_grid_shape(right, pins, 336)
    features = torch.randn(1, 24, 72)
    assert unpad(features, image.size).shape != unpad_image(features, right).shape


@pytest.mark.parametrize("pins", [[], [(336, 500)], [(0, 336)], [(336,)]])
def test_bad_pinpoints_raise(pins):
    with pytest.raises(ValueError, match="multiples of the tile size"):
        check_pinpoints(pins, 336)
    with pytest.raises(ValueError, match="multiples of the tile size"):  # every entry point checks the same way
        ImageProcessor("anyres", 336, pinpoints=pins)


def test_one_source_for_the_modes_and_the_default_pinpoints():
    """The model, the image processor and views() fill in the same default canvases and reject a mode alike."""
    model = MiniLlava(MiniLlavaConfig(image_token_id=99, image_mode="anyres"), *tiny_backbones(image_size=64))
    defaults = default_pinpoints(64)
    assert check_pinpoints(None, 64) == defaults == ImageProcessor("anyres", 64).pinpoints == model.pinpoints
    image = Image.new("RGB", (100, 30))
    assert np.array_equal(views(image, "anyres", 64), views(image, "anyres", 64, pinpoints=defaults))
    for make in (lambda: ImageProcessor("tiles"), lambda: MiniLlavaConfig(99, image_mode="tiles"),
                 lambda: views(image, "tiles")):
        with pytest.raises(ValueError, match=r"unknown image mode 'tiles'; valid: resize, pad, anyres$"):
            make()
