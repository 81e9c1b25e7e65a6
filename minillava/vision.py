"""The vision tower: a frozen, pretrained image encoder read at one (or more) layers.

LLaVA does not use the encoder's final output. It takes ``hidden_states[layer]`` --
LLaVA-1.5 reads the penultimate layer (-2), whose patch features are less specialised
to CLIP's contrastive objective -- and, by default, drops the CLS token so that every
visual token is a spatial patch. This wrapper makes those two choices explicit and
works for any transformers vision model:

- ViT-style towers with a CLS token (CLIP): ``select="patch"`` drops it,
  ``select="cls_patch"`` keeps it;
- towers without CLS (SigLIP): nothing to drop, both strategies keep every patch --
  the wrapper checks instead of assuming, which avoids the classic "image features and
  image tokens do not match" error;
- convolutional towers whose hidden states are (B, C, H, W) maps: flattened to
  (B, H*W, C) patch sequences.

A list of layers concatenates their features along the channel dimension.
"""

import torch
from torch import nn

SELECT_STRATEGIES = ("patch", "cls_patch")


class VisionTower(nn.Module):
    """Wrap a transformers vision model to produce patch features.

    Args:
        model: e.g. ``CLIPVisionModel`` or ``SiglipVisionModel`` (anything that returns
            ``hidden_states`` when called with ``output_hidden_states=True``).
        feature_layer: index into ``hidden_states`` (0 = embeddings), or a list of them.
        select: ``"patch"`` (drop CLS if there is one) or ``"cls_patch"`` (keep all).
    """

    def __init__(self, model: nn.Module, feature_layer: int | list[int] = -2, select: str = "patch"):
        super().__init__()
        if select not in SELECT_STRATEGIES:
            raise ValueError(f"unknown select strategy {select!r}; valid: {', '.join(SELECT_STRATEGIES)}")
        self.model = model
        self.layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
        self.select = select
        cfg = model.config
        self.hidden_size = cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.hidden_sizes[-1]
        self.num_channels = getattr(cfg, "num_channels", 3)

    @property
    def feature_dim(self) -> int:
        """Width of one output feature: hidden size x number of feature layers."""
        return self.hidden_size * len(self.layers)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.model.parameters())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, P, feature_dim) patch features."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must have shape (num_images, {self.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}; stack one preprocessed image per <image> placeholder"
            )
        size = getattr(self.model.config, "image_size", None)
        if size is not None and tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values are {pixel_values.shape[-2]}x{pixel_values.shape[-1]} but the vision tower "
                f"expects {size}x{size}; resize (or tile) the image with the tower's preprocessing first"
            )
        dtype = next(self.model.parameters()).dtype
        # A frozen tower needs no autograd graph: LLaVA runs it under no_grad to save memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(pixel_values.to(dtype), output_hidden_states=True)
        grid = self._grid_tokens(*pixel_values.shape[-2:])
        feats = [self._select(self._as_sequence(out.hidden_states[i]), grid) for i in self.layers]
        return torch.cat(feats, dim=-1)

    @staticmethod
    def _as_sequence(h: torch.Tensor) -> torch.Tensor:
        # Convolutional stages return (B, C, H, W) maps: read them as H*W patch tokens.
        return h.flatten(2).transpose(1, 2) if h.dim() == 4 else h

    def _grid_tokens(self, height: int, width: int) -> int | None:
        patch = getattr(self.model.config, "patch_size", None)
        return None if patch is None else (height // patch) * (width // patch)

    def _select(self, h: torch.Tensor, grid: int | None) -> torch.Tensor:
        # A CLS token shows up as exactly one token more than the patch grid holds.
        if self.select == "patch" and grid is not None and h.shape[1] == grid + 1:
            return h[:, 1:]
        return h
