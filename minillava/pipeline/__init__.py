"""`minillava pipeline`: from nothing to a working visual assistant, in one command.

    minillava pipeline                           # the embedded default: toy world, toy backbones, rule teacher
    minillava pipeline --config run.yaml --device cuda
    minillava pipeline --vision openai/clip-vit-large-patch14-336 --language lmsys/vicuna-7b-v1.5 \\
        --stage1-data blip_laion_cc_sbu_558k.json --data llava_v1_5_mix665k.json --image-folder data/

Five steps, each writing into the output folder (``--out``):

| step | what | writes |
|---|---|---|
| data    | toy scenes -> stage-1 captions and the stage-2 mixture, or LLaVA JSON files | data/ |
| stage 1 | plain template, trains the projector only (feature alignment) | stage1/ |
| stage 2 | chat template, trains projector + language model (instruction tuning) | stage2/ |
| save    | the assistant: weights, tokenizer, image processor and template | assistant/ |
| eval    | held-out scenes: short-answer VQA, POPE (random), CHAIR | eval/, report.md |

The toy stage-2 mixture holds the rule teacher's conversations, detailed descriptions and
reasoning (LLaVA-Instruct's three kinds), short-answer VQA with the format prompt, multiple
choice with the letter prompt, and text-only chats; the run prints the mixture it used.

``minillava eval --assistant OUT/assistant --tasks toy_vqa,pope_random,chair`` reproduces
the evaluation. Every option is a field of ``PipelineConfig``; a JSON or YAML file
(``--config``) sets any of them, and flags override the file.
"""

import argparse
import dataclasses
import difflib
import json
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from PIL import Image
from tqdm.auto import tqdm

from minillava.conversation import TEMPLATES
from minillava.data.dataset import InstructionDataset, load_llava_json
from minillava.data.engine import generate
from minillava.data.mix import Source, choice_records, mix, mixture_table, text_records, vqa_records
from minillava.data.prompts import KINDS
from minillava.device import pick_device
from minillava.eval.assistants import ChatAssistant
from minillava.eval.suite import run_suite
from minillava.image import CLIP_MEAN, CLIP_STD, ImageProcessor

# The stage-2 sources of the toy mixture: the rule teacher's three kinds of LLaVA-Instruct
# data, then the toy counterparts of LLaVA-1.5's academic and text-only sources.
TOY_SOURCES = (*KINDS, "vqa", "choice", "text")
# What the evaluation step runs, and the targets of the embedded default (issue 6).
EVAL_TASKS = ("toy_vqa", "pope_random", "chair")
TARGETS = {"toy_vqa": ("accuracy", ">=", 0.85), "pope_random": ("f1", ">=", 0.85), "chair": ("chair_s", "<=", 0.20)}
TIME_TARGET_S = 600


