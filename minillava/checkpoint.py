"""Saving and loading, in safetensors only (no pickle: a checkpoint cannot run code).

Three kinds of files, as LLaVA has them:

- the projector alone (``mm_projector.safetensors``): what stage 1 produces -- the only
  thing it trained -- and what stage 2 starts from;
- a whole model folder (``minillava.json`` + ``model.safetensors``): the backbones'
  configs and every weight, loadable without the original backbone files;
- a training state (``checkpoint-<step>/``): trainable weights, optimizer moments and
  the step/RNG/data position, so that a resumed run continues exactly.
"""

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from minillava.model import MiniLlava, MiniLlavaConfig

CONFIG_FILE, WEIGHTS_FILE, PROJECTOR_FILE = "minillava.json", "model.safetensors", "mm_projector.safetensors"


def _contiguous(state: dict) -> dict:
    # safetensors refuses tensors that share memory or are views; store plain copies.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def save_projector(model: MiniLlava, path: str | Path) -> Path:
    """Write the projector's weights (stage 1's whole output) to one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(model.projector.state_dict()), str(path), metadata={"projector": model.config.projector})
    return path


def load_projector(model: MiniLlava, path: str | Path) -> None:
    """Load a stage-1 projector file into ``model`` (names and shapes must match)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no projector file at {path}; run stage 1 first (it writes {PROJECTOR_FILE})")
    model.projector.load_state_dict(load_file(str(path)))


def save_model(model: MiniLlava, folder: str | Path) -> Path:
    """Write a self-contained model folder: our config, both backbone configs, all weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "minillava": dataclasses.asdict(model.config),
        "vision_config": model.vision_tower.model.config.to_dict(),
        "text_config": model.language_model.config.to_dict(),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file(_contiguous(model.state_dict()), str(folder / WEIGHTS_FILE))
    return folder


def load_model(folder: str | Path) -> MiniLlava:
    """Rebuild a MiniLlava saved by :func:`save_model` (no download, no pickle)."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing; is {folder} a folder written by save_model?")
    config = json.loads((folder / CONFIG_FILE).read_text())
    vision_cfg, text_cfg = (AutoConfig.for_model(**config[k]) for k in ("vision_config", "text_config"))
    model = MiniLlava(MiniLlavaConfig(**config["minillava"]), AutoModel.from_config(vision_cfg),
                      AutoModelForCausalLM.from_config(text_cfg))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval()
