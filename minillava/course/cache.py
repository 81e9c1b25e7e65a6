"""The cache: one folder through which chapters hand results forward.

``artifact(name, recipe, build)`` is the whole mechanism (the package docstring,
``help(minillava.course)``, says why it can never hand back a stale result); ``toy_data``
and ``assistant`` are the two results the chapters share. The chat module imports
transformers (seconds), so ``assistant`` imports it when called, not with
``from minillava import course``.
"""

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from minillava import pipeline
from minillava.course.switch import settings
from minillava.data import engine
from minillava.device import pick_device
from minillava.precision import autocast_dtype

PACKAGE = Path(__file__).resolve().parent.parent   # the whole package: its source and shipped weights


def cache_dir() -> Path:
    """MINILLAVA_CACHE, or ~/.cache/minillava/course (XDG_CACHE_HOME respected)."""
    if os.environ.get("MINILLAVA_CACHE"):
        return Path(os.environ["MINILLAVA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minillava" / "course"


def fingerprint(recipe: dict) -> str:
    """SHA-256 of the recipe (as JSON), the torch version, every source file of the package, and
    the weights' manifest: what, when it changes, makes every older entry useless."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode() + b"\0" + torch.__version__.encode())
    for file in sorted(PACKAGE.rglob("*.py")) + [PACKAGE / "backbones" / "weights" / "manifest.json"]:
        if file.is_file():
            digest.update(file.relative_to(PACKAGE).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def machine(device: str | None = None) -> dict:
    """How a training run on ``device`` (None: ``pick_device``'s choice) computes; part of a trained
    result's recipe, since every trained number changes with it.

    The device type (an assistant trained on a GPU in bf16 is not the CPU's), the precision of
    its matrix products (``precision.autocast_dtype``), and the arithmetic the tests may emulate
    (MINILLAVA_EMULATE, see tools/emulate/). These go in the recipe, not in the fingerprint, so
    that a CPU entry and a GPU entry of one machine live side by side (``MINILLAVA_DEVICE=cpu``
    switches between them) instead of each deleting the other as superseded.
    """
    picked = pick_device(device)
    return {"device": picked.type, "precision": str(autocast_dtype(picked)).removeprefix("torch."),
            "emulate": os.environ.get("MINILLAVA_EMULATE") or None}


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
    llava_captions.json, llava_instruct.json, as chapter 2 makes them. Rules and drawing, no
    torch arithmetic: the same files on every machine, so the recipe names no ``machine``."""
    return artifact("toy-data", {"scenes": scenes, "teacher": "rules"},
                    lambda folder: engine.generate(range(scenes), folder))


def assistant(config=None):
    """The course's trained assistant: (``chat.Assistant``, its pipeline folder with report.md).

    config: a PipelineConfig; default ``settings().pipeline_config(**ASSISTANT_BUDGET)``.
    """
    from transformers.utils import logging as hf_logging   # late, see the module docstring

    from minillava.chat import load_assistant

    config = config or settings().pipeline_config(**ASSISTANT_BUDGET)
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k != "out"}
    recipe["machine"] = machine(config.device)   # trained on a GPU is never reused on a CPU, nor the reverse

    def build(out: Path) -> None:
        # Quiet, so that a chapter prints the same whether the cache had the assistant or not:
        # no report, and none of transformers' "Loading weights" bars (restored afterwards).
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            pipeline.run(dataclasses.replace(config, out=str(out)), progress=False, log=lambda *a: None)
        finally:
            if bars:
                hf_logging.enable_progress_bar()

    folder = artifact("assistant", recipe, build)
    return load_assistant(folder / "assistant"), folder


RESULTS_DIR = Path(__file__).resolve().parent / "results"   # shipped with the package (benchmarks/ write it)


def results(name: str) -> dict:
    """A long experiment's stored results, e.g. ``results("two_stage_order")``: too slow for a chapter,
    run by a script in benchmarks/ and shipped inside the package, so Colab has them too."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RESULTS_DIR.glob("*.json")))
        raise ValueError(f"no stored results named {name!r}; known: {known}")
    return json.loads(path.read_text())
