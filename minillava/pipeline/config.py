"""The pipeline's options: one dataclass, checked from its own fields.

Every option is a field of ``PipelineConfig`` with its default, its help and the rules its
value must keep (``option(..., at_least=1)``). The checks read the field's type (int, float,
str, ``None`` allowed or not) and those rules, so a new option needs one line here and no
checking code. Options arrive from three places, each overriding the one before:

    the defaults (the embedded toy recipe) < a JSON or YAML file (--config) < flags

and every bad value stops the run before it starts, with one line that names the option
and what to give instead.
"""

import argparse
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minillava.conversation import TEMPLATES
from minillava.data.prompts import KINDS
from minillava.data.sources import DataError, source_kind
from minillava.distributed import MODES
from minillava.errors import UserError

# The stage-2 sources of the toy mixture: the rule teacher's three kinds of LLaVA-Instruct
# data, then the toy counterparts of LLaVA-1.5's academic and text-only sources.
TOY_SOURCES = (*KINDS, "vqa", "choice", "text")
TOY_MIXTURE = {"conversation": 3, "detail": 1, "complex": 1, "vqa": 3, "choice": 1, "text": 1}


class ConfigError(UserError):
    """A config file or option that cannot be used; the message names the problem and the fix."""


def mixture_weights(weights: dict) -> dict:
    """The toy mixture with these sources' weights replaced (the others keep theirs)."""
    unknown = set(weights) - set(TOY_SOURCES)
    if unknown:
        raise ConfigError(f"unknown mixture source(s) {sorted(unknown)}; the toy sources are {', '.join(TOY_SOURCES)}")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"mixture weight of {name!r} must be a number >= 0, got {w!r}")
    merged = {**TOY_MIXTURE, **weights}
    if sum(merged.values()) <= 0:
        raise ConfigError("every mixture weight is 0; give at least one source a positive weight")
    return merged


RULES = ("at_least", "positive", "choices", "or_source", "check")