def _option(default, help: str):
    """A config field with its command-line help."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class PipelineConfig:
    """Every option of a run. The defaults are the embedded toy recipe."""

    out: str = _option("runs/pipeline", "output folder")
    device: str | None = _option(None, "cpu, cuda or mps; None: the best available (pick_device)")
    threads: int = _option(1, "torch CPU threads; 0 leaves torch's default (1: toy models gain nothing from "
                              "more, and on a shared CPU competing threads are many times slower)")
    seed: int = _option(0, "seed of the projector's initialisation, the data mixture and the batch order")
    # backbones: a zoo name, a local folder or a Hugging Face id
    vision: str = _option("toy-vision", "vision tower: zoo name, local folder or Hugging Face id")
    language: str = _option("toy-lm", "language model (and its tokenizer): zoo name, folder or Hugging Face id")
    projector: str = _option("mlp2x_gelu", "projector: linear, mlp2x_gelu, ...")
    vision_layer: int | None = _option(None, "hidden state the projector reads; None: -2 as LLaVA-1.5, or for "
                                             "toy-vision its last stage (16 tokens)")
    template: str = _option("vicuna_v1", "stage-2 chat template (the one the language model was tuned with)")
    # data
    data: str = _option("toy", "stage-2 data: 'toy' (generated) or a LLaVA JSON/JSONL file")
    stage1_data: str = _option("toy", "stage-1 data: 'toy' (captions of the toy scenes) or a LLaVA JSON/JSONL file")
    image_folder: str | None = _option(None, "where the image paths of --data / --stage1-data are resolved")
    scenes: int = _option(3000, "toy training scenes (seeds 0..scenes-1): images, captions, instructions")
    mixture: dict = _option({"conversation": 3, "detail": 1, "complex": 1, "vqa": 3, "choice": 1, "text": 1},
                            "stage-2 source weights of the toy mixture, e.g. vqa=3,text=0 (others keep theirs)")
    max_length: int = _option(2048, "longest spliced sequence; longer text is cut, a sample whose image "
                                    "would be cut is skipped")
    # stage 1: feature alignment. LLaVA's lr (1e-3) suits the toy projector as well. LLaVA aligns
    # on 558K captions; 300 steps of 32 left the caption loss still falling (0.64), and the
    # assistant named shapes that were not there. 1000 steps (about 10 passes over 3000
    # captions, 70 s more on a CPU) halved that, measured on 300 held-out scenes: CHAIR_s
    # 0.32 -> 0.17, POPE F1 0.88 -> 0.93, VQA 0.71 -> 0.73 (1200 steps: no better).
    stage1_steps: int = _option(1000, "stage-1 optimizer steps")
    stage1_batch: int = _option(32, "stage-1 micro-batch size")
    stage1_lr: float = _option(1e-3, "stage-1 peak learning rate")
    # stage 2: instruction tuning. LLaVA's 2e-5 is for a 7B language model that already chats,
    # over 5K steps of 128 samples; the 0.56M-parameter toy LM, given a few hundred steps,
    # barely moves at that rate. Small models take far larger steps (the toy LM was itself
    # pretrained at 1e-3), so the toy preset uses 3e-4 (with an earlier toy LM, 1e-3 and 3e-3
    # measured no better; chapter 7 shows 3e-3 wiping out the current one's knowledge).
    stage2_steps: int = _option(500, "stage-2 optimizer steps")
    stage2_batch: int = _option(16, "stage-2 micro-batch size")
    stage2_lr: float = _option(3e-4, "stage-2 peak learning rate (LLaVA: 2e-5 for 7B models)")
    grad_accum: int = _option(1, "micro-batches per optimizer step, both stages")
    gradient_checkpointing: bool = _option(False, "recompute LM activations in backward (real backbones on a GPU)")
    save_every: int | None = _option(None, "steps between resumable checkpoints (rerun the command to resume)")
    # evaluation
    eval_scenes: int = _option(100, "held-out scenes per evaluation task")
    eval_seed: int = _option(0, "which held-out scenes")
    eval_batch: int = _option(32, "questions per batched generation")
    max_new_tokens: int = _option(128, "longest answer the assistant writes")


class ConfigError(ValueError):
    """A config file or option that cannot be used; the message names the problem and the fix."""


# ----------------------------------------------------------------------------
# Options: defaults < config file < flags

FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}
TYPES = typing.get_type_hints(PipelineConfig)


def _check(name: str, value):
    """value, checked against the field's type (ints are accepted as floats)."""
    kind = TYPES[name]
    allowed = typing.get_args(kind) or (kind,)   # (str, NoneType) for `str | None`
    if value is None and type(None) in allowed:
        return None
    base = next(t for t in allowed if t is not type(None))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is dict and isinstance(value, dict):
        return _check_mixture(value)
    # bool is a subclass of int: `steps: true` is a mistake, not 1
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"option {name!r} must be {base.__name__}{' or null' if type(None) in allowed else ''}, "
                          f"got {value!r} ({type(value).__name__})")
    return value


def _check_mixture(weights: dict) -> dict:
    """The default mixture with these sources' weights replaced."""
    unknown = set(weights) - set(TOY_SOURCES)
    if unknown:
        raise ConfigError(f"unknown mixture source(s) {sorted(unknown)}; the toy sources are {', '.join(TOY_SOURCES)}")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ConfigError(f"mixture weight of {name!r} must be a number >= 0, got {w!r}")
    merged = {**FIELDS["mixture"].default_factory(), **weights}
    if sum(merged.values()) <= 0:
        raise ConfigError("every mixture weight is 0; give at least one source a positive weight")
    return merged


def make_config(values: dict, origin: str = "options") -> PipelineConfig:
    """A checked PipelineConfig from a mapping of option names (dashes or underscores)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{origin} must be a mapping of option names to values, got {type(values).__name__}")
    checked = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {key!r} in {origin}{hint}; valid options: {', '.join(FIELDS)}")
        checked[name] = _check(name, value)
    config = PipelineConfig(**checked)
    for name in ("threads", "scenes", "stage1_steps", "stage1_batch", "stage2_steps", "stage2_batch", "grad_accum",
                 "eval_scenes", "eval_batch", "max_new_tokens", "max_length", "save_every"):
        value = getattr(config, name)
        if value is not None and value < (0 if name == "threads" else 1):
            raise ConfigError(f"option {name!r} must be at least {0 if name == 'threads' else 1}, got {value}")
    for name in ("stage1_lr", "stage2_lr"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"option {name!r} must be positive, got {getattr(config, name)}")
    if config.template not in TEMPLATES:
        raise ConfigError(f"unknown template {config.template!r}; choose one of {', '.join(TEMPLATES)}")
    for name in ("data", "stage1_data"):
        value = getattr(config, name)
        if value != "toy" and not Path(value).is_file():
            raise ConfigError(f"{name}: no file at {value}; give a LLaVA JSON/JSONL file, or 'toy'")
    return config


def load_config_file(path: str | Path) -> dict:
    """The options in a JSON (.json) or YAML (.yaml, .yml) file, unchecked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    raise ConfigError(f"config file {path} must end in .json, .yaml or .yml")


