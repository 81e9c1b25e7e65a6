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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from minillava.errors import UserError
from minillava.loss import DivergenceError
from minillava.model import MiniLlava, MiniLlavaConfig

CONFIG_FILE, WEIGHTS_FILE, PROJECTOR_FILE = "minillava.json", "model.safetensors", "mm_projector.safetensors"


def _contiguous(state: dict) -> dict:
    # safetensors refuses tensors that share memory or are views; store plain copies.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def check_finite(state: dict, path: Path) -> None:
    """Refuse to write weights that hold a NaN or an infinity: they come from a training that diverged."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise DivergenceError(f"refusing to write {path}: {name} holds {bad} NaN/inf value(s), so the training "
                                  "that made it diverged; rerun with a lower learning rate or --precision fp32")


def save_projector(model: MiniLlava, path: str | Path, state: dict | None = None) -> Path:
    """Write the projector's weights (stage 1's whole output) to one safetensors file.

    state: the whole model's weights, if not model.state_dict() (a sharded model's, gathered).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = (model.projector.state_dict() if state is None else
               {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")})
    check_finite(weights, path)
    save_file(_contiguous(weights), str(path), metadata={"projector": model.config.projector})
    return path


def load_projector(model: MiniLlava, path: str | Path) -> None:
    """Load a stage-1 projector file into ``model`` (names and shapes must match)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no projector file at {path}; run stage 1 first (it writes {PROJECTOR_FILE})")
    model.projector.load_state_dict(load_file(str(path)))


def save_model(model: MiniLlava, folder: str | Path, state: dict | None = None) -> Path:
    """Write a self-contained model folder: our config, both backbone configs, all weights.

    state: the weights, if not model.state_dict() (a sharded model's, gathered: distributed.full_state_dict).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "minillava": dataclasses.asdict(model.config),
        "vision_config": model.vision_tower.model.config.to_dict(),
        "text_config": model.language_model.config.to_dict(),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = model.state_dict() if state is None else state
    check_finite(state, folder / WEIGHTS_FILE)
    save_file(_contiguous(state), str(folder / WEIGHTS_FILE))
    return folder


def load_model(folder: str | Path) -> MiniLlava:
    """Rebuild a MiniLlava saved by :func:`save_model` (no download, no pickle)."""
    folder = Path(folder)
    resave = "re-save the assistant (minillava pipeline writes one)"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: {folder} is not a whole folder written by "
                                    f"save_model; {resave}")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
        vision_cfg, text_cfg = (AutoConfig.for_model(**config[k]) for k in ("vision_config", "text_config"))
        ours = MiniLlavaConfig(**config["minillava"])
    except (ValueError, KeyError, TypeError) as err:   # not JSON, a missing part, an unknown model type
        raise UserError(f"{folder / CONFIG_FILE} is corrupt ({type(err).__name__}: {err}); {resave}") from None
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except SafetensorError as err:   # cut short by a full disk or an interrupted copy
        raise UserError(f"weights file {folder / WEIGHTS_FILE} is truncated or corrupt ({err}); {resave}") from None
    model = MiniLlava(ours, AutoModel.from_config(vision_cfg), AutoModelForCausalLM.from_config(text_cfg))
    # Checked here, so that a mismatch is one line and not load_state_dict's list of every key.
    expected = model.state_dict()
    bad = sorted(set(expected) ^ set(state)) + sorted(k for k in set(expected) & set(state)
                                                      if expected[k].shape != state[k].shape)
    if bad:
        raise UserError(f"weights file {folder / WEIGHTS_FILE} does not fit {CONFIG_FILE}: {len(bad)} tensor(s) "
                        f"missing, unexpected or of another shape (first: {bad[0]}); {resave}")
    model.load_state_dict(state)
    return model.eval()
