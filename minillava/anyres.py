"""AnyRes (LLaVA-NeXT): show the vision tower a large image as several tiles.

A CLIP tower sees a fixed square (336x336 px); squashing a page of text into it blurs
the letters away. AnyRes keeps the tower and gives it more views of the same image:

1. pick, among a few candidate canvases (``pinpoints``, multiples of the tile size),
   the one that keeps the most of the image's pixels and then wastes the least area;
2. resize the image into it keeping its aspect ratio, pad the rest with black, centred;
3. cut the canvas into tile_size x tile_size tiles, row by row, and put a *base* view
   (the whole image squashed to one tile) in front: 1 + rows * cols tower inputs.

On the model side each tile becomes a p x p grid of features; the tiles' grids are
glued back into one (rows * p) x (cols * p) map, the padding bands are cropped off
(``unpad``), a learned ``image_newline`` vector ends every row of the map (so the
LM can tell where a row ends), and the base view's p * p features go first.

Sizes are (height, width) everywhere, as in transformers. The trap: the original LLaVA
code writes sizes and pinpoints as (width, height), and so does PIL (``image.size``);
reading one convention with the other silently picks the wrong canvas for every
non-square image. tests/test_anyres.py checks each function against transformers'.
"""

import math

import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image

# LLaVA-NeXT's canvases in tiles (height, width): 1x2, 2x1, 2x2, 3x1, 1x3.
_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))


def default_pinpoints(tile_size: int = 336) -> list[tuple[int, int]]:
    """LLaVA-NeXT's candidate canvases for a tower of ``tile_size`` px (336 -> HF's default)."""
    return [(r * tile_size, c * tile_size) for r, c in _GRIDS]


def check_pinpoints(pinpoints, tile_size: int) -> list[tuple[int, int]]:
    """Pinpoints as a checked list of (height, width) multiples of tile_size; None = the default.

    Every AnyRes entry point (the model, the image processor, ``views``) calls this, so
    they fill in LLaVA-NeXT's ``default_pinpoints`` and reject bad canvases alike.
    """
    if pinpoints is None:
        return default_pinpoints(tile_size)
    pinpoints = [tuple(int(x) for x in p) for p in pinpoints]
    bad = [p for p in pinpoints if len(p) != 2 or min(p) <= 0 or p[0] % tile_size or p[1] % tile_size]
    if not pinpoints or bad:
        raise ValueError(
            f"pinpoints must be (height, width) pairs, positive multiples of the tile size {tile_size}; "
            f"got {bad or 'none'}; e.g. use anyres.default_pinpoints({tile_size})"
        )
    return pinpoints


def select_best_resolution(image_size, pinpoints) -> tuple[int, int]:
    """The canvas (height, width) that shows most of the image, then wastes least area.

    A canvas's *effective* resolution is the number of image pixels that survive an
    aspect-preserving fit into it (never more than the image has: upscaling adds none);
    ties go to the smaller canvas, then to the first listed.
    """
    height, width = image_size

    def score(canvas):
        scale = min(canvas[1] / width, canvas[0] / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        return effective, -(canvas[0] * canvas[1] - effective)

    return tuple(max(pinpoints, key=score))  # max keeps the first of equal scores


def fit_size(image_size, canvas) -> tuple[int, int]:
    """(height, width) of the image resized to fit ``canvas`` with its aspect ratio kept.

    The side that limits the scale fills the canvas exactly; the other is rounded up.
    """
    (height, width), (canvas_h, canvas_w) = image_size, canvas
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), canvas_h), canvas_w
    return canvas_h, min(math.ceil(width * scale_h), canvas_w)


def grid_shape(image_size, pinpoints, tile_size: int) -> tuple[int, int]:
    """(rows, cols) of tiles that an image of ``image_size`` (height, width) is cut into."""
    canvas_h, canvas_w = select_best_resolution(image_size, pinpoints)
    return canvas_h // tile_size, canvas_w // tile_size