def _mixture_flag(text: str) -> dict:
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
        flag, default = "--" + name.replace("_", "-"), f.default_factory() if name == "mixture" else f.default
        base = next(t for t in typing.get_args(TYPES[name]) or (TYPES[name],) if t is not type(None))
        help = f"{f.metadata['help']} (default: {default})"
        # SUPPRESS: a flag not given is absent from the namespace, so the config file's value stands.
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)
        else:
            parser.add_argument(flag, type=_mixture_flag if base is dict else base, default=argparse.SUPPRESS,
                                help=help)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Defaults, overridden by the --config file, overridden by flags."""
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    if not isinstance(values, dict):
        raise ConfigError(f"{args.config} must hold a mapping of option names to values, got {type(values).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    flags = {name: value for name, value in vars(args).items() if name in FIELDS}
    if "mixture" in flags and isinstance(values.get("mixture"), dict):
        flags["mixture"] = {**values["mixture"], **flags["mixture"]}
    return make_config({**values, **flags}, origin=args.config or "flags")


# ----------------------------------------------------------------------------
# The steps


def load_backbones(config: PipelineConfig):
    """The MiniLlava (pretrained backbones, fresh projector), its tokenizer and image processor,
    and how many positions one image takes once spliced in (16 for the toy tower)."""
    # zoo, chat and train import transformers (seconds): imported when a run starts, not
    # whenever the command line is built (`minillava --help`, `minillava eval`).
    from minillava.backbones import zoo

    torch.manual_seed(config.seed)   # the fresh projector's initialisation
    try:
        model, tokenizer = zoo.pretrained_model(config.vision, config.language, config.projector, config.vision_layer)
        processor = image_processor(config.vision, model.vision_tower.model)
    except (ValueError, OSError) as err:   # a misspelt name, a missing folder, no network for a hub id
        raise ConfigError(f"cannot load the backbones (vision {config.vision!r}, language {config.language!r}): "
                          f"{err}") from err
    with torch.no_grad():
        blank = processor([Image.new("RGB", (processor.size, processor.size))])["pixel_values"]
        tokens_per_image = len(model.encode_images(blank)[0])
    return model, tokenizer, processor, tokens_per_image


def image_processor(vision: str, tower: torch.nn.Module) -> ImageProcessor:
    """LLaVA-1.5's pad-to-square preprocessing, at the tower's size and normalisation.

    Both come from the checkpoint's preprocessor_config.json (the shipped toy tower has one,
    as hub checkpoints do); without one, the tower config's image_size with CLIP's statistics.
    """
    from transformers.image_processing_base import ImageProcessingMixin

    from minillava.backbones import zoo

    source = zoo.path(vision) if vision in zoo.SHIPPED else vision
    try:
        settings, _ = ImageProcessingMixin.get_image_processor_dict(str(source))
    except OSError:   # no preprocessor_config.json
        settings = {}
    size = settings.get("crop_size") or settings.get("size") or {}
    side = size.get("height") or size.get("shortest_edge") or getattr(tower.config, "image_size", None)
    if side is None:
        raise ValueError(f"cannot tell the input size of {vision!r}: it has no preprocessor_config.json and its "
                         "config no image_size; add a preprocessor_config.json (crop_size, image_mean, image_std) "
                         "next to its config.json")
    return ImageProcessor("pad", int(side), tuple(settings.get("image_mean", CLIP_MEAN)),
                          tuple(settings.get("image_std", CLIP_STD)))


def toy_data(config: PipelineConfig, folder: Path, total: int, progress: bool) -> tuple[list, list, list]:
    """Stage-1 captions and a stage-2 mixture of ``total`` records, from toy scenes 0..scenes-1.

    Returns (captions, mixture, table). The rule teacher writes the three LLaVA-Instruct
    kinds and renders every scene into folder/images (a rerun reuses its cache); the
    academic and text-only sources are built from the same scenes (data/mix.py). A source
    of weight 0 is not built (its pool shows as 0 in the table).
    """
    weighted = [name for name in TOY_SOURCES if config.mixture[name] > 0]
    captions, pools = toy_pools(range(config.scenes), folder, weighted, config.seed, progress)
    sources = [Source(name, pools.get(name, []), config.mixture[name]) for name in TOY_SOURCES]
    mixture, table = mix(sources, total, seed=config.seed)
    return captions, mixture, table


def toy_pools(seeds, folder: Path, names=TOY_SOURCES, seed: int = 0,
              progress: bool = False) -> tuple[list[dict], dict[str, list[dict]]]:
    """Stage-1 captions and the stage-2 pool of each source in ``names``, all about the scenes ``seeds``.

    The rule teacher renders the scenes into folder/images and writes the captions and the
    LLaVA-Instruct kinds asked for; vqa, choice and text come from data/mix.py.
    """
    generate(seeds, folder, kinds=[kind for kind in KINDS if kind in names], progress=progress)
    instructions = load_llava_json(folder / "llava_instruct.json")
    builders = {"vqa": vqa_records, "choice": choice_records, "text": lambda seeds: text_records(len(seeds), seed)}
    pools = {name: [r for r in instructions if r["id"].endswith(f"-{name}")] if name in KINDS else builders[name](seeds)
             for name in names}
    return load_llava_json(folder / "llava_captions.json"), pools


def datasets(config: PipelineConfig, out: Path, stage2_samples: int, tokenizer, processor, tokens_per_image: int,
             progress: bool) -> tuple[InstructionDataset, InstructionDataset, list[dict]]:
    """Stage-1 and stage-2 training sets (bad records skipped and counted), and the mixture table."""
    if "toy" in (config.data, config.stage1_data):
        # The toy mixture is exactly what stage 2 will see: one record per trained sample.
        captions, mixture, table = toy_data(config, out / "data", stage2_samples, progress)
    if config.stage1_data != "toy":
        captions = load_llava_json(config.stage1_data)
    if config.data != "toy":
        records = load_llava_json(config.data)
        mixture, table = mix([Source(Path(config.data).name, records, 1.0)], len(records), seed=config.seed)

    def dataset(records, source, template, stage):
        folder = out / "data" if source == "toy" else config.image_folder
        records = tqdm(records, desc=f"{stage} samples", unit="rec", disable=not progress)   # checked, tokenised
        data = InstructionDataset(records, tokenizer, template, lambda image: processor([image])["pixel_values"][0],
                                  image_folder=folder, tokens_per_image=tokens_per_image, max_length=config.max_length)
        if len(data) == 0:
            raise ConfigError(f"{stage}: every record of {source} was skipped, nothing to train on:\n"
                              f"{data.report.summary()}")
        return data

    return (dataset(captions, config.stage1_data, "plain", "stage 1"),
            dataset(mixture, config.data, config.template, "stage 2"), table)


@dataclass
class PipelineResult:
    """What a run produced: the folder, the report, the evaluation's metrics, losses and timings."""

    out: Path
    report: str
    metrics: dict   # task -> its metrics (as in eval/results.json)
    losses: dict    # stage -> (first, final) loss per supervised token
    seconds: dict   # step -> wall time


