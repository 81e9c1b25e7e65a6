"""Running tasks on an assistant, and reporting: a markdown table, JSON, samples and a chart.

    seeds = eval_seeds(20, seed=0)
    report = run_suite(OracleAssistant.for_seeds(seeds), ["toy_vqa", "pope", "chair"], n_per_task=20, seed=0)
    print(report.to_markdown())
    report.save("runs/eval")   # results.json, samples.jsonl, report.md, metrics.png

From the command line (``minillava eval``)::

    minillava eval --assistant oracle                            every task, 20 scenes each
    minillava eval --assistant yes --tasks pope,toy_vqa --n 50 --out runs/yes
    minillava eval --assistant runs/stage2 --judge openai --judge-model gpt-4o --out runs/stage2-eval

Every task runs on the same held-out scenes (``scenes.eval_seeds(n, seed)``): the same n
and seed always evaluate the same images, whatever the assistant.

Real benchmarks, from their published files (``benchmarks``; ``run_benchmark`` in Python)::

    minillava eval runs/stage2 --task pope --data pope/coco --image-folder coco/val2014
    minillava eval runs/stage2 --task vqav2 --data v2_OpenEnded_mscoco_val2014_questions.json \
        --annotations v2_mscoco_val2014_annotations.json --image-folder coco/val2014
    minillava eval runs/stage2 --task llava_bench --data llava-bench-in-the-wild/questions.jsonl \
        --image-folder llava-bench-in-the-wild/images --judge openai --judge-model gpt-4o
    minillava eval runs/stage2 --task mmbench --data mmbench_dev_en.tsv
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from minillava.eval.assistants import HallucinatingDescriber, OracleAssistant, YesAssistant, answer_all, as_assistant
from minillava.eval.benchmarks import BENCHMARKS, BenchmarkError, benchmark_tasks
from minillava.eval.judges import OpenAIJudge
from minillava.eval.scenes import eval_seeds
from minillava.eval.tasks import GROUPS, TASKS, Task, llava_bench_task, resolve_tasks


@dataclass
class TaskResult:
    """A task's metrics, and every sample: prompt, target, prediction and its per-sample values."""
    task: Task
    metrics: dict
    samples: list[dict]

    @property
    def main(self) -> float | None:
        return self.metrics.get(self.task.main_metric)