def option(default, help: str, **rules):
    """A config field: its default, its command-line help, and the rules `check_option` applies.

        at_least=N      a number, N or more
        positive=True   a number above 0
        choices=NAMES   one of these names ...
        or_source=True  ... or a data source: a LLaVA JSON/JSONL file, a parquet file, a `datasets`
                        folder or a hub id (minillava.data.sources)
        check=FN        FN(value) returns the value to use or raises ConfigError (the one
                        option whose value has parts of its own: the mixture)
    """
    if set(rules) - set(RULES):   # a misspelt rule would otherwise be ignored, and its check never made
        raise TypeError(f"unknown option rule(s) {sorted(set(rules) - set(RULES))}; the rules are {', '.join(RULES)}")
    if isinstance(default, dict):   # a mutable default: each config gets its own copy
        return field(default_factory=lambda: dict(default), metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


@dataclass
class PipelineConfig:
    """Every option of a run. The defaults are the embedded toy recipe."""

    out: str = option("runs/pipeline", "output folder")
    device: str | None = option(None, "cpu, cuda or mps; None: the best available (pick_device)")
    threads: int = option(1, "torch CPU threads; 0 leaves torch's default (1: toy models gain nothing from "
                             "more, and on a shared CPU competing threads are many times slower)", at_least=0)
    seed: int = option(0, "seed of the projector's initialisation, the data mixture and the batch order")
    # backbones: a zoo name, a local folder or a Hugging Face id
    vision: str = option("toy-vision", "vision tower: zoo name, local folder or Hugging Face id")
    language: str = option("toy-lm", "language model (and its tokenizer): zoo name, folder or Hugging Face id")
    projector: str = option("mlp2x_gelu", "projector: linear, mlp2x_gelu, ...")
    vision_layer: int | None = option(None, "hidden state the projector reads; None: -2 as LLaVA-1.5, or for "
                                            "the toy RegNet tower its last stage (16 tokens)")
    template: str = option("vicuna_v1", "stage-2 chat template (the one the language model was tuned with)",
                           choices=TEMPLATES)
    # data
    data: str = option("toy", "stage-2 data: 'toy' (generated), a LLaVA JSON/JSONL file, a parquet file, a `datasets` "
                              "folder or a hub id", choices=("toy",), or_source=True)
    stage1_data: str = option("toy", "stage-1 data: 'toy' (captions of the toy scenes), or a data source as --data",
                              choices=("toy",), or_source=True)
    image_folder: str | None = option(None, "where the image paths of --data are resolved")
    stage1_image_folder: str | None = option(None, "where the image paths of --stage1-data are resolved "
                                                   "(LLaVA keeps LLaVA-Pretrain/images apart); None: --image-folder")
    scenes: int = option(3000, "toy training scenes (seeds 0..scenes-1): images, captions, instructions",
                         at_least=1)
    mixture: dict[str, float] = option(TOY_MIXTURE, "stage-2 source weights of the toy mixture, e.g. vqa=3,text=0 "
                                                    "(others keep theirs)", check=mixture_weights)
    max_length: int = option(2048, "longest spliced sequence; longer text is cut, a sample whose image "
                                   "would be cut is skipped", at_least=1)
    # stage 1: feature alignment. LLaVA's lr (1e-3) suits the toy projector as well. LLaVA aligns
    # on 558K captions; 300 steps of 32 left the caption loss still falling (0.64), and the
    # assistant named shapes that were not there. 1000 steps (about 10 passes over 3000
    # captions, 70 s more on a CPU) halved that, measured on 300 held-out scenes: CHAIR_s
    # 0.32 -> 0.17, POPE F1 0.88 -> 0.93, VQA 0.71 -> 0.73 (1200 steps: no better).
    stage1_steps: int = option(1000, "stage-1 optimizer steps", at_least=1)
    stage1_batch: int = option(32, "stage-1 micro-batch size", at_least=1)
    stage1_lr: float = option(1e-3, "stage-1 peak learning rate", positive=True)
    # stage 2: instruction tuning. LLaVA's 2e-5 is for a 7B language model that already chats,
    # over 5K steps of 128 samples; the 0.56M-parameter toy LM, given a few hundred steps,
    # barely moves at that rate. Small models take far larger steps (the toy LM was itself
    # pretrained at 1e-3), so the toy preset uses 3e-4 (with an earlier toy LM, 1e-3 and 3e-3
    # measured no better; chapter 7 shows 3e-3 wiping out the current one's knowledge).
    stage2_steps: int = option(500, "stage-2 optimizer steps", at_least=1)
    stage2_batch: int = option(16, "stage-2 micro-batch size", at_least=1)
    stage2_lr: float = option(3e-4, "stage-2 peak learning rate (LLaVA: 2e-5 for 7B models)", positive=True)
    stage2_projector_lr: float | None = option(None, "stage-2 peak learning rate of the projector; None: --stage2-lr, "
                                                     "or with --lora 2e-5 (LLaVA's LoRA recipe; its adapters: 2e-4)", positive=True)
    grad_accum: int = option(1, "micro-batches per optimizer step, both stages", at_least=1)
    gradient_checkpointing: bool = option(False, "recompute LM activations in backward (real backbones on a GPU)")
    # precision and scale (real backbones on GPUs)
    precision: str = option("auto", "auto: bf16 autocast where the GPU supports it, fp16 autocast with loss "
                                    "scaling where it does not, fp32 on a CPU; or fp32, bf16, fp16",
                            choices=("auto", "fp32", "bf16", "fp16"))
    distributed: str = option("ddp", "under torchrun: ddp (a copy of the model per process) or fsdp (stage 2's "
                                     "weights, gradients and optimizer state sharded across processes; stage 1, "
                                     "the projector alone, stays under ddp)",
                              choices=MODES)
    # LoRA for stage 2 (LLaVA's LoRA recipe: r 128, alpha 256, projector lr 2e-5)
    lora: bool = option(False, "stage 2 trains low-rank adapters on the language model instead of all its weights")
    qlora: bool = option(False, "LoRA on a 4-bit quantised language model (bitsandbytes, CUDA only)")
    lora_r: int = option(128, "LoRA rank", at_least=1)
    lora_alpha: float = option(256.0, "LoRA scaling numerator (the update is scaled by alpha / r)", positive=True)
    lora_dropout: float = option(0.05, "dropout on the LoRA branch", at_least=0.0)
    # data loading
    num_workers: int = option(0, "DataLoader worker processes that decode images and tokenize samples", at_least=0)
    max_skip_ratio: float = option(0.05, "stop the run when more than this share of the records seen were "
                                         "skipped as bad (missing images, malformed conversations ...)",
                                   at_least=0.0)
    save_every: int | None = option(None, "steps between resumable checkpoints (rerun the command to resume)",
                                    at_least=1)
    # evaluation
    eval: bool = option(True, "evaluate the assistant on held-out toy scenes at the end (--no-eval: skip, as "
                              "real runs should; evaluate real benchmarks with `minillava eval`)")
    eval_scenes: int = option(100, "held-out scenes per evaluation task", at_least=1)
    eval_seed: int = option(0, "which held-out scenes")
    eval_batch: int = option(32, "questions per batched generation", at_least=1)
    max_new_tokens: int = option(128, "longest answer the assistant writes", at_least=1)


# ----------------------------------------------------------------------------
# Checking one option against its field

FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}
TYPES = typing.get_type_hints(PipelineConfig)