def run(config: PipelineConfig, progress: bool = True, log=print) -> PipelineResult:
    """Backbones -> data -> stage 1 -> stage 2 -> saved assistant -> evaluation -> report.md."""
    from minillava.chat import Assistant, save_assistant
    from minillava.train import STAGE1, STAGE2, train

    start, seconds, out = time.perf_counter(), {}, Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA device; use --device cpu, or install "
                          "a CUDA build of torch on a machine with a GPU")
    common = dict(grad_accum=config.grad_accum, save_every=config.save_every, seed=config.seed,
                  gradient_checkpointing=config.gradient_checkpointing)
    stages = (dataclasses.replace(STAGE1, lr=config.stage1_lr, batch_size=config.stage1_batch,
                                  max_steps=config.stage1_steps, **common),
              dataclasses.replace(STAGE2, template=config.template, lr=config.stage2_lr, batch_size=config.stage2_batch,
                                  max_steps=config.stage2_steps, **common))

    def timed(name, fn, *args, **kwargs):
        tic = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - tic
        return value

    log(f"[1/5] backbones ({config.vision}, {config.language}) and data -> {out / 'data'}")
    model, tokenizer, processor, tokens_per_image = timed("backbones", load_backbones, config)
    samples = config.stage2_steps * config.stage2_batch * config.grad_accum
    captions, mixture, table = timed("data", datasets, config, out, samples, tokenizer, processor,
                                     tokens_per_image, progress)
    log(f"stage-2 mixture ({config.data}):\n{mixture_table(table)}")

    results = {}
    for step, (stage, data) in enumerate(zip(stages, (captions, mixture)), start=2):
        log(f"[{step}/5] {stage.name}: {stage.template} template, trains {' + '.join(stage.trainable)}, "
            f"{len(data)} samples ({data.report.skipped} skipped) -> {out / stage.name}")
        results[stage.name] = timed(stage.name, train, model, stage, data, out / stage.name, lengths=data.lengths,
                                    has_image=data.has_image, pad_token_id=model.config.pad_token_id,
                                    device=device, progress=progress)

    log(f"[4/5] assistant -> {out / 'assistant'}")
    assistant = Assistant(model.eval(), tokenizer, processor, template=config.template,
                          max_new_tokens=config.max_new_tokens)
    save_assistant(assistant, out / "assistant")

    log(f"[5/5] evaluation on {config.eval_scenes} held-out scenes per task -> {out / 'eval'}")
    evaluation = timed("eval", run_suite, ChatAssistant(assistant, name=out.name), list(EVAL_TASKS),
                       config.eval_scenes, config.eval_seed, batch_size=config.eval_batch, progress=progress)
    evaluation.save(out / "eval")
    seconds["total"] = time.perf_counter() - start

    metrics = {r.task.name: r.metrics for r in evaluation.results}
    losses = {name: (r.metrics[0]["loss"] if r.metrics else None, r.final_loss) for name, r in results.items()}
    report = _report(config, device, table, (captions, mixture), stages, results, metrics, seconds,
                     evaluation.to_markdown())
    (out / "report.md").write_text(report + "\n")
    (out / "summary.json").write_text(json.dumps({"metrics": metrics, "losses": losses, "seconds": seconds}, indent=2))
    log(report)
    return PipelineResult(out, report, metrics, losses, seconds)


