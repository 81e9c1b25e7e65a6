"""The course as one story: one switch to real backbones, one cache that hands results forward.

Every chapter starts with the same two lines::

    settings = course.settings()
    print(settings.describe())

**The switch.** By default a chapter runs in the embedded toy world: the shipped toy
backbones, toy scenes, offline, on a CPU. With a GPU and network, one environment variable
moves it to LLaVA-1.5's backbones (set it before starting Jupyter, or in the first cell with
``os.environ[...] = ...``)::

    MINILLAVA_BACKBONES=real       CLIP ViT-L/14-336 + Vicuna-7B v1.5 (stage 2 of a 7B model
                                   needs a large GPU; see MINILLAVA_LANGUAGE)

Single pieces can be swapped on their own, in either mode (the tests do it with tiny local
models)::

    MINILLAVA_VISION=openai/clip-vit-base-patch32      a zoo name, a local folder or a hub id
    MINILLAVA_LANGUAGE=Qwen/Qwen2.5-0.5B-Instruct      (with MINILLAVA_TEMPLATE=chatml)
    MINILLAVA_TEMPLATE=chatml                          the template the language model was tuned with
    MINILLAVA_DATA=llava_v1_5_mix665k.json             stage-2 data: a LLaVA JSON/JSONL file
    MINILLAVA_STAGE1_DATA=blip_laion_cc_sbu_558k.json  stage-1 data
    MINILLAVA_IMAGE_FOLDER=/data/llava/images          where their image paths are resolved

Without data files the real backbones train and are evaluated on the toy scenes, which
needs nothing but the weights. The chapters' stored outputs are those of toy mode; in real
mode they print other numbers, and strict ``pytest --nbval`` is meant for toy mode only.

**The cache.** Chapters hand results forward through one folder: chapter 2's data engine
writes the toy data set chapters 4 and 7 train on, chapter 8 trains the assistant chapter 9
talks to. ``artifact(name, recipe, build)`` returns the folder for that recipe, building it
first when the cache does not have it, so each chapter also runs on its own from a clean
clone. The folder's name carries a fingerprint of the recipe, of the package's source code
and of the shipped weights: change any of them and a fresh entry is built, never a stale one
reused. Builds are deterministic (fixed seeds, one thread), so a chapter prints the same
numbers whether its inputs came from the cache or were rebuilt just now. The folder is
``MINILLAVA_CACHE``, by default ``~/.cache/minillava/course``; deleting it is always safe.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent   # the whole package: its source and shipped weights
TOY = {"vision": "toy-vision", "language": "toy-lm", "template": "vicuna_v1"}
# LLaVA-1.5-7B's pair and its template.
REAL = {"vision": "openai/clip-vit-large-patch14-336", "language": "lmsys/vicuna-7b-v1.5", "template": "vicuna_v1"}
MODES = {"toy": TOY, "real": REAL}
# LLaVA's stage-2 learning rate for a pretrained chat LM; the toy preset's reason is in PipelineConfig.
REAL_STAGE2_LR = 2e-5


@dataclasses.dataclass(frozen=True)
class CourseSettings:
    """What the chapters run on: backbones, template and data, toy or real."""
    mode: str                 # "toy" or "real" (MINILLAVA_BACKBONES)
    vision: str               # zoo name, local folder or Hugging Face id
    language: str
    template: str             # the chat template the language model was tuned with
    data: str = "toy"         # stage-2 data: "toy" or a LLaVA JSON/JSONL file
    stage1_data: str = "toy"
    image_folder: str | None = None

    @property
    def toy(self) -> bool:
        """True when everything is the embedded default (the chapters' stored outputs)."""
        return (self.vision, self.language, self.template, self.data, self.stage1_data) == \
            (TOY["vision"], TOY["language"], TOY["template"], "toy", "toy")

    def describe(self) -> str:
        """One line for a chapter's first output: what it runs on, and how to switch."""
        data = "toy scenes" if self.data == "toy" else f"{self.data} (images: {self.image_folder})"
        line = f"{self.mode} mode: vision {self.vision}, language {self.language} ({self.template}), data: {data}"
        if self.mode == "toy":
            line += "\n(real backbones on a GPU: set MINILLAVA_BACKBONES=real before starting, see minillava.course)"
        return line

    def pipeline_config(self, **options):
        """A ``PipelineConfig`` on these backbones and data; ``options`` set the rest (budgets).

        In real mode stage 2 uses LLaVA's learning rate (2e-5) unless options give one, and
        the language model recomputes activations in backward to fit a GPU.
        """
        from minillava.pipeline import PipelineConfig   # transformers is slow to import: only when used

        backbones = dict(vision=self.vision, language=self.language, template=self.template, data=self.data,
                         stage1_data=self.stage1_data, image_folder=self.image_folder)
        if not self.toy:
            backbones.update(stage2_lr=REAL_STAGE2_LR, gradient_checkpointing=True, threads=0)
        return PipelineConfig(**{**backbones, **options})

    def pretrained_model(self, projector: str = "mlp2x_gelu"):
        """``zoo.pretrained_model`` on these backbones: (MiniLlava with a fresh projector, tokenizer)."""
        from minillava.backbones import zoo

        return zoo.pretrained_model(self.vision, self.language, projector)


def settings(environ: dict | None = None) -> CourseSettings:
    """The course settings from the environment (``os.environ`` unless one is given)."""
    env = os.environ if environ is None else environ
    mode = env.get("MINILLAVA_BACKBONES", "toy").strip().lower() or "toy"
    if mode not in MODES:
        raise ValueError(f"MINILLAVA_BACKBONES={env['MINILLAVA_BACKBONES']!r} is not a mode; use "
                         f"{' or '.join(MODES)} (or unset it for the toy default)")
    preset = MODES[mode]
    data = {key: env.get(f"MINILLAVA_{key.upper()}") for key in ("data", "stage1_data", "image_folder")}
    for key in ("data", "stage1_data"):
        if data[key] and not Path(data[key]).is_file():
            raise ValueError(f"MINILLAVA_{key.upper()}={data[key]!r}: no such file; point it at a LLaVA "
                             "JSON/JSONL file, or unset it to train on toy scenes")
    return CourseSettings(mode=mode, vision=env.get("MINILLAVA_VISION") or preset["vision"],
                          language=env.get("MINILLAVA_LANGUAGE") or preset["language"],
                          template=env.get("MINILLAVA_TEMPLATE") or preset["template"],
                          data=data["data"] or "toy", stage1_data=data["stage1_data"] or "toy",
                          image_folder=data["image_folder"])


# ----------------------------------------------------------------------------
# The cache


def cache_dir() -> Path:
    """MINILLAVA_CACHE, or ~/.cache/minillava/course (XDG_CACHE_HOME respected)."""
    if os.environ.get("MINILLAVA_CACHE"):
        return Path(os.environ["MINILLAVA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minillava" / "course"


def fingerprint(recipe: dict) -> str:
    """SHA-256 of the recipe (as JSON), every source file of the package, and the weights' manifest."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for file in sorted(PACKAGE.rglob("*.py")) + [PACKAGE / "backbones" / "weights" / "manifest.json"]:
        if file.is_file():
            digest.update(file.relative_to(PACKAGE).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def artifact(name: str, recipe: dict, build: Callable[[Path], None]) -> Path:
    """The cache folder of ``name`` made by ``recipe``; ``build(folder)`` fills it when absent.

    recipe: JSON-able, everything the result depends on besides the package itself. The build
    runs in a scratch folder renamed into place at the end, so an interrupted build leaves
    nothing that looks finished. The recipe is written next to the result (recipe.json).
    A new build deletes the entries of the same name and recipe that an earlier version of
    the package or the weights made: this version would never find them again.
    """
    if not name or "/" in name:
        raise ValueError(f"artifact name {name!r}: use a plain, non-empty folder name")
    folder = cache_dir() / f"{name}-{fingerprint(recipe)[:16]}"
    if (folder / "recipe.json").is_file():
        return folder
    for leftover in _abandoned(folder.parent):
        shutil.rmtree(leftover, ignore_errors=True)
    scratch = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        build(scratch)
        (scratch / "recipe.json").write_text(json.dumps({"name": name, "recipe": recipe}, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)   # a leftover without recipe.json is unfinished
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for old in _superseded(folder, name, recipe):
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _abandoned(cache: Path) -> list[Path]:
    """Scratch folders of killed builds: ``<entry>.partial-<pid>`` whose process is gone.

    A build that fails cleans up after itself; one that is killed (a notebook kernel
    restarted mid-build) cannot, and its scratch would otherwise stay forever.
    """
    found = []
    for scratch in cache.glob("*.partial-*"):
        pid = scratch.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _running(int(pid)):
            found.append(scratch)
    return found


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # signal 0: no signal, only the check that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, under another user
        pass
    return True


def _superseded(folder: Path, name: str, recipe: dict) -> list[Path]:
    """The other finished entries of this name and recipe: made by another package or weights."""
    wanted = json.dumps(recipe, sort_keys=True)
    found = []
    for other in folder.parent.glob(f"{name}-*"):
        try:
            stored = json.loads((other / "recipe.json").read_text())
        except (OSError, ValueError):   # not an entry, or an unfinished one
            continue
        if other != folder and stored.get("name") == name and json.dumps(stored.get("recipe"), sort_keys=True) == wanted:
            found.append(other)
    return found


# ----------------------------------------------------------------------------
# What the chapters hand forward

# Chapter 2 writes, chapters 4 and 7 train on: the engine's output for toy scenes 0..SCENES-1.
TOY_DATA_SCENES = 400
# Chapter 8 trains, chapter 9 talks to: a small `minillava pipeline` run (about 1.5 CPU minutes).
ASSISTANT_BUDGET = dict(scenes=400, stage1_steps=80, stage2_steps=150, eval_scenes=20)


def toy_data(scenes: int = TOY_DATA_SCENES) -> Path:
    """The data engine's files for toy scenes 0..scenes-1 (rule teacher): images/,
    llava_captions.json, llava_instruct.json, as chapter 2 makes them."""
    from minillava.data.engine import generate

    return artifact("toy-data", {"scenes": scenes, "teacher": "rules"},
                    lambda folder: generate(range(scenes), folder))


def assistant(config=None):
    """The course's trained assistant: (``chat.Assistant``, its pipeline folder with report.md).

    config: a PipelineConfig; default ``settings().pipeline_config(**ASSISTANT_BUDGET)``.
    """
    from transformers.utils import logging as hf_logging

    from minillava.chat import load_assistant
    from minillava.pipeline import run

    config = config or settings().pipeline_config(**ASSISTANT_BUDGET)
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k != "out"}

    def build(out: Path) -> None:
        # Quiet, so that a chapter prints the same whether the cache had the assistant or not:
        # no report, and none of transformers' "Loading weights" bars (restored afterwards).
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            run(dataclasses.replace(config, out=str(out)), progress=False, log=lambda *a: None)
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    folder = artifact("assistant", recipe, build)
    return load_assistant(folder / "assistant"), folder
