"""Where models come from: tiny random backbones built on the spot.

Every test and the first chapters need *some* vision tower and language model without
a download. ``tiny_backbones`` builds randomly initialised transformers models at toy
size (a few hundred thousand parameters): their outputs are meaningless, but every
shape, every code path and every comparison with transformers' LLaVA is the real one.
"""

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

from minillava.model import MiniLlava, MiniLlavaConfig


def tiny_backbones(
    vision: str = "clip",
    image_size: int = 32,
    patch_size: int = 8,
    vocab_size: int = 100,
    hidden_size: int = 32,
    seed: int = 0,
):
    """A random tiny vision model and causal LM: ``(vision_model, language_model)``.

    vision: ``"clip"`` (has a CLS token) or ``"siglip"`` (no CLS token).
    The LM's vocabulary is ``vocab_size`` ids; its last id is free for an image
    placeholder. pad = 0, bos = 1, eos = 2.
    """
    torch.manual_seed(seed)
    common = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                  num_attention_heads=4, image_size=image_size, patch_size=patch_size)
    if vision == "clip":
        tower = CLIPVisionModel(CLIPVisionConfig(**common))
    elif vision == "siglip":
        tower = SiglipVisionModel(SiglipVisionConfig(**common))
    else:
        raise ValueError(f"unknown tiny vision tower {vision!r}; valid: 'clip', 'siglip'")
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ))
    return tower.eval(), lm.eval()


def tiny_random_model(projector: str = "mlp2x_gelu", image_mode: str = "pad", **kwargs) -> MiniLlava:
    """A MiniLlava on tiny random backbones; the image placeholder is the last vocab id.

    ``image_mode="anyres"`` tiles with ``anyres.default_pinpoints(image_size)``.
    """
    tower, lm = tiny_backbones(**kwargs)
    config = MiniLlavaConfig(image_token_id=lm.config.vocab_size - 1, projector=projector, image_mode=image_mode)
    return MiniLlava(config, tower, lm).eval()
