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
    MINILLAVA_DATA=llava_v1_5_mix665k.json             stage-2 data: a LLaVA JSON/JSONL file, a parquet
                                                       file, a `datasets` folder or a hub id
    MINILLAVA_STAGE1_DATA=blip_laion_cc_sbu_558k.json  stage-1 data
    MINILLAVA_IMAGE_FOLDER=playground/data             where stage 2's image paths are resolved
    MINILLAVA_STAGE1_IMAGE_FOLDER=LLaVA-Pretrain/images  stage 1's (default: MINILLAVA_IMAGE_FOLDER)

Without data files the real backbones train and are evaluated on the toy scenes, which
needs nothing but the weights. The chapters' stored outputs are those of toy mode; in real
mode they print other numbers, and strict ``pytest --nbval`` is meant for toy mode only.

**The cache.** Chapters hand results forward through one folder: chapter 2's data engine
writes the toy data set chapters 4 and 7 train on, chapter 8 trains the assistant chapter 9
talks to. ``artifact(name, recipe, build)`` returns the folder for that recipe, building it
first when the cache does not have it, so each chapter also runs on its own from a clean
clone. The folder's name carries a fingerprint of the recipe, of the package's source code,
of the shipped weights and of the torch version: change any of them and a fresh entry is built,
never a stale one reused. A trained result's recipe also names the machine's arithmetic (device,
precision, emulation; ``cache.machine``), so an assistant trained on a GPU is never handed to a
CPU run, nor the reverse. Builds are deterministic (fixed seeds, one thread), so a chapter prints the same
numbers whether its inputs came from the cache or were rebuilt just now. The folder is
``MINILLAVA_CACHE``, by default ``~/.cache/minillava/course``; deleting it is always safe.

The package: ``switch`` (the settings above), ``cache`` (artifacts, and the two results the
chapters share), ``claims`` (trained numbers checked against the text, so chapters pass on any
machine), ``grading`` (the exercises' checkers, one module per chapter).
"""

from minillava.course.cache import (ASSISTANT_BUDGET, TOY_DATA_SCENES, artifact, assistant, cache_dir, fingerprint,
                                    results, toy_data)
from minillava.course.claims import ClaimError, expect, measured
from minillava.course.switch import BACKBONE_MODES, CourseSettings, settings

__all__ = ["ASSISTANT_BUDGET", "BACKBONE_MODES", "TOY_DATA_SCENES", "ClaimError", "CourseSettings", "artifact",
           "assistant", "cache_dir", "expect", "fingerprint", "measured", "results", "settings", "toy_data"]
