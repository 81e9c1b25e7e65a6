"""The course as a whole: the real-backbone switch, the cache between chapters, the README's map.

The switch is tested offline with tiny models saved as hub-style folders (test_pipeline's
fixture); the cache with small builds whose calls are counted.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import links  # tools/links.py (conftest.py puts tools/ on sys.path)
import nbformat
import pytest
import torch
from PIL import Image
from transformers.utils import logging as hf_logging

from minillava import course
from minillava.course import cache
from minillava.pipeline import PipelineConfig
from test_pipeline import TINY, hub_style, no_network  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLAVA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------- the switch


def test_default_is_the_embedded_toy_world():
    settings = course.settings({})
    assert (settings.mode, settings.vision, settings.language, settings.data) == ("toy", "toy-vision", "toy-lm", "toy")
    assert settings.toy
    assert settings.pipeline_config() == PipelineConfig()   # the toy preset, untouched
    assert "MINILLAVA_BACKBONES=real" in settings.describe()


def test_real_mode_is_llava_15_with_its_learning_rate():
    settings = course.settings({"MINILLAVA_BACKBONES": "Real"})
    assert (settings.vision, settings.language, settings.template) == (
        "openai/clip-vit-large-patch14-336", "lmsys/vicuna-7b-v1.5", "vicuna_v1")
    assert not settings.toy
    config = settings.pipeline_config(stage2_steps=7)
    assert (config.vision, config.language, config.stage2_lr, config.stage2_steps) == (
        settings.vision, settings.language, 2e-5, 7)
    assert config.gradient_checkpointing
    assert config.stage1_lr == PipelineConfig().stage1_lr   # LLaVA's 1e-3 either way
    assert settings.pipeline_config(stage2_lr=1e-4).stage2_lr == 1e-4   # a chapter's option wins


def test_single_pieces_switch_on_their_own(tmp_path):
    data = tmp_path / "mix.json"
    data.write_text("[]")
    settings = course.settings({"MINILLAVA_LANGUAGE": "Qwen/Qwen2.5-0.5B-Instruct", "MINILLAVA_TEMPLATE": "chatml",
                                "MINILLAVA_DATA": str(data), "MINILLAVA_IMAGE_FOLDER": "/images"})
    assert (settings.mode, settings.vision, settings.language, settings.template) == (
        "toy", "toy-vision", "Qwen/Qwen2.5-0.5B-Instruct", "chatml")
    assert (settings.data, settings.stage1_data, settings.image_folder) == (str(data), "toy", "/images")
    assert not settings.toy   # not the stored outputs' setting any more
    assert str(data) in settings.describe()


@pytest.mark.parametrize("environ, words", [
    ({"MINILLAVA_BACKBONES": "gpu"}, ["MINILLAVA_BACKBONES='gpu'", "toy or real"]),
    ({"MINILLAVA_DATA": "/nowhere/mix.json"}, ["MINILLAVA_DATA", "no file at", "unset it"]),
    ({"MINILLAVA_STAGE1_DATA": "/nowhere/558k.json"}, ["MINILLAVA_STAGE1_DATA", "no file at"]),
])
def test_a_bad_switch_says_what_and_how_to_fix_it(environ, words):
    with pytest.raises(ValueError) as err:
        course.settings(environ)
    for word in words:
        assert word in str(err.value)


def test_the_switch_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("MINILLAVA_BACKBONES", "real")
    monkeypatch.setenv("MINILLAVA_VISION", "google/siglip-so400m-patch14-384")
    settings = course.settings()
    assert (settings.mode, settings.vision, settings.language) == (
        "real", "google/siglip-so400m-patch14-384", "lmsys/vicuna-7b-v1.5")


def test_real_backbones_behind_the_switch_train_and_chat_offline(hub_style, tmp_path, private_cache):  # noqa: F811
    """What a chapter does in real mode -- load the backbones, train the course assistant,
    talk to it -- with tiny CLIP / Llama folders standing in for the hub ids."""
    settings = course.settings({"MINILLAVA_BACKBONES": "real", "MINILLAVA_VISION": str(hub_style / "clip"),
                                "MINILLAVA_LANGUAGE": str(hub_style / "llama"),
                                "MINILLAVA_DATA": str(hub_style / "stage2.jsonl"),
                                "MINILLAVA_STAGE1_DATA": str(hub_style / "stage1.json"),
                                "MINILLAVA_IMAGE_FOLDER": str(hub_style / "images")})
    model, tokenizer = settings.pretrained_model()
    assert model.vision_tower.model.config.model_type == "clip_vision_model"
    assert "<image>" in tokenizer.get_vocab()
    config = settings.pipeline_config(device="cpu", threads=1, **{k: v for k, v in TINY.items() if k != "scenes"})
    bars = hf_logging.is_progress_bar_enabled()
    assistant, folder = course.assistant(config)
    assert folder.parent == private_cache
    assert hf_logging.is_progress_bar_enabled() == bars   # silenced while it trained, then restored
    assert "stage2.jsonl" in (folder / "report.md").read_text()   # trained on the file, not on toy scenes
    answer = assistant.ask(Image.new("RGB", (32, 32)), "Is there a circle?")
    assert isinstance(answer, str)
    assert course.assistant(config)[1] == folder   # the second chapter loads it from the cache


# ---------------------------------------------------------------- the cache


def test_an_artifact_is_built_once_and_found_again(private_cache):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "result.txt").write_text("42")

    first = course.artifact("answer", {"question": "life"}, build)
    assert (first / "result.txt").read_text() == "42" and len(calls) == 1
    assert course.artifact("answer", {"question": "life"}, build) == first and len(calls) == 1
    assert json.loads((first / "recipe.json").read_text()) == {"name": "answer", "recipe": {"question": "life"}}
    other = course.artifact("answer", {"question": "everything"}, build)   # another recipe, another entry
    assert other != first and len(calls) == 2
    assert sorted(p.name for p in private_cache.iterdir()) == sorted([first.name, other.name])


def test_a_new_build_deletes_the_entries_an_older_package_made(private_cache, monkeypatch):
    """Same name and recipe, another package version: the old entry can never be found again, so
    it goes; an entry of another recipe, or of another name, stays."""
    build = lambda folder: (folder / "result.txt").write_text("42")   # noqa: E731
    def version(v):   # a fingerprint as course.fingerprint makes it, for package version v
        return lambda recipe: v + hashlib.sha256(json.dumps(recipe).encode()).hexdigest()

    monkeypatch.setattr(cache, "fingerprint", version("a"))   # where artifact looks it up
    old = course.artifact("answer", {"question": "life"}, build)
    kept = [course.artifact("answer", {"question": "everything"}, build),
            course.artifact("answer-b", {"question": "life"}, build)]
    monkeypatch.setattr(cache, "fingerprint", version("b"))   # the code changed
    new = course.artifact("answer", {"question": "life"}, build)
    assert new != old and not old.exists()
    assert sorted(p.name for p in private_cache.iterdir()) == sorted([new.name] + [k.name for k in kept])


def test_a_failed_build_leaves_nothing_that_looks_finished(private_cache):
    def broken(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        course.artifact("broken", {}, broken)
    assert list(private_cache.iterdir()) == []
    done = course.artifact("broken", {}, lambda folder: (folder / "whole.txt").write_text("whole"))
    assert sorted(p.name for p in done.iterdir()) == ["recipe.json", "whole.txt"]


def test_a_killed_builds_scratch_goes_at_the_next_build(private_cache):
    """A killed process cannot clean up its scratch folder; the next build removes it, but not
    the scratch of a build that is still running."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()   # a process that is gone now
    dead = private_cache / f"answer-0123.partial-{finished.pid}"
    alive = private_cache / f"other-4567.partial-{os.getppid()}"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
    course.artifact("answer", {"question": "life"}, lambda folder: (folder / "result.txt").write_text("42"))
    assert not dead.exists() and alive.exists()


