"""Chapter 5, LLaVA-1.5 and LLaVA-NeXT: AnyRes's canvas choice, unpadding, and rows ended by a newline."""

import math
import random

import torch
from einops import rearrange

from minillava import anyres
from minillava.course.grading.core import assert_close, assert_equal, check, your_code

# (height, width) image sizes that separate right from plausibly wrong canvas choices: tall and wide
# ones (a (w, h) mix-up), small ones where every canvas shows all pixels (ties: least waste wins),
# ones whose fit leaves a fraction of a pixel row (only whole pixels count), extreme shapes.
_SIZES_FOR_CANVAS = ((300, 800), (800, 300), (100, 100), (336, 336), (672, 672), (1000, 1000), (480, 640),
                     (1080, 1920), (1920, 1080), (567, 1133), (81, 161), (161, 81), (107, 215), (60, 239),
                     (116, 173), (5, 3), (1, 700), (3000, 40), (64, 64), (192, 256), (256, 192))


def _pinpoint_sets() -> dict[str, list[tuple[int, int]]]:
    return {
        "LLaVA-NeXT's default (tile 336)": anyres.default_pinpoints(336),
        "LLaVA-NeXT's default, listed in reverse": anyres.default_pinpoints(336)[::-1],
        "LLaVA-NeXT's grids at tile 64": anyres.default_pinpoints(64),
        "every grid up to 4x4 tiles of 64": [(r * 64, c * 64) for r in range(1, 5) for c in range(1, 5)],
        "a mixed set at tile 32": [(32, 32), (64, 128), (128, 64), (96, 96), (32, 128)],
    }


@check("select_best_resolution")
def check_select_best_resolution(select_best_resolution):
    """``select_best_resolution(image_size, pinpoints) -> (height, width)``, all sizes (height, width)."""
    hint = ("sizes are (height, width); for each canvas, scale = min(canvas_w / w, canvas_h / h), effective = "
            "min(int(w * scale) * int(h * scale), w * h) (whole pixels: int() each side), wasted = canvas area - "
            "effective; keep the largest effective, on a tie the smallest wasted, on a full tie the first listed")
    rng = random.Random(0)  # local RNG: leave the notebook's alone
    sizes = list(_SIZES_FOR_CANVAS) + [(rng.randint(1, 1500), rng.randint(1, 1500)) for _ in range(200)]
    for name, pinpoints in _pinpoint_sets().items():
        for size in sizes:
            with your_code(select_best_resolution):
                got = select_best_resolution(size, [tuple(p) for p in pinpoints])
            got = tuple(got) if isinstance(got, (tuple, list)) else got   # a list [h, w] is as good as a tuple
            assert_equal(got, anyres.select_best_resolution(size, pinpoints), hint=hint,
                         what=f"canvas for an image of (height, width) {size} with pinpoints {name} {pinpoints}")


# (C, H, W) feature maps and original (height, width) sizes: wide (bands at top and bottom), tall
# (bands left and right), same aspect (nothing cut), odd band widths, and a float edge case where
# 55 * (24 / 88) = 14.999999999999998 must count as 15.
_UNPAD_CASES = (((16, 16), (96, 128)), ((16, 16), (128, 96)), ((16, 16), (500, 500)), ((16, 32), (90, 200)),
                ((32, 16), (200, 90)), ((24, 24), (55, 88)), ((24, 24), (88, 55)), ((8, 24), (47, 376)),
                ((16, 16), (100, 300)), ((16, 16), (300, 100)), ((8, 8), (7, 9)), ((24, 8), (376, 47)),
                ((16, 8), (49, 392)), ((12, 16), (192, 256)))


@check("unpad")
def check_unpad(unpad):
    """``unpad(features, original_size)``: crop the padding bands off a (C, H, W) map, centred."""
    gen = torch.Generator().manual_seed(0)
    hint = ("original_size is (height, width). If the image is wider than the map (orig_w / orig_h > W / H) "
            "bands sit at the top and bottom: fitted = int(round(orig_h * (W / orig_w), 7)), "
            "crop (H - fitted) // 2 rows from EACH side (a leftover odd row stays); otherwise the same with "
            "columns. round(x, 7) first, so that 14.999999999999998 counts as 15")
    for map_size, original in _UNPAD_CASES:
        features = torch.randn(3, *map_size, generator=gen)
        expected = anyres.unpad(features, original)
        what = f"unpad of a (3, {map_size[0]}, {map_size[1]}) map for an original (height, width) {original}"
        with your_code(unpad):
            got = unpad(features.clone(), original)
        assert_equal(tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__,
                     tuple(expected.shape), what=what + ": shape", hint=hint)
        assert_equal(got, expected, what=what + ": values (which rows and columns were kept)", hint=hint)


def _merge_rows_reference(feature_map: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """(C, H, W) map + (C,) newline -> (H * (W + 1), C), computed by the package's ``merge_tiles``.

    The map is cut into tiles and fed through the very code the model runs, with a canvas of the
    map's own aspect ratio (so unpad keeps everything); the base view's tokens are dropped.
    """
    dim, height, width = feature_map.shape
    p = math.gcd(height, width)
    rows, cols = height // p, width // p
    # The map cut into rows x cols square tiles of p x p, each tile's features in reading order.
    tiles = rearrange(feature_map, "c (rows h) (cols w) -> (rows cols) (h w) c", h=p, w=p)
    features = torch.cat([torch.zeros(1, p * p, dim), tiles])
    return anyres.merge_tiles(features, (height, width), [(rows * p, cols * p)], p, newline)[p * p:]


@check("pack_rows")
def check_pack_rows(pack_rows):
    """``pack_rows(features, newline)``: (C, H, W) + (C,) -> (H * (W + 1), C), a newline ending every row."""
    gen = torch.Generator().manual_seed(0)
    hint = ("read the map row by row (row-major: all of row 0 left to right, then row 1, ...); after the last "
            "feature of EVERY row comes one copy of the newline vector; the result holds one (C,) token per row, "
            "shape (H * (W + 1), C): think of the newline as an extra last column of the map")
    for shape in ((3, 2, 3), (4, 4, 4), (2, 6, 4), (5, 3, 7), (3, 1, 5), (2, 5, 1)):
        features, newline = torch.randn(*shape, generator=gen), torch.randn(shape[0], generator=gen)
        with your_code(pack_rows):
            got = pack_rows(features.clone(), newline.clone())
        assert_close(got, _merge_rows_reference(features, newline),
                     atol=0.0, what=f"sequence packed from a {shape} (C, H, W) map", hint=hint)
