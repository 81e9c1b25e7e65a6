"""Where models come from: tiny random backbones, shipped toy backbones, real ones.

Every test and the first chapters need *some* vision tower and language model without
a download. ``tiny_backbones`` builds randomly initialised transformers models at toy
size (a few hundred thousand parameters): their outputs are meaningless, but every
shape, every code path and every comparison with transformers' LLaVA is the real one.

Training needs backbones that already know something, as LLaVA starts from CLIP and
Vicuna. ``load`` returns the pretrained toy backbones shipped in minillava/backbones/weights/
(made by ``minillava.backbones.build``; ``available()`` lists them) or any real checkpoint
from a folder or the Hugging Face Hub, through the same call::

    tower, lm, tok = load("toy-vision"), load("toy-lm"), load_tokenizer("toy-lm")
    model, tok = pretrained_model()                        # toy backbones + a fresh projector
    model, tok = pretrained_model("google/siglip-base-patch16-224", "HuggingFaceTB/SmolLM2-135M")
"""

import hashlib
import json
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig,
                          CLIPVisionModel, LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING

from minillava.backbones.recipe import feature_layer
from minillava.backbones.toy_clip import ToyCLIP
from minillava.conversation import IMAGE_MARKER
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


# ----------------------------------------------------------------------------
# Pretrained backbones: the shipped toy ones, or any from a folder or the Hugging Face Hub

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
REBUILD = "rebuild the shipped backbones with `minillava zoo build`"
# In the order the build makes them (build.py writes these folders and their manifest).
SHIPPED = {
    "toy-clip": "the whole toy CLIP: vision and text towers, projections, temperature (toy_clip.ToyCLIP)",
    "toy-vision": "the vision tower of toy-clip (RegNetModel; a CLIPVisionModel if built with --recipe vit): "
                  "a 64x64 image -> 16 tokens of width 64, read where recipe.feature_layer says",
    "toy-lm": "a LlamaForCausalLM pretrained on toy text, with its tokenizer (vicuna_v1 chat template)",
}


def available() -> list[str]:
    """Names of the shipped pretrained backbones (built by ``minillava.backbones.build``)."""
    return sorted(SHIPPED)


def sha256(file: Path) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def path(name: str) -> Path:
    """The folder of a shipped backbone, once every file in it matches the build's manifest.

    The manifest records a SHA-256 per file, so a missing, truncated or edited file is
    named here instead of failing somewhere inside from_pretrained.
    """
    if name not in SHIPPED:
        raise ValueError(f"unknown zoo name {name!r}; available: {', '.join(available())} "
                         "(load() also takes a local folder or a Hugging Face id)")
    manifest = WEIGHTS_DIR / MANIFEST
    try:
        files = json.loads(manifest.read_text())[name]
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest} is missing, so the shipped weights cannot be checked; {REBUILD}") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{manifest} is corrupt (no file list for {name!r}); {REBUILD}") from None
    folder = WEIGHTS_DIR / name
    for relative, digest in files.items():
        file = folder / relative
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; {REBUILD}")
        if sha256(file) != digest:
            raise ValueError(f"{file} is corrupt or was modified (its SHA-256 differs from the one "
                             f"recorded when it was built); {REBUILD}")
    return folder


def _source(name: str) -> tuple[str | Path, dict]:
    """Where from_pretrained should look, and the keyword that keeps local loads offline."""
    if name in SHIPPED:
        return path(name), {"local_files_only": True}
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder, {"local_files_only": True}
    if name.startswith((".", "/", "~")) or "\\" in name:
        raise FileNotFoundError(f"no folder at {folder}")
    if "/" not in name:
        raise ValueError(f"unknown zoo name {name!r}; available: {', '.join(available())} "
                         "(or give a local folder, or a Hugging Face id such as 'openai/clip-vit-large-patch14-336')")
    return name, {}   # a Hugging Face id: downloaded once, unless HF_HUB_OFFLINE=1


def load(name: str, **kwargs) -> nn.Module:
    """A pretrained backbone in eval mode, by zoo name, local folder or Hugging Face id.

    toy-vision -> RegNetModel (CLIPVisionModel from ``zoo build --recipe vit``), toy-lm ->
    LlamaForCausalLM, toy-clip -> toy_clip.ToyCLIP.
    Any other checkpoint by what its config says: a causal LM (Vicuna, SmolLM2, ...) ->
    AutoModelForCausalLM; a two-tower model (CLIP, SigLIP: its config has a
    vision_config) -> its vision tower alone (CLIPVisionModel, ...), as LLaVA loads it;
    anything else -> AutoModel (a bare vision tower). kwargs go to from_pretrained
    (e.g. dtype=torch.bfloat16).
    """
    if name == "toy-clip":
        return ToyCLIP.load(path(name))
    source, offline = _source(name)
    config = AutoConfig.from_pretrained(source, **offline)
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        model = AutoModelForCausalLM.from_pretrained(source, **offline, **kwargs)
    elif hasattr(config, "vision_config"):
        # CLIPVisionModel, SiglipVisionModel, ...: reads the vision half of the checkpoint only
        tower_class = MODEL_MAPPING.get(type(config.vision_config), None)
        if tower_class is None:
            raise ValueError(f"{name!r} is a {config.model_type} model whose vision part transformers cannot "
                             "load alone; pass a vision tower (CLIP, SigLIP, ...) or a causal LM")
        model = tower_class.from_pretrained(source, **offline, **kwargs)
    else:
        model = AutoModel.from_pretrained(source, **offline, **kwargs)
    return model.eval()


def load_tokenizer(name: str = "toy-lm", **kwargs):
    """The tokenizer that goes with a language model (zoo name, local folder or Hugging Face id)."""
    source, offline = _source(name)
    return AutoTokenizer.from_pretrained(source, **offline, **kwargs)


def pretrained_model(vision: str = "toy-vision", language: str = "toy-lm", projector: str = "mlp2x_gelu",
                     vision_feature_layer: int | None = None, **kwargs) -> tuple[MiniLlava, "PreTrainedTokenizerBase"]:  # noqa: F821
    """A MiniLlava on pretrained backbones with a fresh projector, and its tokenizer.

    The default is the shipped toy pair; real ones go through the same call, e.g.
    ``pretrained_model("openai/clip-vit-large-patch14-336", "lmsys/vicuna-7b-v1.5")``.
    vision_feature_layer: None reads LLaVA's -2, or for the toy RegNet tower its last stage
    (recipe.feature_layer decides by the loaded tower's kind, whether it came from the zoo or
    a folder). A tokenizer without "<image>" gets it as a special token and the language
    model a row for it, as LLaVA does.
    """
    tower, lm, tokenizer = load(vision, **kwargs), load(language, **kwargs), load_tokenizer(language)
    if vision_feature_layer is None:
        vision_feature_layer = feature_layer(tower.config)
    if IMAGE_MARKER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_MARKER]})
        lm.resize_token_embeddings(len(tokenizer))
    # LLaMA/Vicuna tokenizers have no padding token; any id works, padding is masked out.
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = MiniLlavaConfig(image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_MARKER), projector=projector,
                             vision_feature_layer=vision_feature_layer, pad_token_id=pad)
    return MiniLlava(config, tower, lm).eval(), tokenizer
