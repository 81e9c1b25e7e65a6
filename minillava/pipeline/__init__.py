"""`minillava pipeline`: from nothing to a working visual assistant, in one command.

    minillava pipeline                           # the embedded default: toy world, toy backbones, rule teacher
    minillava pipeline --config run.yaml --device cuda
    minillava pipeline --vision openai/clip-vit-large-patch14-336 --language lmsys/vicuna-7b-v1.5 \\
        --stage1-data LLaVA-Pretrain/blip_laion_cc_sbu_558k.json --stage1-image-folder LLaVA-Pretrain/images \\
        --data playground/data/llava_v1_5_mix665k.json --image-folder playground/data --num-workers 4

Five steps, each writing into the output folder (``--out``):

| step | what | writes |
|---|---|---|
| data    | toy scenes -> stage-1 captions and the stage-2 mixture, or data sources, read lazily | data/ |
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

The package, one idea per module:

| module | what |
|---|---|
| config  | ``PipelineConfig``: every option, its help and its rules; options from a file and flags, checked |
| steps   | the steps (``load_backbones``, the data, the two stages, evaluation) and ``run``, which chains them |
| report  | report.md, and the targets of the embedded default it measures the run against |
"""

from minillava.pipeline.config import (TOY_MIXTURE, TOY_SOURCES, ConfigError, PipelineConfig, add_arguments,
                                       config_from_args, load_config_file, make_config)
from minillava.pipeline.report import EVAL_TASKS, TARGETS, TIME_TARGET_S
from minillava.pipeline.steps import PipelineResult, datasets, image_processor, load_backbones, run, toy_data, toy_pools

__all__ = ["EVAL_TASKS", "TARGETS", "TIME_TARGET_S", "TOY_MIXTURE", "TOY_SOURCES", "ConfigError", "PipelineConfig",
           "PipelineResult", "add_arguments", "config_from_args", "datasets", "image_processor", "load_backbones",
           "load_config_file", "make_config", "run", "toy_data", "toy_pools"]