@dataclass
class Report:
    """What a suite run found: its config (assistant, scenes, time) and one TaskResult per task."""
    config: dict
    results: list[TaskResult]

    def groups(self) -> dict[str, dict]:
        """Per group whose tasks all ran: the mean of their main metric (POPE: mean F1 over splits)."""
        by_name = {r.task.name: r for r in self.results}
        summaries = {}
        for group, names in GROUPS.items():
            members = [by_name[name] for name in names if name in by_name]
            if len(members) == len(names) and all(m.main is not None for m in members):
                first = members[0].task
                summaries[group] = {"metric": f"mean_{first.main_metric}", "tasks": list(names),
                                    "value": sum(m.main for m in members) / len(members),
                                    "higher_is_better": first.higher_is_better, "percent_scale": first.percent_scale}
        return summaries

    def to_dict(self) -> dict:
        """Config, each task's metrics and the group means; JSON-able (samples are separate)."""
        return {"config": self.config,
                "results": {r.task.name: {"description": r.task.description, "main_metric": r.task.main_metric,
                                          "higher_is_better": r.task.higher_is_better, "metrics": r.metrics}
                            for r in self.results},
                "groups": self.groups()}

    def to_markdown(self) -> str:
        """A summary table: main metric (arrow: which way is better) and every other number."""
        lines = [f"## {self.config['assistant']}: {self._what()}", "",
                 "| task | samples | metric | value | other metrics |", "|---|---:|---|---:|---|"]
        notes = []
        for r in self.results:
            others = []
            for name, value in r.metrics.items():
                if name in (r.task.main_metric, "n"):
                    continue
                if isinstance(value, dict):   # e.g. judge failures by reason: a note, not a column
                    if value:
                        notes.append(f"- {r.task.name} {name}: " + ", ".join(f"{k}: {v}" for k, v in value.items()))
                else:
                    others.append(f"{name} {_fmt(value)}")
            lines.append(f"| {r.task.name} | {len(r.samples)} | {r.task.main_metric} {_arrow(r.task)} | "
                         f"{_fmt(r.main)} | {', '.join(others)} |")
        for group, s in self.groups().items():
            lines.append(f"| {group} (all {len(s['tasks'])}) | | {s['metric']} "
                         f"{'↑' if s['higher_is_better'] else '↓'} | {_fmt(s['value'])} | |")
        return "\n".join(lines + ([""] + notes if notes else []))

    def _what(self) -> str:
        """What was evaluated: a benchmark's file, or the held-out toy scenes."""
        c = self.config
        if "data" in c:
            return f"{c['benchmark']} from {c['data']}"
        return f"{c['n_per_task']} held-out scenes per task (seed {c['seed']})"

    def plot(self, path: str | Path) -> Path:
        """A bar chart of every task's main metric, in percent, saved as an image."""
        # The Figure API draws without pyplot, so saving never touches a notebook's backend.
        from matplotlib.figure import Figure

        bars = [(f"{r.task.name}: {r.task.main_metric} {_arrow(r.task)}", r.main * r.task.percent_scale,
                 r.task.higher_is_better) for r in self.results if r.main is not None]
        bars += [(f"{group}: {s['metric']} {'↑' if s['higher_is_better'] else '↓'}",
                  s["value"] * s["percent_scale"], s["higher_is_better"]) for group, s in self.groups().items()]
        figure = Figure(figsize=(7, 0.45 * len(bars) + 1.2), layout="constrained")
        axes = figure.subplots()
        labels, values, higher = zip(*bars) if bars else ((), (), ())
        # Error rates (lower is better) in another colour, so a long bar is not misread as good.
        axes.barh(labels, values, color=["tab:blue" if h else "tab:orange" for h in higher])
        axes.invert_yaxis()   # first task on top, as in the table
        for y, value in enumerate(values):
            axes.annotate(f"{value:.1f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center")
        axes.set_xlim(0, max([100.0, *values]) * 1.12)
        axes.set_xlabel("percent (↑ higher is better, ↓ lower is better)")
        c = self.config
        what = self._what() if "data" in c else f"{c['n_per_task']} held-out scenes per task"
        axes.set_title(f"{c['assistant']}, {what}")
        path = Path(path)
        figure.savefig(path, dpi=100)
        return path

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write results.json, samples.jsonl (one line per sample, with its task), report.md, metrics.png."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"results": out / "results.json", "samples": out / "samples.jsonl",
                 "markdown": out / "report.md", "plot": out / "metrics.png"}
        paths["results"].write_text(json.dumps(self.to_dict(), indent=2))
        with paths["samples"].open("w") as f:
            for r in self.results:
                for sample in r.samples:
                    f.write(json.dumps({"task": r.task.name, **sample}) + "\n")
        paths["markdown"].write_text(self.to_markdown() + "\n")
        self.plot(paths["plot"])
        return paths


def _arrow(task: Task) -> str:
    return "↑" if task.higher_is_better else "↓"


def _fmt(value) -> str:
    if value is None:
        return "n/a"   # e.g. a relative score with every judgement failed
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"
    return str(value)


def run_suite(assistant, tasks: list | None = None, n_per_task: int = 20, seed: int = 0, *,
              batch_size: int = 8, progress: bool = False) -> Report:
    """Evaluate an assistant on held-out toy scenes; returns a ``Report``.

    assistant   an assistant (``minillava.eval.assistants``: a name and answer(image, question)),
                e.g. ``minillava.chat.Assistant``, or a function (image, question) -> str
    tasks       task names, group names ("pope") or Task objects; default: every registered task
    n_per_task  scenes per task (eval_seeds(n_per_task, seed)); a task may ask several
                questions per scene
    batch_size  prompts per ``answer_all`` call (one ``answer_batch``, if the assistant has it)
    """
    assistant = as_assistant(assistant)
    tasks = resolve_tasks(list(TASKS) if tasks is None else tasks)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    seeds = eval_seeds(n_per_task, seed)
    start = time.perf_counter()
    results = [_run_task(task, assistant, seeds, batch_size, progress) for task in tasks]
    config = {"assistant": assistant.name, "tasks": [t.name for t in tasks], "n_per_task": n_per_task,
              "seed": seed, "scene_seeds": seeds, "seconds": round(time.perf_counter() - start, 2)}
    return Report(config, results)


