"""The run's report.md: what it trained on, how training went, the evaluation against its targets."""

import math

from minillava.data.mix import mixture_table

# What the evaluation step runs, and the targets of the embedded default (issue 6).
EVAL_TASKS = ("toy_vqa", "pope_random", "chair")
TARGETS = {"toy_vqa": ("accuracy", ">=", 0.85), "pope_random": ("f1", ">=", 0.85), "chair": ("chair_s", "<=", 0.20)}
TIME_TARGET_S = 600


def report_markdown(config, device, table, data, stages, results, metrics, seconds, eval_markdown,
                    adapters: str | None = None) -> str:
    """The run as markdown: backbones, data, training, evaluation against the targets, time.

    adapters: what stage 2's LoRA adapters were (lora.describe), when it trained some.
    """
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
        projector_lr = f" (projector {stage.projector_lr:g})" if stage.projector_lr is not None else ""
        lines.append(f"| {stage.name} | {stage.template} | {' + '.join(stage.trainable)} | {r.steps} | "
                     f"{stage.batch_size * stage.grad_accum} | {stage.lr:g}{projector_lr} | {first} | "
                     f"{r.final_loss:.3f} | {r.tokens_per_s:.0f} | {seconds[stage.name]:.0f} |")
    if adapters:
        lines += ["", f"Stage 2 trained {adapters}; the adapters were merged into the saved weights."]
    lines += [f"\n{stage.name}: {results[stage.name].skipped_steps} of {results[stage.name].steps} steps skipped by "
              "fp16 loss scaling (their gradients overflowed; the scale was lowered)."
              for stage in stages if results[stage.name].skipped_steps]
    lines += ["", "Loss curves: stage1/loss.png, stage2/loss.png.", ""]
    if eval_markdown is None:   # --no-eval
        return "\n".join(lines + _not_evaluated(config, seconds))
    finite = all(math.isfinite(m["loss"]) for r in results.values() for m in r.metrics)
    lines += ["## Evaluation (held-out scenes)", "", "| task | metric | value | target | met |",
              "|---|---|---:|---|---|"]
    for task, (metric, op, target) in TARGETS.items():
        value = metrics[task][metric]
        # A NaN training loss or metric meets nothing (an assistant of NaN weights answers one
        # token forever, which can pass a "no hallucination" target).
        met = finite and math.isfinite(value) and (value >= target if op == ">=" else value <= target)
        lines.append(f"| {task} | {metric} | {value:.3f} | {op} {target:g} | {'yes' if met else 'NO'} |")
    within = seconds["total"] <= TIME_TARGET_S
    lines += [f"| whole run | seconds | {seconds['total']:.0f} | <= {TIME_TARGET_S} | {'yes' if within else 'NO'} |",
              "", "Targets are those of the embedded default on a 2-core CPU. CHAIR counts only shapes the "
              f"descriptions mention ({metrics['chair']['n_mentions']} mentions here): a description that names "
              "none cannot hallucinate one.", "", eval_markdown, "", *_time_table(seconds)]
    lines += ["", f"Chat with it: `minillava.chat.load_assistant('{config.out}/assistant').ask(image, question)`; "
                  f"evaluate it again: `minillava eval --assistant {config.out}/assistant "
                  f"--tasks {','.join(EVAL_TASKS)} --n {config.eval_scenes}`."]
    return "\n".join(lines)


def _not_evaluated(config, seconds) -> list[str]:
    """The report's end for a run started with --no-eval: no target is checked, and how to evaluate."""
    assistant = f"{config.out}/assistant"
    return ["## Evaluation", "", "Not evaluated: the run was started with --no-eval, so no quality target is "
            "checked here. Evaluate the assistant on held-out toy scenes with "
            f"`minillava eval {assistant} --tasks {','.join(EVAL_TASKS)}`, or on a real benchmark's files with "
            f"`minillava eval {assistant} --task pope --data coco_pope_random.json --image-folder val2014`.", "",
            *_time_table(seconds), "", f"whole run: {seconds['total']:.0f} s."]


def _time_table(seconds) -> list[str]:
    """The report's time section: each step's wall time."""
    return ["## Time", "", "| step | seconds |", "|---|---:|", *(f"| {step} | {s:.1f} |" for step, s in seconds.items())]
