"""The projector: the small bridge between a frozen vision encoder and a language model.

LLaVA's whole architectural idea fits in one sentence: map every visual patch feature
into the language model's word-embedding space, so that the LM can read an image as if
it were a sequence of (unusual) words. The map is deliberately tiny:

- ``linear``        LLaVA (v1):   Linear(vision_dim, text_dim)
- ``mlp{N}x_gelu``  LLaVA-1.5:    Linear, then (GELU, Linear) repeated N-1 times
                    (``mlp2x_gelu`` is the two-layer MLP that "doubled performance")
- ``identity``      a sanity baseline when both widths already agree

Shapes: (..., vision_dim) -> (..., text_dim); the leading dimensions (batch, patches)
pass through untouched.
"""

import re
from collections import OrderedDict

from torch import nn

_MLP = re.compile(r"^mlp(\d+)x_gelu$")
PROJECTOR_NAMES = ("linear", "mlp{N}x_gelu (e.g. mlp2x_gelu)", "identity")


class MLPProjector(nn.Sequential):
    """``depth`` Linear layers with an exact (erf) GELU between consecutive ones.

    The layers are named ``linear_1 ... linear_N`` and the activations ``act_1 ...``
    so that a state dict reads like transformers' LLaVA projector (``linear_1``,
    ``linear_2``) and weights can be copied across by name.
    """

    def __init__(self, in_dim: int, out_dim: int, depth: int):
        layers = {"linear_1": nn.Linear(in_dim, out_dim)}
        for i in range(2, depth + 1):
            layers[f"act_{i - 1}"] = nn.GELU()  # exact GELU, as LLaVA-1.5 uses
            layers[f"linear_{i}"] = nn.Linear(out_dim, out_dim)
        super().__init__(OrderedDict(layers))


def build_projector(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """Build a projector by LLaVA's name for it (``mm_projector_type``).

    Args:
        name: ``"linear"``, ``"mlp{N}x_gelu"`` with N >= 1, or ``"identity"``.
        in_dim: width of the vision features (times the number of feature layers).
        out_dim: hidden size of the language model.
    """
    if name == "linear":
        return nn.Linear(in_dim, out_dim)
    if name == "identity":
        if in_dim != out_dim:
            raise ValueError(
                f"projector 'identity' needs equal widths, got vision {in_dim} != text {out_dim}; "
                "use 'linear' or 'mlp2x_gelu' to map between different widths"
            )
        return nn.Identity()
    match = _MLP.match(name)
    if match and int(match.group(1)) >= 1:
        return MLPProjector(in_dim, out_dim, depth=int(match.group(1)))
    raise ValueError(f"unknown projector {name!r}; valid names: {', '.join(PROJECTOR_NAMES)}")