def test_the_fingerprint_follows_the_recipe_and_the_package(monkeypatch, tmp_path):
    assert course.fingerprint({"a": 1}) == course.fingerprint({"a": 1})
    assert course.fingerprint({"a": 1}) != course.fingerprint({"a": 2})
    package = tmp_path / "minillava"
    (package / "backbones" / "weights").mkdir(parents=True)
    (package / "model.py").write_text("x = 1\n")
    monkeypatch.setattr(cache, "PACKAGE", package)
    before = course.fingerprint({"a": 1})
    (package / "model.py").write_text("x = 2\n")   # the code changed: the old entry must not be reused
    assert course.fingerprint({"a": 1}) != before


def test_the_fingerprint_follows_the_torch_version(monkeypatch):
    before = course.fingerprint({"a": 1})
    monkeypatch.setattr(cache.torch, "__version__", "9.9.9")   # another torch sums in another order
    assert course.fingerprint({"a": 1}) != before


def test_an_assistant_trained_on_one_device_or_arithmetic_is_not_reused_on_another(monkeypatch, private_cache):
    """The device the assistant trains on, its precision and the emulated arithmetic are in its recipe:
    a GPU's bf16 assistant is never handed to a CPU run, nor the reverse, and both stay cached."""
    trained = []

    def run(config, **_):   # stands in for the 1.5-minute pipeline run
        trained.append(config.device)
        (Path(config.out) / "assistant").mkdir(parents=True)

    monkeypatch.setattr(cache.pipeline, "run", run)
    monkeypatch.setattr("minillava.chat.load_assistant", lambda folder: folder)
    monkeypatch.delenv("MINILLAVA_EMULATE", raising=False)
    config = PipelineConfig()   # device None: pick_device's choice, which MINILLAVA_DEVICE forces

    def assistant_on(device, emulate=None):
        monkeypatch.setenv("MINILLAVA_DEVICE", device)
        if emulate:
            monkeypatch.setenv("MINILLAVA_EMULATE", emulate)
        return course.assistant(config)[1]

    cpu = assistant_on("cpu")
    # pick_device takes the name as given and the stand-in run needs no GPU; precision auto asks
    # the card whether it computes in bf16: a stand-in H100 says it does.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    gpu = assistant_on("cuda")
    assert gpu != cpu and len(trained) == 2
    assert json.loads((gpu / "recipe.json").read_text())["recipe"]["machine"] == {
        "device": "cuda", "precision": "bfloat16", "emulate": None}
    assert json.loads((cpu / "recipe.json").read_text())["recipe"]["machine"] == {
        "device": "cpu", "precision": "float32", "emulate": None}
    assert assistant_on("cpu") == cpu and len(trained) == 2 and gpu.exists()   # found again; the GPU's kept
    monkeypatch.setenv("MINILLAVA_DEVICE", "cuda")
    pinned = course.assistant(PipelineConfig(device="cpu"))[1]   # the config's own device wins, as in training
    assert json.loads((pinned / "recipe.json").read_text())["recipe"]["machine"]["device"] == "cpu"
    emulated = assistant_on("cpu", emulate="bf16")
    assert emulated not in (cpu, gpu) and len(trained) == 4


