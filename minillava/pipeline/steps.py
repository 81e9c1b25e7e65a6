"""The run, step by step: backbones, data, stage 1, stage 2, the saved assistant, evaluation.

``run`` chains the steps and writes every file of the output folder; each step is also a
function of its own that the chapters call (``load_backbones`` in chapters 4 and 7).

The modules that import transformers (zoo, chat, train: seconds) are imported inside the
steps that use them, not at the top: ``minillava --help``, ``minillava eval`` and
``from minillava import course`` import this package and should not wait for transformers.
No import loop is dodged that way; the package's import graph counts these imports too.
"""

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minillava import distributed
from minillava.data.dataset import InstructionDataset, LazyInstructionDataset, load_llava_json
from minillava.data.engine import generate
from minillava.data.mix import Source, choice_records, mix, mixture_table, text_records, vqa_records
from minillava.data.prompts import KINDS
from minillava.data.sources import open_source
from minillava.device import pick_device
from minillava.eval.suite import run_suite
from minillava.image import CLIP_MEAN, CLIP_STD, ImageProcessor
from minillava.pipeline.config import TOY_SOURCES, ConfigError, PipelineConfig
from minillava.pipeline.report import EVAL_TASKS, report_markdown
from minillava.precision import autocast_dtype


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
    if distributed.is_main():   # under torchrun, the others read what rank 0 wrote (pipeline.run)
        generate(seeds, folder, kinds=[kind for kind in KINDS if kind in names], progress=progress)
    instructions = load_llava_json(folder / "llava_instruct.json")
    builders = {"vqa": vqa_records, "choice": choice_records, "text": lambda seeds: text_records(len(seeds), seed)}
    pools = {name: [r for r in instructions if r["id"].endswith(f"-{name}")] if name in KINDS else builders[name](seeds)
             for name in names}
    return load_llava_json(folder / "llava_captions.json"), pools


def data_sources(config: PipelineConfig) -> dict:
    """The stages' data sources that are not toy data, indexed ({"stage1": ..., "stage2": ...}).

    ``run`` opens them before it loads any model: a malformed file stops it within seconds.
    """
    wanted = {"stage1": config.stage1_data, "stage2": config.data}
    return {stage: open_source(spec) for stage, spec in wanted.items() if spec != "toy"}


def datasets(config: PipelineConfig, out: Path, stage2_samples: int, tokenizer, processor, tokens_per_image: int,
             progress: bool, sources: dict | None = None) -> tuple[InstructionDataset | LazyInstructionDataset,
                                                                   InstructionDataset | LazyInstructionDataset,
                                                                   list[dict]]:
    """Stage-1 and stage-2 training sets (bad records skipped and counted), and the mixture table.

    The toy data is made here and checked up front (InstructionDataset). A data source -- a
    LLaVA JSON/JSONL file, a `datasets` folder, a parquet file, a hub id (data/sources.py) --
    is indexed and read lazily (LazyInstructionDataset): its bad records are skipped as
    training reads them, and the run stops when more than --max-skip-ratio of them are. Each
    stage resolves its image paths in its own folder: LLaVA keeps LLaVA-Pretrain/images (stage
    1) apart from coco/, gqa/, ocr_vqa/... (stage 2); --stage1-image-folder defaults to --image-folder.
    ``sources``: ``data_sources(config)`` if already opened.
    """
    sources = data_sources(config) if sources is None else sources
    if "toy" in (config.data, config.stage1_data):
        # The toy mixture is exactly what stage 2 will see: one record per trained sample.
        captions, mixture, table = toy_data(config, out / "data", stage2_samples, progress)
    if config.stage1_data != "toy":
        captions = sources["stage1"]
    if config.data != "toy":   # the whole source, once (the batch schedule shuffles it)
        mixture = sources["stage2"]
        table = [{"source": mixture.name, "weight": 1.0, "share": 1.0, "records": len(mixture), "pool": len(mixture),
                  "passes": 1.0}]
    process = functools.partial(_one_image, processor)

    def dataset(records, source, template, stage, folder):
        options = dict(tokens_per_image=tokens_per_image, max_length=config.max_length)
        if source != "toy":
            return LazyInstructionDataset(records, tokenizer, template, process, image_folder=folder,
                                          max_skip_ratio=config.max_skip_ratio, name=f"{stage} ({records.name})",
                                          **options)
        records = tqdm(records, desc=f"{stage} samples", unit="rec", disable=not progress)   # checked, tokenised
        data = InstructionDataset(records, tokenizer, template, process, image_folder=out / "data", **options)
        if len(data) == 0:
            raise ConfigError(f"{stage}: every record of {source} was skipped, nothing to train on:\n"
                              f"{data.report.summary()}")
        return data

    return (dataset(captions, config.stage1_data, "plain", "stage 1", config.stage1_image_folder or config.image_folder),
            dataset(mixture, config.data, config.template, "stage 2", config.image_folder), table)


