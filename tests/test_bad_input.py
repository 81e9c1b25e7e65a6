"""Bad input at the command line: one line on stderr naming the problem and the fix, a non-zero
exit, never a traceback -- and a genuine bug still shows its traceback.

The commands run as a user runs them, in a subprocess. transformers' progress bars (loading
weights, generating data) also go to stderr; they are not messages and are left out of the count.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from minillava import cli
from minillava.chat import CHAT_FILE, load_assistant
from minillava.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from minillava.errors import UserError

from tiny_assistant import save_tiny_assistant

PROGRESS_BAR = re.compile(r"\d+/\d+ \[[\d:?]+<")   # tqdm: "63/63 [00:00<00:00, ...]"


def start(*args):
    """``minillava ARGS`` started in a subprocess (the tests start theirs at once: each takes
    seconds to import torch, and they wait on it side by side)."""
    return subprocess.Popen([sys.executable, "-m", "minillava.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def finish(process, timeout=180):
    """(exit status, stderr's message lines) of a started command; no traceback allowed."""
    _, stderr = process.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    return process.returncode, [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]


def run(*args):
    return finish(start(*args))


COMMANDS = ["chat", "serve", "eval", "export"]
DAMAGE = ["truncated", "missing"]


@pytest.fixture(scope="module")
def bad_weights_runs(tmp_path_factory):
    """Every command on a copy of the toy assistant whose weights file is cut in half (started
    now, in subprocesses), or gone (run in the test)."""
    toy = save_tiny_assistant(tmp_path_factory.mktemp("toy") / "assistant")
    runs = {}
    for how in DAMAGE:
        folder = shutil.copytree(toy, tmp_path_factory.mktemp(how) / "assistant")
        weights = folder / WEIGHTS_FILE
        if how == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            weights.unlink()
        for command in COMMANDS:
            extra = {"serve": ["--seconds", "1"], "eval": ["--n", "2"], "export": [folder.parent / "hf"]}
            # the case (a truncated file) as a user runs it; the missing one in this process (faster)
            runs[command, how] = folder, start(command, folder, *extra.get(command, [])) if how == "truncated" else None
    return runs


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_assistant_folder_with_bad_weights_is_one_line(command, how, bad_weights_runs, capsys):
    folder, process = bad_weights_runs[command, how]
    if process is None:   # the same command in this process: main() as the console script calls it
        extra = {"serve": ["--seconds", "1"], "eval": ["--n", "2"], "export": [folder.parent / "hf"]}
        with pytest.raises(SystemExit) as exit:
            cli.main([command, str(folder), *map(str, extra.get(command, []))])
        status, err = exit.value.code, capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
        if isinstance(status, str):   # sys.exit(message): Python prints it to stderr, exit status 1
            status, lines = 1, lines + [status]
    else:
        status, lines = finish(process)
    assert status not in (0, None) and len(lines) == 1, lines
    assert str(folder / WEIGHTS_FILE) in lines[0] and "re-save the assistant" in lines[0]
    assert ("truncated or corrupt" if how == "truncated" else "is missing") in lines[0]
    if command != "eval":   # eval's own message has no prefix (minillava.eval.suite)
        assert lines[0].startswith(f"minillava {command}: ")
    assert not (folder.parent / "hf").exists()   # nothing half-written


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return save_tiny_assistant(tmp_path_factory.mktemp("toy") / "assistant")


def test_malformed_json_data_is_one_line(tmp_path):
    bad = tmp_path / "llava_instruct.json"
    bad.write_text('[{"id": "a", "conversations": [}]')
    # both stages' data: the first file read stops the run (the toy stage-1 data would take a while)
    status, lines = run("pipeline", "--stage1-data", bad, "--data", bad, "--out", tmp_path / "run")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("minillava pipeline: ") and str(bad) in lines[0] and "JSON" in lines[0]


def test_exporting_the_convolutional_toy_assistant_is_one_line(toy, tmp_path):
    status, lines = run("export", toy, tmp_path / "hf")
    assert status == 2 and lines == [
        "minillava export: transformers' LLaVA reads a ViT's sequence of hidden states; this model's vision tower "
        "is a convolutional regnet (RegNetModel), which it cannot hold: export an assistant built on a ViT-style "
        "tower (CLIP, SigLIP)"]


@pytest.mark.parametrize("file, damage", [(CHAT_FILE, "{not json"), (CHAT_FILE, '{"processor": {"mode": "crop"}}'),
                                          (CHAT_FILE, "surprise"), (CONFIG_FILE, '{"minillava": {}}'),
                                          (CONFIG_FILE, "")])
def test_a_corrupt_settings_file_is_a_user_error_naming_it(file, damage, toy, tmp_path, capsys):
    folder = shutil.copytree(toy, tmp_path / "damaged")
    if damage == "surprise":   # valid settings plus one we never write
        damage = json.dumps({**json.loads((folder / file).read_text()), "surprise": 1})
    (folder / file).write_text(damage)
    with pytest.raises(UserError, match=f"{re.escape(str(folder / file))} is corrupt .*; re-save the assistant") as err:
        load_assistant(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(SystemExit) as exit:   # and at the command line: the one line, exit status 2
        cli.main(["export", str(folder), str(tmp_path / "hf")])
    assert exit.value.code == 2 and capsys.readouterr().err == f"minillava export: {err.value}\n"


def test_weights_that_do_not_fit_the_config_are_one_line(toy, tmp_path):
    folder = shutil.copytree(toy, tmp_path / "other")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["minillava"]["projector"] = "linear"   # the saved weights are an mlp2x_gelu's
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"does not fit minillava.json: \d+ tensor\(s\) missing, unexpected") as err:
        load_assistant(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("error", [KeyError("a bug"), ValueError("a bug")])
def test_a_bug_keeps_its_traceback(error, monkeypatch):
    # Only the user-error family becomes one line; anything else -- a plain ValueError too -- is
    # a bug, to be seen in full.
    def bug(config, **kwargs):
        raise error

    monkeypatch.setattr(cli.pipeline, "run", bug)
    with pytest.raises(type(error), match="a bug"):
        cli.main(["pipeline", "--out", "unused"])