def run_benchmark(assistant, tasks: list[Task], benchmark: str, data, *, batch_size: int = 8,
                  progress: bool = False) -> Report:
    """Evaluate an assistant on a real benchmark's tasks (``benchmarks.benchmark_tasks``); a ``Report``."""
    assistant = as_assistant(assistant)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    results = [_run_task(task, assistant, [], batch_size, progress) for task in tasks]
    config = {"assistant": assistant.name, "tasks": [t.name for t in tasks], "benchmark": benchmark,
              "data": str(data), "questions": sum(len(r.samples) for r in results),
              "seconds": round(time.perf_counter() - start, 2)}
    return Report(config, results)


def _run_task(task: Task, assistant, seeds: list[int], batch_size: int, progress: bool) -> TaskResult:
    from tqdm.auto import tqdm

    docs = task.build_docs(seeds)
    ids = [doc["doc_id"] for doc in docs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{task.name}: build_docs gave repeated doc_ids; every document needs its own")
    prompts = [task.doc_to_text(doc) for doc in docs]
    predictions = []
    for start in tqdm(range(0, len(docs), batch_size), desc=task.name, disable=not progress):
        batch = slice(start, start + batch_size)
        answers = answer_all(assistant, [task.doc_to_visual(doc) for doc in docs[batch]], prompts[batch])
        if len(answers) != len(prompts[batch]) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{assistant.name} must answer one string per question; "
                             f"got {answers!r} for {len(prompts[batch])} questions")
        predictions += answers
    values = task.score(docs, predictions)
    samples = [{"doc_id": doc["doc_id"], "prompt": prompt, "target": task.doc_to_target(doc),
                "prediction": prediction, "result": value}
               for doc, prompt, prediction, value in zip(docs, prompts, predictions, values, strict=True)]
    return TaskResult(task, task.aggregate(values), samples)


# ----------------------------------------------------------------------------
# minillava eval

# The fakes by name; the oracles must know the scenes the run will show them.
FAKE_ASSISTANTS = {"oracle": OracleAssistant.for_seeds, "hallucinating": HallucinatingDescriber.for_seeds,
                   "yes": lambda seeds: YesAssistant()}


def _assistant(value: str, seeds: list[int]):
    """A fake by name, or the chat assistant saved in a folder by minillava.chat.save_assistant."""
    if value in FAKE_ASSISTANTS:
        return FAKE_ASSISTANTS[value](seeds)
    folder = Path(value)
    if not folder.is_dir():
        sys.exit(f"--assistant {value!r} is neither one of {', '.join(FAKE_ASSISTANTS)} nor a folder")
    from minillava.chat import load_assistant   # transformers (seconds): only when a folder is evaluated

    try:
        loaded = load_assistant(folder)
    except FileNotFoundError as err:   # a folder, but not a saved assistant
        sys.exit(str(err))
    return replace(loaded, name=folder.name)


def _fail(message: str) -> None:
    """End `minillava eval` with one line on stderr and a non-zero exit status, never a traceback."""
    raise SystemExit(f"minillava eval: {message}")


def _judge(args: argparse.Namespace):
    """The llava_bench judge the options ask for: None (the rule judge) or an OpenAIJudge."""
    if args.judge != "openai":
        return None
    if not args.judge_model:
        _fail("--judge openai needs --judge-model (e.g. gpt-4o, or the name a local server serves)")
    return OpenAIJudge(args.judge_model, args.judge_base_url, api_key_env=args.api_key_env)


