"""MiniLlava: a pretrained vision tower + a projector + a pretrained causal LM.

    image --VisionTower--> (P, Dv) patch features --projector--> (P, D) "visual words"
    text  --tokenizer----> ids with one <image> placeholder per image
    splice(visual words into the text embeddings) --language model--> next-token logits

The backbones come from transformers (any vision model, any causal LM); everything in
between -- the projector, the splicing, the masked loss and the generation loop -- is
written out here and in the modules it imports, and is proven equal to transformers'
``LlavaForConditionalGeneration`` in tests/test_model_vs_hf.py. With
``image_mode="anyres"`` an image is a base view plus tiles (LLaVA-NeXT, see anyres.py),
proven equal to ``LlavaNextForConditionalGeneration`` in tests/test_llava_next_vs_hf.py.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from minillava.anyres import check_pinpoints, grid_shape, merge_tiles
from minillava.image import check_mode
from minillava.loss import lean_loss_sum, masked_lm_loss, scored_positions
from minillava.projector import build_projector
from minillava.splicing import splice
from minillava.vision import VisionTower


@dataclass
class MiniLlavaConfig:
    """Everything that is ours (the backbones carry their own configs).

    image_token_id: the id of the single ``<image>`` placeholder in ``input_ids``.
    projector: ``"linear"`` (LLaVA), ``"mlp2x_gelu"`` (LLaVA-1.5), ``"identity"``.
    vision_feature_layer: hidden-state index (or list) read from the tower; -2 as in 1.5.
    vision_feature_select: ``"patch"`` drops CLS, ``"cls_patch"`` keeps it.
    max_length: spliced sequences are truncated to this (never through an image).
    pad_token_id: id written after a finished sequence in batched generation.
    image_mode: ``"pad"`` or ``"resize"`` (one view per image; the two differ only in
        preprocessing, see image.py) or ``"anyres"`` (LLaVA-NeXT: base view + tiles).
    image_grid_pinpoints: AnyRes candidate canvases, (height, width) multiples of the
        tower's image size; None = ``anyres.default_pinpoints(tower image size)``.
    """

    image_token_id: int
    projector: str = "mlp2x_gelu"
    vision_feature_layer: int | list[int] = -2
    vision_feature_select: str = "patch"
    max_length: int | None = None
    pad_token_id: int = 0
    image_mode: str = "pad"
    image_grid_pinpoints: list[tuple[int, int]] | None = None

    def __post_init__(self):
        check_mode(self.image_mode)


@dataclass
class MiniLlavaOutput:
    """logits (B, L, V) over the spliced sequence; loss (scalar) when labels were given
    (and not declined with ``return_loss=False``); labels / attention_mask / image_mask
    (B, L) of the spliced sequence -- the labels the logits are scored against. The lean
    training path (``lean=True``) gives no logits but loss_sum and n_tokens (loss.lean_loss_sum)."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None
    labels: torch.Tensor | None
    attention_mask: torch.Tensor
    image_mask: torch.Tensor = field(repr=False)
    loss_sum: torch.Tensor | None = None
    n_tokens: int | None = None


