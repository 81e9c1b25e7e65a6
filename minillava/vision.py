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

How many tokens an image becomes is known without running the tower (``num_patches``):
a ViT cuts its ``image_size`` square into ``patch_size`` patches; a convolutional tower
halves its map at every stride-2 step. Splicing, the dataset's length counts and the
export to transformers all need that number before any image is encoded.
"""

import torch
from einops import rearrange
from torch import nn

SELECT_STRATEGIES = ("patch", "cls_patch")
# The learned vector a ViT puts in front of its patches, by its name in transformers' towers
# (CLIP: class_embedding; ViT, DINOv2: cls_token). SigLIP has none.
_CLS_PARAMETERS = ("class_embedding", "cls_token")
# Convolutional towers of the ResNet family: stride-2 steps in the stem (RegNet: one conv;
# ResNet: a conv and a max-pool); then every stage halves the map, the first one only
# with ``downsample_in_first_stage``.
_CONV_STEM_HALVINGS = {"regnet": 1, "resnet": 2}


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
        # A ViT cuts the image into patch_size patches; a convolutional tower is a pyramid of
        # stages (its config lists their hidden_sizes), even one with a patchify stem (ConvNeXt).
        self.patch_size = None if hasattr(cfg, "hidden_sizes") else getattr(cfg, "patch_size", None)
        self.has_cls = any(name.endswith(_CLS_PARAMETERS) for name, _ in model.named_parameters())

    @property
    def feature_dim(self) -> int:
        """Width of one output feature: hidden size x number of feature layers."""
        return self.hidden_size * len(self.layers)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.model.parameters())

    @property
    def image_size(self) -> int | None:
        """Side of the square view the tower takes (its config's ``image_size``).

        A ViT's learned position embeddings fix it (CLIP-L/14-336: 336). A convolutional
        tower takes any size and has one only once told, e.g. ``model.config.image_size = 64``
        (the size its preprocessor crops to); until then None.
        """
        return getattr(self.model.config, "image_size", None)

    @property
    def num_patches(self) -> int:
        """Tokens one ``image_size`` view becomes: the patch grid, plus CLS if kept.

        E.g. CLIP-L/14-336: (336 / 14)^2 = 576 (577 with ``select="cls_patch"``).
        """
        if self.image_size is None:
            raise ValueError(
                f"this {self.model.config.model_type} tower is convolutional and takes any size, so it has no "
                "token count of its own; tell it the size it is fed first: vision_tower.model.config.image_size = "
                "<the size its preprocessor crops to> (64 for toy-vision)"
            )
        rows, cols = self.patch_grid(self.image_size, self.image_size)
        return rows * cols + int(self.has_cls and self.select == "cls_patch")

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, cols) of the feature map a height x width view becomes; tokens read it row by row."""
        if self.patch_size is not None:  # a ViT: one token per whole patch
            return height // self.patch_size, width // self.patch_size
        cfg = self.model.config
        if cfg.model_type not in _CONV_STEM_HALVINGS:
            raise ValueError(
                f"cannot tell the feature map size of a {cfg.model_type} tower without running it; "
                f"supported: ViT-style towers (patch_size in the config), {', '.join(_CONV_STEM_HALVINGS)}"
            )
        grids = {self._conv_grid(cfg, layer, height, width) for layer in self.layers}
        if len(grids) > 1:
            raise ValueError(f"feature layers {self.layers} are maps of different sizes {sorted(grids)}; "
                             "read layers of one stage (or one layer)")
        return grids.pop()

    @staticmethod
    def _conv_grid(cfg, layer: int, height: int, width: int) -> tuple[int, int]:
        # hidden_states: the stem's output, then one per stage. A stride-2 step (kernel k,
        # padding k // 2) turns a side n into ceil(n / 2).
        stage_halves = [cfg.downsample_in_first_stage] + [True] * (len(cfg.depths) - 1)
        halvings = _CONV_STEM_HALVINGS[cfg.model_type] + sum(stage_halves[: layer % (1 + len(cfg.depths))])
        for _ in range(halvings):
            height, width = -(-height // 2), -(-width // 2)
        return height, width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, P, feature_dim) patch features."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values must have shape (num_images, {self.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}; stack one preprocessed image per <image> placeholder"
            )
        size = self.image_size
        if size is not None and tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(
                f"pixel_values are {pixel_values.shape[-2]}x{pixel_values.shape[-1]} but the vision tower "
                f"expects {size}x{size}; resize (or tile) the image with the tower's preprocessing first"
            )
        dtype = next(self.model.parameters()).dtype
        # A frozen tower needs no autograd graph: LLaVA runs it under no_grad to save memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(pixel_values.to(dtype), output_hidden_states=True)
        feats = [self._select(self._as_sequence(out.hidden_states[i]), *pixel_values.shape[-2:]) for i in self.layers]
        return torch.cat(feats, dim=-1)

    @staticmethod
    def _as_sequence(h: torch.Tensor) -> torch.Tensor:
        # Convolutional stages return (B, C, H, W) maps: read them as H*W patch tokens, row by row.
        return rearrange(h, "b c h w -> b (h w) c") if h.dim() == 4 else h

    def _select(self, h: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # A CLS token shows up as exactly one token more than the patch grid holds.
        if self.select == "patch" and self.patch_size is not None:
            rows, cols = self.patch_grid(height, width)
            if h.shape[1] == rows * cols + 1:
                return h[:, 1:]
        return h
