"""Tests for minillava.backbones.build: a quick build (seconds), in this process and through the CLI.

A full build is what ships; its quality is tested in test_zoo.py.
"""

import re

import pytest
from transformers import LlamaForCausalLM, RegNetModel

from minillava.backbones import build, recipe, zoo
from minillava.backbones.toy_clip import scene_pixels
from minillava.cli import main
from minillava.conversation import IMAGE_MARKER
from minillava.toyworld import make_scene


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    lines = []
    report = build.build(out, recipe.QUICK, processes=1, log=lines.append)
    return out, report, lines


def test_quick_build_lowers_both_losses(quick_build):
    _, report, lines = quick_build
    for name in ("clip_loss", "lm_loss"):
        first, last = report[name]
        assert last < first, f"{name}: {first:.3f} -> {last:.3f}"
    assert any(line.startswith("clip step") for line in lines) and any(line.startswith("lm step") for line in lines)


def test_quick_build_writes_loadable_folders(quick_build, monkeypatch):
    out, _, _ = quick_build
    assert isinstance(zoo.load(str(out / "toy-vision")), RegNetModel)
    assert isinstance(zoo.load(str(out / "toy-lm")), LlamaForCausalLM)
    tokenizer = zoo.load_tokenizer(str(out / "toy-lm"))
    assert tokenizer.convert_tokens_to_ids(IMAGE_MARKER) == 3
    # the manifest covers every file, and zoo.path accepts the folder once pointed at it
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", out)
    for name in zoo.available():
        assert zoo.path(name) == out / name
    clip = zoo.load("toy-clip")
    images = scene_pixels([make_scene(s) for s in range(4)])
    assert clip.image_embeds(images).shape == (4, 64)


def test_cli_quick_build_needs_an_output_folder():
    with pytest.raises(SystemExit, match="--out"):
        main(["zoo", "build", "--quick"])


def test_cli_quick_build(tmp_path, capsys):
    main(["zoo", "build", "--quick", "--out", str(tmp_path), "--processes", "1"])
    printed = capsys.readouterr().out
    losses = re.search(r"clip loss (\S+) -> (\S+), lm loss (\S+) -> (\S+),", printed)
    clip_first, clip_last, lm_first, lm_last = map(float, losses.groups())
    assert clip_last < clip_first and lm_last < lm_first
    assert (tmp_path / zoo.MANIFEST).is_file()