class MiniLlava(nn.Module):
    def __init__(self, config: MiniLlavaConfig, vision_model: nn.Module, language_model: nn.Module):
        super().__init__()
        self.config = config
        self.vision_tower = VisionTower(vision_model, config.vision_feature_layer, config.vision_feature_select)
        text_dim = language_model.get_input_embeddings().embedding_dim
        self.projector = build_projector(config.projector, self.vision_tower.feature_dim, text_dim)
        self.language_model = language_model
        if config.image_mode == "anyres":
            tile = self.vision_tower.image_size
            if tile is None:
                raise ValueError("AnyRes cuts images into tiles of the tower's input size, but this convolutional "
                                 "tower has none; set vision_model.config.image_size first (e.g. 64 for toy-vision)")
            self.pinpoints = check_pinpoints(config.image_grid_pinpoints, tile)
            # Ends every row of an image's tiled feature map; initialised as in LLaVA-NeXT.
            self.image_newline = nn.Parameter(torch.randn(text_dim) / math.sqrt(text_dim))

    def encode_images(self, pixel_values: torch.Tensor, image_sizes=None) -> list[torch.Tensor]:
        """Images -> one (P_i, D) tensor of projected features per image.

        Single view: pixel_values (N, C, H, W), image_sizes None. AnyRes: pixel_values
        (N, max_views, C, H, W), each image's base view and tiles zero-padded to
        max_views (as ``image.ImageProcessor`` and transformers lay them out), and
        image_sizes (N, 2) original (height, width); P_i then varies with the image size.
        """
        if self.config.image_mode != "anyres":
            if image_sizes is not None:
                raise ValueError(f"image_sizes is only used by image_mode='anyres' (this model: "
                                 f"{self.config.image_mode!r}); pass image_sizes=None")
            return list(self._project(self.vision_tower(pixel_values)))
        if image_sizes is None or pixel_values.dim() != 5 or len(image_sizes) != len(pixel_values):
            raise ValueError(
                "image_mode='anyres' needs pixel_values (num_images, max_views, C, H, W) and image_sizes "
                f"(num_images, 2) of original (height, width); got pixel_values {tuple(pixel_values.shape)} and "
                f"image_sizes {None if image_sizes is None else len(image_sizes)}; "
                "use minillava.image.ImageProcessor(mode='anyres')"
            )
        tile = self.vision_tower.image_size
        sizes = torch.as_tensor(image_sizes).tolist()
        counts = [1 + math.prod(grid_shape(s, self.pinpoints, tile)) for s in sizes]
        # One tower pass over the real views of all images (the padding views are dropped).
        views = torch.cat([pv[:n] for pv, n in zip(pixel_values, counts)])
        features = self._project(self.vision_tower(views)).split(counts)
        return [merge_tiles(f, s, self.pinpoints, tile, self.image_newline) for f, s in zip(features, sizes)]

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        # A frozen tower may stay in half precision while the trained projector is float32
        # (train.master_weights): its features meet the projector in the projector's dtype.
        weight = next(self.projector.parameters(), None)
        return self.projector(features if weight is None else features.to(weight.dtype))

    def _splice(self, input_ids, pixel_values, image_sizes, attention_mask, labels, padding_side):
        images = [] if pixel_values is None else self.encode_images(pixel_values, image_sizes)
        return splice(
            input_ids, images, self.language_model.get_input_embeddings(), self.config.image_token_id,
            attention_mask=attention_mask, labels=labels, max_length=self.config.max_length,
            padding_side=padding_side,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        padding_side: str = "right",
        return_loss: bool = True,
        lean: bool = False,
    ) -> MiniLlavaOutput:
        """Run the model on a batch.

        Args:
            input_ids: (B, T) with one ``config.image_token_id`` per image.
            pixel_values: one image per placeholder, in reading order: (N, C, H, W), or
                (N, max_views, C, H, W) in AnyRes mode (see ``encode_images``).
            attention_mask: (B, T), 1 = real token (any padding side).
            labels: (B, T) targets aligned with input_ids, IGNORE_INDEX (-100) = not supervised.
            image_sizes: (N, 2) original (height, width) per image; AnyRes mode only.
            padding_side: side on which the spliced batch is re-padded.
            return_loss: False skips the mean loss; the output still holds the logits and
                the spliced labels, for a caller that sums token losses itself (chapter 4's
                loop, with ``loss.lm_loss_sum``).
            lean: the trainer's memory-lean path (needs labels): the language model computes
                vocabulary logits only at the scored positions, and the output holds their
                token-loss sum and count (``loss.lean_loss_sum``) instead of logits.
        """
        s = self._splice(input_ids, pixel_values, image_sizes, attention_mask, labels, padding_side)
        # Without padding the mask adds nothing but cost: let the LM use its causal fast path.
        mask = None if bool(s.attention_mask.all()) else s.attention_mask
        if lean:
            if labels is None:
                raise ValueError("lean=True computes the training loss and needs labels; pass labels=")
            keep = scored_positions(s.labels)
            out = self.language_model(inputs_embeds=s.embeds, attention_mask=mask, position_ids=s.position_ids,
                                      logits_to_keep=keep)
            loss_sum, n_tokens = lean_loss_sum(out.logits, s.labels)
            return MiniLlavaOutput(None, None, s.labels, s.attention_mask, s.image_mask, loss_sum, n_tokens)
        out = self.language_model(inputs_embeds=s.embeds, attention_mask=mask, position_ids=s.position_ids)
        loss = masked_lm_loss(out.logits, s.labels) if labels is not None and return_loss else None
        return MiniLlavaOutput(out.logits, loss, s.labels, s.attention_mask, s.image_mask)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_sizes: torch.Tensor | None = None,
                 **options) -> torch.Tensor:
        """Continue each prompt; returns the (B, n_new) new token ids.

        input_ids, pixel_values, attention_mask and image_sizes are as in ``forward``; the
        options (max_new_tokens, temperature, top_p, eos_token_id, stop_strings, tokenizer,
        generator) as in ``generate_steps``, which runs the loop one step at a time.
        """
        return torch.stack(list(self.generate_steps(input_ids, pixel_values, attention_mask, image_sizes, **options)),
                           dim=1)

    @torch.no_grad()
    def generate_steps(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        stop_strings: list[str] | None = None,
        tokenizer=None,
        generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """Continue each prompt, yielding each step's (B,) new token ids as soon as they are chosen.

        Greedy when ``temperature == 0``, else sampling with temperature and nucleus
        (top-p) filtering. A sequence stops at ``eos_token_id`` or once its decoded text
        contains one of ``stop_strings`` (needs ``tokenizer``); finished sequences are
        filled with ``config.pad_token_id``. Prompts are left-padded after splicing so
        that every sample's next token is predicted at the last position, and the
        language model's KV cache means each new token costs one position, not a
        re-read of the whole prompt.

        Streaming needs nothing more: a chat prints each token while the next one is being
        computed, and a caller that has what it wants (a stop string of its own, a client
        that left) stops iterating -- or closes the generator -- and no further step runs.
        """
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need a tokenizer to decode the generated text; pass tokenizer=")
        s = self._splice(input_ids, pixel_values, image_sizes, attention_mask, None, "left")
        lm, mask, positions = self.language_model, s.attention_mask, s.position_ids
        padded = not bool(mask.all())  # without padding, the LM's causal fast path needs no mask
        out = lm(inputs_embeds=s.embeds, attention_mask=mask if padded else None, position_ids=positions,
                 use_cache=True)
        batch = input_ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=mask.device)
        new_tokens = []
        for _ in range(max_new_tokens):
            token = self._next_token(out.logits[:, -1], temperature, top_p, generator)
            token = token.masked_fill(done, self.config.pad_token_id)
            new_tokens.append(token)
            yield token
            if eos_token_id is not None:
                done |= token == eos_token_id
            if stop_strings:
                done |= _contains_stop(torch.stack(new_tokens, 1), stop_strings, tokenizer)
            if done.all():
                break
            # Feed only the new token; the cache holds keys/values of all earlier ones.
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = lm(input_ids=token[:, None], attention_mask=mask if padded else None, position_ids=positions,
                     cache=out.cache, use_cache=True)

    @staticmethod
    def _next_token(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
        """(B, V) logits -> (B,) token ids: argmax, or a top-p sample at ``temperature``."""
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set of most likely tokens whose mass reaches top_p
        # (a token is kept if the mass *before* it is still below top_p).
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)


def _contains_stop(tokens: torch.Tensor, stop_strings: list[str], tokenizer) -> torch.Tensor:
    """(B, n) generated ids -> (B,) True where the decoded text contains a stop string."""
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return torch.tensor([any(s in t for s in stop_strings) for t in texts], device=tokens.device)