def eval_command(args: argparse.Namespace) -> None:
    if (args.checkpoint is None) == (args.assistant is None):
        _fail("give the assistant once: `minillava eval FOLDER` or `minillava eval --assistant FOLDER` "
              f"(or a fake: {', '.join(FAKE_ASSISTANTS)})")
    if (args.task is None) != (args.data is None):
        _fail("a benchmark needs both --task and --data, e.g. --task pope --data coco_pope_random.json "
              "--image-folder val2014 (without them: the toy tasks of --tasks)")
    if args.limit is not None and args.limit < 1:
        _fail(f"--limit must be at least 1, got {args.limit}")
    file_options = [f"--{name.replace('_', '-')}" for name in ("image_folder", "annotations", "answers", "context",
                                                                "limit") if getattr(args, name) is not None]
    if args.task is None and file_options:
        _fail(f"{', '.join(file_options)} belong to a benchmark's files: add --task and --data")
    try:
        judge = _judge(args)
        if args.task is not None:
            if args.tasks != "all":
                _fail("--tasks picks toy tasks; with --task and --data give only the benchmark")
            tasks = benchmark_tasks(args.task, args.data, image_folder=args.image_folder, annotations=args.annotations,
                                    answers=args.answers, context=args.context, judge=judge, limit=args.limit)
        else:
            tasks = resolve_tasks(list(TASKS) if args.tasks == "all" else args.tasks.split(","))
            if judge is not None:
                tasks = [llava_bench_task(judge) if t.name == "llava_bench" else t for t in tasks]
    except ValueError as err:   # unknown task, missing API key, a benchmark file that cannot be used
        _fail(str(err))
    assistant = _assistant(args.checkpoint or args.assistant, eval_seeds(args.n, args.seed))
    if args.task is not None:
        try:
            report = run_benchmark(assistant, tasks, args.task, args.data, batch_size=args.batch_size, progress=True)
        except BenchmarkError as err:   # an image that cannot be read, found when it is shown
            _fail(str(err))
    else:
        report = run_suite(assistant, tasks, args.n, args.seed, batch_size=args.batch_size, progress=True)
    print(report.to_markdown())
    if args.out:
        paths = report.save(args.out)
        print(f"\nwrote {', '.join(str(p) for p in paths.values())}")


def add_parser(sub) -> None:
    """Register `minillava eval` on the main parser's subcommands."""
    p = sub.add_parser("eval", help="evaluate an assistant on held-out toy scenes or a real benchmark's files: "
                       "table, JSON, chart")
    what = f"{', '.join(FAKE_ASSISTANTS)} (fakes), or a folder saved by minillava.chat.save_assistant"
    p.add_argument("checkpoint", nargs="?", help=what)
    p.add_argument("--assistant", help=f"the same, as an option: {what}")
    p.add_argument("--tasks", default="all",
                   help=f"comma-separated tasks or groups: {', '.join([*TASKS, *GROUPS])} (default: all)")
    p.add_argument("--task", choices=BENCHMARKS, help="a real benchmark, read from --data in its published "
                   "format (POPE question files, VQAv2 JSON, LLaVA-Bench JSONL, MMBench TSV)")
    p.add_argument("--data", help="the benchmark's question file (POPE: a coco_pope_*.json or their folder; "
                   "LLaVA-Bench: questions.jsonl or its folder)")
    p.add_argument("--image-folder", help="the folder of the images the question file names (not for MMBench)")
    p.add_argument("--annotations", help="VQAv2's annotations JSON (default: v2_mscoco_<split>_annotations.json "
                   "next to --data)")
    p.add_argument("--answers", help="LLaVA-Bench's reference answers (default: answers_gpt4.jsonl next to --data)")
    p.add_argument("--context", help="LLaVA-Bench's image descriptions for the judge (default: context.jsonl "
                   "next to --data)")
    p.add_argument("--limit", type=int, help="only the first N questions of --data: a smoke test, not the "
                   "benchmark's number")
    p.add_argument("--n", type=int, default=20, help="held-out scenes per task (default 20)")
    p.add_argument("--seed", type=int, default=0, help="which held-out scenes (default 0)")
    p.add_argument("--out", help="folder for results.json, samples.jsonl, report.md and metrics.png")
    p.add_argument("--batch-size", type=int, default=8, help="questions per answer_batch call")
    p.add_argument("--judge", choices=("rule", "openai"), default="rule", help="who judges llava_bench")
    p.add_argument("--judge-model", help="model name for --judge openai")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL or OpenAI)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's key")
    p.set_defaults(func=eval_command)