def unpadded_size(padded_size, original_size) -> tuple[int, int]:
    """(height, width) left of a padded feature map once its padding bands are cropped.

    The image was fitted into the canvas and centred, so the content has the original
    aspect ratio; the bands are cut evenly from both sides (a remainder row or column
    stays). transformers rounds the fitted side with ``int(round(x, 7))`` so that a
    float like 9.9999999 counts as 10; the original LLaVA truncates. We match transformers.
    """
    (h, w), (orig_h, orig_w) = padded_size, original_size
    if orig_w / orig_h > w / h:  # wider than the map: bands at the top and bottom
        fitted = int(round(orig_h * (w / orig_w), 7))
        return h - 2 * ((h - fitted) // 2), w
    fitted = int(round(orig_w * (h / orig_h), 7))
    return h, w - 2 * ((w - fitted) // 2)


def unpad(features: torch.Tensor, original_size) -> torch.Tensor:
    """Crop the padding bands off a (C, H, W) feature map -> (C, h, w), centred."""
    h, w = unpadded_size(features.shape[1:], original_size)
    top, left = (features.shape[1] - h) // 2, (features.shape[2] - w) // 2
    return features[:, top:top + h, left:left + w]


def num_image_tokens(image_size, pinpoints, tile_size: int, patch_size: int) -> int:
    """Tokens one image becomes: the base view's p*p, then h*w unpadded features + h newlines.

    E.g. 672x672 with CLIP-L/14-336 (p = 24): 576 + 48 * 48 + 48 = 2928.
    """
    p = tile_size // patch_size
    rows, cols = grid_shape(image_size, pinpoints, tile_size)
    h, w = unpadded_size((rows * p, cols * p), image_size)
    return p * p + h * (w + 1)


def tile_image(image: Image.Image, pinpoints, tile_size: int) -> np.ndarray:
    """An RGB PIL image -> (1 + rows * cols, tile_size, tile_size, 3) uint8 views, base first.

    Resizing is bicubic, as transformers' LLaVA-NeXT processor does (PIL sizes are
    (width, height), hence the reversed tuples below).
    """
    size = (image.height, image.width)
    canvas_h, canvas_w = select_best_resolution(size, pinpoints)
    fit_h, fit_w = fit_size(size, (canvas_h, canvas_w))
    canvas = Image.new("RGB", (canvas_w, canvas_h))  # black
    canvas.paste(image.resize((fit_w, fit_h), Image.BICUBIC), ((canvas_w - fit_w) // 2, (canvas_h - fit_h) // 2))
    rows, cols, t = canvas_h // tile_size, canvas_w // tile_size, tile_size
    views = np.empty((1 + rows * cols, t, t, 3), dtype=np.uint8)
    views[0] = np.asarray(image.resize((t, t), Image.BICUBIC))
    # cut the canvas into its tiles, in reading order (row of tiles by row of tiles)
    views[1:] = rearrange(np.asarray(canvas), "(rows h) (cols w) c -> (rows cols) h w c", rows=rows, cols=cols)
    return views


def merge_tiles(features: torch.Tensor, image_size, pinpoints, tile_size: int, newline: torch.Tensor) -> torch.Tensor:
    """One image's per-view features -> its token sequence (model side of AnyRes).

    Args:
        features: (1 + rows * cols, p * p, D) projected features, base view first.
        image_size: the original (height, width), which fixes the grid and the crop.
        newline: (D,) the learned vector appended at the end of every feature row.
    Returns:
        (p * p + h * (w + 1), D): base features, then the unpadded map row by row.
    """
    rows, cols = grid_shape(image_size, pinpoints, tile_size)
    views, tokens, _ = features.shape
    p = math.isqrt(tokens)
    if views != 1 + rows * cols or p * p != tokens:
        raise ValueError(
            f"expected 1 + {rows}x{cols} views of a square patch grid for image size {tuple(image_size)}, "
            f"got features {tuple(features.shape)}; AnyRes needs vision_feature_select='patch' (no CLS) "
            "and pixel_values tiled with the same pinpoints"
        )
    # glue the tiles' p x p grids into one map, as the tiles sat on the canvas
    grid = rearrange(features[1:], "(rows cols) (h w) d -> d (rows h) (cols w)", rows=rows, cols=cols, h=p)
    grid = unpad(grid, image_size)
    # end every row of the map with the newline vector, then read the map row by row
    grid = torch.cat([grid, repeat(newline.to(grid), "d -> d h 1", h=grid.shape[1])], dim=2)
    return torch.cat([features[0], rearrange(grid, "d h w -> (h w) d")])