@pytest.mark.parametrize("name", ["", "a/b"])
def test_an_artifact_name_is_a_plain_folder_name(name):
    with pytest.raises(ValueError, match="plain, non-empty folder name"):
        course.artifact(name, {}, lambda folder: None)


def test_the_cache_folder_defaults_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MINILLAVA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert course.cache_dir() == tmp_path / "minillava" / "course"


def test_toy_data_is_the_engines_output_and_is_shared(monkeypatch):
    made = []
    monkeypatch.setattr("minillava.data.engine.generate", lambda seeds, folder: made.append(list(seeds)))
    first = course.toy_data(3)
    assert course.toy_data(3) == first and made == [[0, 1, 2]]


# ---------------------------------------------------------------- the chapters and the README


def test_every_chapter_has_goals_the_switch_a_summary_and_an_exercise_pointer():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(10)]
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert "**Learning goals**" in markdown[0], path.name
        assert "google.colab" in code[0], f"{path.name}: the first code cell installs the package in Colab"
        assert any("course.settings()" in source for source in code[:3]), f"{path.name}: no switch in its set-up"
        summary = next((s.split("## Summary", 1)[1] for s in markdown if re.search(r"(^|\n)## Summary", s)), None)
        assert summary is not None, f"{path.name} has no summary"
        if path.name[:2] != "00":
            exercise = f"exercises/{path.name}"
            assert exercise in summary and (ROOT / exercise).is_file(), f"{path.name}: summary must point at {exercise}"


def test_the_course_map_links_every_chapter_locally_and_in_colab():
    readme = (ROOT / "README.md").read_text()
    colab = re.findall(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/([\w/.-]+\.ipynb)",
                       readme)
    local = re.findall(r"\]\(((?:notebooks|exercises|solutions)/[\w.-]+\.ipynb)\)", readme)
    assert colab and local
    for path in [p for _, p in colab] + local:
        assert (ROOT / path).is_file(), f"README links {path}, which does not exist"
    assert {repo for repo, _ in colab} == {links.repository()}   # the one setting (tools/links.py)
    for chapter in CHAPTERS:
        name = f"notebooks/{chapter.name}"
        assert name in local and name in [p for _, p in colab], f"the course map misses {name}"
