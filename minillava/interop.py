"""Interop with transformers' LLaVA: the same weights, in our model or in theirs.

``from_hf`` lets a learner load any LLaVA checkpoint that transformers can load (for
example llava-hf/llava-1.5-7b-hf, on a machine with the network and memory for it) into
MiniLlava; ``to_hf`` goes back, so a model trained here is saved with
``save_pretrained`` and loaded by anyone with ``LlavaForConditionalGeneration``.
LLaVA-NeXT (``LlavaNextForConditionalGeneration``) maps to ``image_mode="anyres"``: the
same parts plus the grid pinpoints and the learned ``image_newline``.

The one naming difference worth knowing: transformers' LlavaModel holds the *base*
language model (no head) and keeps ``lm_head`` beside it; we hold a whole causal LM.
"""

import copy

from transformers import (AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                          LlavaNextForConditionalGeneration)

from minillava.errors import UserError
from minillava.model import MiniLlava, MiniLlavaConfig

# transformers' names for the CLS choice -> ours
_SELECT_FROM_HF = {"default": "patch", "full": "cls_patch"}
_SELECT_TO_HF = {v: k for k, v in _SELECT_FROM_HF.items()}


def from_hf(hf: LlavaForConditionalGeneration | LlavaNextForConditionalGeneration) -> MiniLlava:
    """Copy a transformers LLaVA (or LLaVA-NeXT) model into a MiniLlava."""
    cfg = hf.config
    if cfg.projector_hidden_act != "gelu" or not cfg.multimodal_projector_bias:
        raise ValueError(
            f"only LLaVA's mlp2x_gelu projector (exact gelu, with bias) is supported, got "
            f"act={cfg.projector_hidden_act!r}, bias={cfg.multimodal_projector_bias}"
        )
    is_next = isinstance(hf, LlavaNextForConditionalGeneration)
    config = MiniLlavaConfig(
        image_token_id=cfg.image_token_id,
        projector="mlp2x_gelu",
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select=_SELECT_FROM_HF[cfg.vision_feature_select_strategy],
        pad_token_id=cfg.text_config.pad_token_id or 0,
        image_mode="anyres" if is_next else "pad",
        image_grid_pinpoints=[tuple(p) for p in cfg.image_grid_pinpoints] if is_next else None,
    )
    lm = AutoModelForCausalLM.from_config(cfg.text_config)
    lm.model.load_state_dict(hf.model.language_model.state_dict())
    lm.lm_head.load_state_dict(hf.lm_head.state_dict())
    model = MiniLlava(config, copy.deepcopy(hf.model.vision_tower), lm)
    model.projector.load_state_dict(hf.model.multi_modal_projector.state_dict(), strict=True)
    if is_next:
        model.image_newline.data.copy_(hf.model.image_newline.data)
    return model.to(hf.dtype)


def to_hf(model: MiniLlava) -> LlavaForConditionalGeneration | LlavaNextForConditionalGeneration:
    """Copy a MiniLlava into transformers' LLaVA, or LLaVA-NeXT for ``image_mode="anyres"``.

    The copy is on the CPU in the model's dtype, wherever the model is (a model on a GPU
    stays there; its weights are copied over). Raises ``UserError`` for what transformers'
    LLaVA cannot hold: another projector, or a tower that is not a ViT.
    """
    config = model.config
    if config.projector != "mlp2x_gelu":
        raise UserError(f"transformers' LLaVA only has the mlp2x_gelu projector; this model uses {config.projector!r}")
    tower = model.vision_tower
    if tower.patch_size is None or tower.image_size is None:
        # LlavaModel.get_image_features reads hidden_states[layer] as a (batch, tokens, width)
        # sequence and cuts its CLS by position: a convolutional map does not fit it.
        cfg = tower.model.config
        raise UserError(f"transformers' LLaVA reads a ViT's sequence of hidden states; this model's vision tower is "
                        f"a convolutional {cfg.model_type} ({type(tower.model).__name__}), which it cannot hold: "
                        "export an assistant built on a ViT-style tower (CLIP, SigLIP)")
    lm = model.language_model
    anyres = config.image_mode == "anyres"
    extra = dict(image_grid_pinpoints=[list(p) for p in model.pinpoints]) if anyres else {}
    # "default" drops the first token by position: right for CLIP's CLS, wrong for a tower
    # without one (SigLIP), whose "patch" features are all of its tokens ("full").
    select = _SELECT_TO_HF[config.vision_feature_select] if tower.has_cls else "full"
    hf_config = (LlavaNextConfig if anyres else LlavaConfig)(
        vision_config=tower.model.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_id=config.image_token_id,
        image_seq_length=tower.num_patches,  # tokens per image (view), CLS or not
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=select,
        projector_hidden_act="gelu",
        **extra,
    )
    cls = LlavaNextForConditionalGeneration if anyres else LlavaForConditionalGeneration
    # Built on the CPU in the model's dtype; load_state_dict copies each weight over from wherever it is.
    hf = cls._from_config(hf_config, dtype=next(model.parameters()).dtype)
    hf.model.vision_tower.load_state_dict(tower.model.state_dict())
    hf.model.language_model.load_state_dict(lm.model.state_dict())
    hf.lm_head.load_state_dict(lm.lm_head.state_dict())
    hf.model.multi_modal_projector.load_state_dict(model.projector.state_dict())
    if anyres:
        hf.model.image_newline.data.copy_(model.image_newline.data)
    return hf.eval()