def _report(config, device, table, data, stages, results, metrics, seconds, eval_markdown) -> str:
    """The run as markdown: backbones, data, training, evaluation against the targets, time."""
    lines = [f"# minillava pipeline: {config.out}", "",
             f"vision `{config.vision}`, language `{config.language}`, projector `{config.projector}`, "
             f"device `{device}`, seed {config.seed}", "",
             "## Data", "", f"Stage-2 mixture ({config.data}), as trained:", "", mixture_table(table), ""]
    for stage, dataset in zip(stages, data):
        lines += [f"{stage.name} records:", "", dataset.report.summary(), ""]
    lines += ["## Training", "", "| stage | template | trains | steps | batch | lr | first loss | final loss | "
              "tokens/s | seconds |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for stage in stages:
        r = results[stage.name]
        first = f"{r.metrics[0]['loss']:.3f}" if r.metrics else "n/a"
        lines.append(f"| {stage.name} | {stage.template} | {' + '.join(stage.trainable)} | {r.steps} | "
                     f"{stage.batch_size * stage.grad_accum} | {stage.lr:g} | {first} | {r.final_loss:.3f} | "
                     f"{r.tokens_per_s:.0f} | {seconds[stage.name]:.0f} |")
    lines += ["", "Loss curves: stage1/loss.png, stage2/loss.png.", "",
              "## Evaluation (held-out scenes)", "", "| task | metric | value | target | met |",
              "|---|---|---:|---|---|"]
    for task, (metric, op, target) in TARGETS.items():
        value = metrics[task][metric]
        met = value >= target if op == ">=" else value <= target
        lines.append(f"| {task} | {metric} | {value:.3f} | {op} {target:g} | {'yes' if met else 'NO'} |")
    within = seconds["total"] <= TIME_TARGET_S
    lines += [f"| whole run | seconds | {seconds['total']:.0f} | <= {TIME_TARGET_S} | {'yes' if within else 'NO'} |",
              "", "Targets are those of the embedded default on a 2-core CPU. CHAIR counts only shapes the "
              f"descriptions mention ({metrics['chair']['n_mentions']} mentions here): a description that names "
              "none cannot hallucinate one.", "", eval_markdown, "", "## Time", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {step} | {s:.1f} |" for step, s in seconds.items()]
    lines += ["", f"Chat with it: `minillava.chat.load_assistant('{config.out}/assistant').ask(image, question)`; "
                  f"evaluate it again: `minillava eval --assistant {config.out}/assistant "
                  f"--tasks {','.join(EVAL_TASKS)} --n {config.eval_scenes}`."]
    return "\n".join(lines)
