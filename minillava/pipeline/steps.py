"""The run, step by step: backbones, data, stage 1, stage 2, the saved assistant, evaluation.

``run`` chains the steps and writes every file of the output folder; each step is also a
function of its own that the chapters call (``load_backbones`` in chapters 4 and 7).

The modules that import transformers (zoo, chat, train: seconds) are imported inside the
steps that use them, not at the top: ``minillava --help``, ``minillava eval`` and
``from minillava import course`` import this package and should not wait for transformers.
No import loop is dodged that way; the package's import graph counts these imports too.
"""

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minillava.data.dataset import InstructionDataset, load_llava_json
from minillava.data.engine import generate
from minillava.data.mix import Source, choice_records, mix, mixture_table, text_records, vqa_records
from minillava.data.prompts import KINDS
from minillava.device import pick_device
from minillava.eval.suite import run_suite
from minillava.image import CLIP_MEAN, CLIP_STD, ImageProcessor
from minillava.pipeline.config import TOY_SOURCES, ConfigError, PipelineConfig
from minillava.pipeline.report import EVAL_TASKS, report_markdown


def load_backbones(config: PipelineConfig):
    """The MiniLlava (pretrained backbones, fresh projector), its tokenizer and image processor,
    and how many positions one image takes once spliced in (16 for the toy tower)."""
    from minillava.backbones import zoo   # transformers: late, see the module docstring

    torch.manual_seed(config.seed)   # the fresh projector's initialisation
    try:
        model, tokenizer = zoo.pretrained_model(config.vision, config.language, config.projector, config.vision_layer)
        processor = image_processor(config.vision, model.vision_tower.model)
    except (ValueError, OSError) as err:   # a misspelt name, a missing folder, no network for a hub id
        raise ConfigError(f"cannot load the backbones (vision {config.vision!r}, language {config.language!r}): "
                          f"{err}") from err
    tower = model.vision_tower
    if tower.image_size is None:   # a convolutional tower (toy-vision) takes any size: the one it is fed here
        tower.model.config.image_size = processor.size
    return model, tokenizer, processor, tower.num_patches


def image_processor(vision: str, tower: torch.nn.Module) -> ImageProcessor:
    """LLaVA-1.5's pad-to-square preprocessing, at the tower's size and normalisation.

    Both come from the checkpoint's preprocessor_config.json (the shipped toy tower has one,
    as hub checkpoints do); without one, the tower config's image_size with CLIP's statistics.
    """
    from transformers.image_processing_base import ImageProcessingMixin   # late, see the module docstring

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
    from minillava.chat import Assistant, save_assistant   # transformers: late, see the module docstring
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
                          max_new_tokens=config.max_new_tokens, name=out.name)
    save_assistant(assistant, out / "assistant")

    log(f"[5/5] evaluation on {config.eval_scenes} held-out scenes per task -> {out / 'eval'}")
    evaluation = timed("eval", run_suite, assistant, list(EVAL_TASKS),
                       config.eval_scenes, config.eval_seed, batch_size=config.eval_batch, progress=progress)
    evaluation.save(out / "eval")
    seconds["total"] = time.perf_counter() - start

    metrics = {r.task.name: r.metrics for r in evaluation.results}
    losses = {name: (r.metrics[0]["loss"] if r.metrics else None, r.final_loss) for name, r in results.items()}
    report = report_markdown(config, device, table, (captions, mixture), stages, results, metrics, seconds,
                     evaluation.to_markdown())
    (out / "report.md").write_text(report + "\n")
    (out / "summary.json").write_text(json.dumps({"metrics": metrics, "losses": losses, "seconds": seconds}, indent=2))
    log(report)
    return PipelineResult(out, report, metrics, losses, seconds)

