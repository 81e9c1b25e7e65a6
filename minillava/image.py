"""Image preprocessing: turn any picture into what the vision tower was trained on.

A tower takes a fixed square (336x336 px for CLIP-L/14-336) of pixels scaled to [0, 1]
and normalised per channel with the mean/std of its training data. LLaVA's versions
differ only in how a non-square picture becomes such squares:

- ``"resize"``: squash it to size x size; nothing is cut, the aspect ratio is lost.
  (CLIP's own processor instead resizes the short side and centre-crops, which cuts
  the ends off a wide picture; we keep the whole picture.)
- ``"pad"`` (LLaVA-1.5): pad to a square with the mean colour, centred, then resize;
  nothing is cut or distorted, and the padding normalises to about 0. The colour is
  ``int(mean * 255)`` per channel -- truncated, as the original LLaVA and transformers do.
- ``"anyres"`` (LLaVA-NeXT): a base view plus high-resolution tiles, see anyres.py.

Resizing is PIL bicubic and normalisation repeats transformers' float steps, so the
pixels are bit-identical to transformers' LLaVA and LLaVA-NeXT image processors
(tests/test_llava_next_vs_hf.py). Sizes are (height, width); PIL's are (width, height).
"""

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from minillava.anyres import check_pinpoints, tile_image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("resize", "pad", "anyres")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of MODES, else a ValueError listing them (every mode check calls this)."""
    if mode not in MODES:
        raise ValueError(f"unknown image mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def to_rgb(image) -> Image.Image:
    """A PIL image (any mode) or an (H, W, 3) uint8 array -> an RGB PIL image."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"an image array must be (height, width, 3) uint8, got shape {image.shape} dtype {image.dtype}; "
                "convert it first, e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]"
            )
        return Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if "A" in image.getbands() or "transparency" in image.info:
        # Transparent pixels become white, as in transformers (not black, as a bare convert would).
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize(pixels: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 ``(x / 255 - mean) / std``.

    A uint8 channel takes only 256 values, so normalising is a table look-up: one pass
    over the pixels instead of four (scale, cast, subtract, divide), several times faster.
    """
    table = _normalize_table(tuple(mean), tuple(std))
    out = np.empty((*pixels.shape[:-3], 3, *pixels.shape[-3:-1]), dtype=np.float32)
    for c in range(3):
        out[..., c, :, :] = table[c][pixels[..., c]]
    return torch.from_numpy(out)


@functools.lru_cache
def _normalize_table(mean: tuple, std: tuple) -> np.ndarray:
    """(3, 256) float32: every uint8 value, normalised per channel."""
    # transformers rescales in float64, casts to float32, then normalises in float32:
    # the same steps give the same bits.
    x = (np.arange(256) * (1 / 255)).astype(np.float32)
    return (x[None] - np.array(mean, np.float32)[:, None]) / np.array(std, np.float32)[:, None]


def pad_colour(mean=CLIP_MEAN) -> tuple[int, int, int]:
    """The colour ``"pad"`` fills with: ``int(mean * 255)`` per channel, (122, 116, 104) for CLIP."""
    return tuple(int(m * 255) for m in mean)


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Centre ``image`` on a square of side max(height, width) filled with ``fill``."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def views(image, mode: str = "pad", size: int = 336, mean=CLIP_MEAN, pinpoints=None) -> np.ndarray:
    """The geometric half of preprocessing: image -> (V, size, size, 3) uint8 views.

    V = 1 for ``"resize"`` and ``"pad"``; V = 1 + rows * cols for ``"anyres"`` (base view
    first; ``pinpoints`` are the candidate (height, width) canvases, default
    ``anyres.default_pinpoints(size)``).
    """
    image = to_rgb(image)
    if check_mode(mode) == "anyres":
        return tile_image(image, check_pinpoints(pinpoints, size), size)
    if mode == "pad":
        image = pad_to_square(image, pad_colour(mean))
    return np.asarray(image.resize((size, size), Image.BICUBIC))[None]


def preprocess(image, mode: str = "pad", size: int = 336, mean=CLIP_MEAN, std=CLIP_STD, pinpoints=None) -> torch.Tensor:
    """One image -> (3, size, size) for ``"resize"``/``"pad"``, (V, 3, size, size) for ``"anyres"``."""
    pixels = normalize(views(image, mode, size, mean, pinpoints), mean, std)
    return pixels if mode == "anyres" else pixels[0]


@dataclass
class ImageProcessor:
    """Preprocess a batch of images for MiniLlava: ``model(ids, **processor(images))``.

    mode / size / mean / std / pinpoints: as in ``preprocess``.
    """

    mode: str = "pad"
    size: int = 336
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    pinpoints: list[tuple[int, int]] | None = None

    def __post_init__(self):
        if check_mode(self.mode) == "anyres":
            self.pinpoints = check_pinpoints(self.pinpoints, self.size)

    def __call__(self, images) -> dict:
        """A list of images -> {"pixel_values", "image_sizes"}.

        Single view: pixel_values (N, 3, size, size) and image_sizes None. AnyRes:
        pixel_values (N, max_views, 3, size, size), zero-padded along the views as in
        transformers, and image_sizes (N, 2) long, each image's original (height, width).
        """
        if not images:
            raise ValueError("no images given; pass a non-empty list of PIL images or arrays")
        images = [to_rgb(i) for i in images]
        per_image = [views(i, self.mode, self.size, self.mean, self.pinpoints) for i in images]
        if self.mode != "anyres":
            return {"pixel_values": normalize(np.concatenate(per_image), self.mean, self.std), "image_sizes": None}
        # Batch the uint8 views (4x less to copy than floats), normalise once, then zero
        # the padding views: transformers pads with zeros *after* normalising.
        batch = np.zeros((len(images), max(map(len, per_image)), *per_image[0].shape[1:]), dtype=np.uint8)
        for i, v in enumerate(per_image):
            batch[i, : len(v)] = v
        pixel_values = normalize(batch, self.mean, self.std)
        for i, v in enumerate(per_image):
            pixel_values[i, len(v):] = 0
        return {"pixel_values": pixel_values, "image_sizes": torch.tensor([(i.height, i.width) for i in images])}