def _kind(name: str) -> tuple[type, bool]:
    """The option's type, and whether it may be None: ``int | None`` -> (int, True)."""
    hint = TYPES[name]
    if isinstance(hint, types.UnionType):   # `X | None`
        args = typing.get_args(hint)
        return next(t for t in args if t is not type(None)), type(None) in args
    return typing.get_origin(hint) or hint, False   # dict[str, float] -> dict


def check_option(name: str, value):
    """value, checked against the option's type and rules (ints are accepted as floats)."""
    base, nullable = _kind(name)
    rules = FIELDS[name].metadata
    if value is None and nullable:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # bool is a subclass of int: `steps: true` is a mistake, not 1
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"option {name!r} must be {base.__name__}{' or null' if nullable else ''}, "
                          f"got {value!r} ({type(value).__name__})")
    if "check" in rules:
        return rules["check"](value)
    if "at_least" in rules and value < rules["at_least"]:
        raise ConfigError(f"option {name!r} must be at least {rules['at_least']}, got {value}")
    if rules.get("positive") and not value > 0:   # `not >`: NaN is refused too
        raise ConfigError(f"option {name!r} must be positive, got {value}")
    if "choices" in rules and value not in rules["choices"]:
        if "or_source" not in rules:
            raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(rules['choices'])}")
        try:
            source_kind(value)   # names the source's kind from its path alone: nothing is read yet
        except DataError as err:
            raise ConfigError(f"{name}: {err}, or {' or '.join(map(repr, rules['choices']))}") from None
    return value


def make_config(values: dict, origin: str = "options") -> PipelineConfig:
    """A checked PipelineConfig from a mapping of option names (dashes or underscores)."""
    _require_mapping(values, origin)
    checked = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {key!r} in {origin}{hint}; valid options: {', '.join(FIELDS)}")
        checked[name] = check_option(name, value)
    return PipelineConfig(**checked)


def _require_mapping(values, origin: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{origin} must hold a mapping of option names to values, got {type(values).__name__}")


# ----------------------------------------------------------------------------
# Where options come from: a file, flags

def load_config_file(path: str | Path) -> dict:
    """The options in a JSON (.json) or YAML (.yaml, .yml) file: a mapping, its values unchecked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    else:
        raise ConfigError(f"config file {path} must end in .json, .yaml or .yml")
    _require_mapping(values, str(path))
    return values


def _weights_flag(text: str) -> dict:
    """'vqa=3,text=0' -> {"vqa": 3.0, "text": 0.0}"""
    weights = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected source=weight pairs such as vqa=3,text=0; got {item!r}")
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per PipelineConfig field (--stage2-lr ...), plus --config FILE."""
    parser.add_argument("--config", help="JSON or YAML file of options (names as below, with _ or -); flags win")
    for name, f in FIELDS.items():
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        flag, base, help = "--" + name.replace("_", "-"), _kind(name)[0], f"{f.metadata['help']} (default: {default})"
        # SUPPRESS: a flag not given is absent from the namespace, so the config file's value stands.
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)
        else:
            parser.add_argument(flag, type=_weights_flag if base is dict else base, default=argparse.SUPPRESS,
                                help=help)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Defaults, overridden by the --config file, overridden by flags."""
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    flags = {name: value for name, value in vars(args).items() if name in FIELDS}
    for name, value in flags.items():   # a mapping flag (--mixture vqa=5) updates the file's mapping
        if isinstance(value, dict) and isinstance(values.get(name), dict):
            flags[name] = {**values[name], **value}
    return make_config({**values, **flags}, origin=args.config or "flags")