def _one_image(processor, image) -> torch.Tensor:
    """One image's pixels (a module-level function, so DataLoader workers can be handed it)."""
    return processor([image])["pixel_values"][0]


@dataclass
class PipelineResult:
    """What a run produced: the folder, the report, the evaluation's metrics, losses and timings."""

    out: Path
    report: str
    metrics: dict   # task -> its metrics (as in eval/results.json)
    losses: dict    # stage -> (first, final) loss per supervised token
    seconds: dict   # step -> wall time


def run(config: PipelineConfig, progress: bool = True, log=print) -> PipelineResult:
    """Backbones -> data -> stage 1 -> stage 2 -> saved assistant -> evaluation -> report.md.

    Under torchrun every process calls this, and together they are one run: they join one
    process group (left again at the end, or on an error), each trains on its share of every
    batch, and rank 0 alone prints, writes the output folder, saves and evaluates.
    """
    with distributed.launch():
        main = distributed.is_main()
        return _run(config, progress and main, log if main else lambda *args: None)


def _run(config: PipelineConfig, progress: bool, log) -> PipelineResult:
    from minillava.chat import Assistant, save_assistant   # transformers: late, see the module docstring
    from minillava.checkpoint import load_model
    from minillava.lora import PROJECTOR_LR, add_adapters, check_qlora, describe   # peft: late, as transformers
    from minillava.train import STAGE1, STAGE2, train

    start, seconds, out = time.perf_counter(), {}, Path(config.out)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA device; use --device cpu, or install "
                          "a CUDA build of torch on a machine with a GPU")
    device = distributed.local_device(device)   # under torchrun on CUDA: GPU LOCAL_RANK, one per process
    if config.distributed == "fsdp" and not distributed.active():   # one process has nothing to shard across
        raise ConfigError("--distributed fsdp shards the model across the processes torchrun starts; launch with "
                          "`torchrun --nproc-per-node N --no-python minillava pipeline ...`, or drop --distributed")
    if config.distributed == "fsdp" and config.save_every:   # a checkpoint would need every shard gathered
        raise ConfigError("--save-every cannot be combined with --distributed fsdp yet (resumable checkpoints hold "
                          "whole weights and optimizer moments); drop --save-every, or use --distributed ddp")
    lora = config.lora or config.qlora
    if config.qlora:
        check_qlora(device)   # before anything runs: 4-bit weights need CUDA and bitsandbytes
    if lora and config.distributed == "fsdp":   # merging needs each layer whole, not sharded
        raise ConfigError("--lora/--qlora cannot be combined with --distributed fsdp; use --distributed ddp (the "
                          "adapters' gradients and optimizer state are small enough to keep on every GPU)")
    # LLaVA's LoRA recipe trains the projector far slower (2e-5) than the adapters (2e-4).
    projector_lr = config.stage2_projector_lr if config.stage2_projector_lr is not None or not lora \
        else PROJECTOR_LR
    common = dict(grad_accum=config.grad_accum, save_every=config.save_every, seed=config.seed,
                  gradient_checkpointing=config.gradient_checkpointing,
                  precision=config.precision, num_workers=config.num_workers)
    autocast_dtype(device, config.precision)   # a precision this device cannot run stops the run before it starts
    stages = (dataclasses.replace(STAGE1, lr=config.stage1_lr, batch_size=config.stage1_batch,
                                  max_steps=config.stage1_steps, **common),
              dataclasses.replace(STAGE2, template=config.template, lr=config.stage2_lr, batch_size=config.stage2_batch,
                                  projector_lr=projector_lr, max_steps=config.stage2_steps,
                                  distributed=config.distributed, **common))
    # Stage 1 stays under DDP: it trains the projector alone (megabytes of gradients and moments,
    # nothing worth sharding), and stage 2 then gets the model whole, to shard once its trainable
    # weights are float32 (FSDP fixes a parameter's dtype when it shards it).

    def timed(name, fn, *args, **kwargs):
        tic = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - tic
        return value

    log(f"[1/5] backbones ({config.vision}, {config.language}) and data -> {out / 'data'}")
    sources = timed("index", data_sources, config)   # a malformed data file stops the run before a model loads
    model, tokenizer, processor, tokens_per_image = timed("backbones", load_backbones, config)
    samples = config.stage2_steps * config.stage2_batch * config.grad_accum * distributed.world()   # batch: per process
    with distributed.main_first():   # rank 0 writes data/ (toy scenes), the others then read it
        captions, mixture, table = timed("data", datasets, config, out, samples, tokenizer, processor,
                                         tokens_per_image, progress, sources)
    log(f"stage-2 mixture ({config.data}):\n{mixture_table(table)}")

    results, adapters = {}, None
    for step, (stage, data) in enumerate(zip(stages, (captions, mixture)), start=2):
        log(f"[{step}/5] {stage.name}: {stage.template} template, trains {' + '.join(stage.trainable)}, "
            f"{len(data)} samples ({data.report.skipped} skipped) -> {out / stage.name}")
        if stage is stages[1] and lora:   # stage 2 trains adapters; train() merges them in when it ends
            adapters = describe(add_adapters(model, config.lora_r, config.lora_alpha, config.lora_dropout,
                                             qlora=config.qlora))
            log(adapters)
        results[stage.name] = timed(stage.name, train, model, stage, data, out / stage.name, lengths=data.lengths,
                                    has_image=data.has_image, pad_token_id=model.config.pad_token_id,
                                    device=device, progress=progress)

    if not distributed.is_main():   # rank 0 alone saves, evaluates and reports: this process is done
        return PipelineResult(out, "", {}, {}, seconds)
    if distributed.is_sharded(model):   # FSDP left this process a shard: load the whole model stage 2 saved
        model = load_model(out / stages[1].name / "model").to(device)
    log(f"[4/5] assistant -> {out / 'assistant'}")
    assistant = Assistant(model.eval(), tokenizer, processor, template=config.template,
                          max_new_tokens=config.max_new_tokens, name=out.name)
    save_assistant(assistant, out / "assistant")

    metrics, eval_markdown = {}, None   # --no-eval: the report says the run was not evaluated
    if config.eval:
        log(f"[5/5] evaluation on {config.eval_scenes} held-out scenes per task -> {out / 'eval'}")
        evaluation = timed("eval", run_suite, assistant, list(EVAL_TASKS),
                           config.eval_scenes, config.eval_seed, batch_size=config.eval_batch, progress=progress)
        evaluation.save(out / "eval")
        metrics, eval_markdown = {r.task.name: r.metrics for r in evaluation.results}, evaluation.to_markdown()
    else:
        log("[5/5] evaluation skipped (--no-eval)")
    seconds["total"] = time.perf_counter() - start

    losses = {name: (r.metrics[0]["loss"] if r.metrics else None, r.final_loss) for name, r in results.items()}
    report = report_markdown(config, device, table, (captions, mixture), stages, results, metrics, seconds,
                     eval_markdown, adapters=adapters)
    (out / "report.md").write_text(report + "\n")
    (out / "summary.json").write_text(json.dumps({"metrics": metrics, "losses": losses, "seconds": seconds}, indent=2))
    log(report)
    return PipelineResult(out, report, metrics, losses, seconds)

