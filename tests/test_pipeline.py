"""`minillava pipeline`: the stages chain, every file is written, options parse, bad ones are named.

Every run here is tiny (a few steps, a few scenes): it proves the wiring, not the quality.
The quality targets are measured by benchmarks/bench_pipeline.py. Nothing here may touch
the network: a socket that tries to connect fails the test.
"""

import argparse
import json
import re
import socket

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

from minillava import pipeline
from minillava.chat import load_assistant
from minillava.cli import main
from minillava.conversation import get_template
from minillava.toyworld import make_scene, render
from tiny_tokenizer import well_behaved

TINY = {"scenes": 40, "stage1_steps": 3, "stage1_batch": 4, "stage2_steps": 3, "stage2_batch": 4,
        "eval_scenes": 2, "eval_batch": 8, "max_new_tokens": 8}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args):
        raise AssertionError(f"the pipeline tried to open a network connection to {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def flags(options: dict) -> list[str]:
    return [part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One tiny run through the command line: options from a YAML file and from flags."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "run.yaml").write_text("stage1-lr: 0.002\nmixture:\n  text: 0\n  vqa: 5\n")
    main(["pipeline", "--config", str(root / "run.yaml"), "--out", str(root / "out"), *flags(TINY)])
    return root / "out"


def test_the_command_writes_stages_plots_assistant_eval_and_report(toy_run):
    assert (toy_run / "stage1" / "mm_projector.safetensors").is_file()   # stage 1: the projector alone
    assert (toy_run / "stage2" / "model" / "model.safetensors").is_file()
    for stage in ("stage1", "stage2"):
        assert (toy_run / stage / "loss.png").stat().st_size > 0
        assert len((toy_run / stage / "metrics.jsonl").read_text().splitlines()) == 3
    results = json.loads((toy_run / "eval" / "results.json").read_text())["results"]
    assert set(results) == set(pipeline.EVAL_TASKS)
    report = (toy_run / "report.md").read_text()
    for text in ("| source | weight | share |", "| stage1 | plain | projector |",
                 "| stage2 | vicuna_v1 | projector + language_model |", "| toy_vqa | accuracy |",
                 "| pope_random | f1 |", "| chair | chair_s |", "| whole run | seconds |"):
        assert text in report


def test_yaml_file_and_flags_both_reach_the_run(toy_run):
    used = json.loads((toy_run / "config.json").read_text())
    assert used["stage1_lr"] == 0.002 and used["stage2_steps"] == 3   # from the file / from a flag
    assert used["mixture"] == {**pipeline.PipelineConfig().mixture, "text": 0, "vqa": 5}
    assert json.loads((toy_run / "stage1" / "metrics.jsonl").read_text().splitlines()[0])["lr"] == pytest.approx(0.002)


def test_the_mixture_table_is_what_stage_2_trained_on(toy_run):
    report = (toy_run / "report.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in report.splitlines()
            if line.startswith("| ") and line.split(" | ")[0][2:] in pipeline.TOY_SOURCES}
    assert sum(int(row[3]) for row in rows.values()) == 3 * 4   # stage-2 steps x batch
    assert rows["text"][3] == "0" and int(rows["vqa"][3]) > int(rows["detail"][3])


def test_the_saved_assistant_reproduces_the_evaluation(toy_run, tmp_path):
    """`minillava eval --assistant OUT/assistant` gives the pipeline's own answers."""
    main(["eval", "--assistant", str(toy_run / "assistant"), "--tasks", ",".join(pipeline.EVAL_TASKS),
          "--n", str(TINY["eval_scenes"]), "--out", str(tmp_path)])
    assert (tmp_path / "samples.jsonl").read_text() == (toy_run / "eval" / "samples.jsonl").read_text()


def test_stage_2_starts_from_the_stage_1_projector(tmp_path):
    """With a vanishing stage-2 learning rate, the final projector is stage 1's, not a fresh one."""
    config = pipeline.make_config({**TINY, "out": str(tmp_path), "stage2_lr": 1e-12, "eval_scenes": 1})
    pipeline.run(config, progress=False, log=lambda *a: None)
    stage1 = load_file(str(tmp_path / "stage1" / "mm_projector.safetensors"))
    final = load_assistant(tmp_path / "assistant").model.projector.state_dict()
    fresh = pipeline.load_backbones(config)[0].projector.state_dict()
    for name, weight in stage1.items():
        assert torch.allclose(final[name], weight, atol=1e-6), name
    assert any(not torch.allclose(fresh[name], weight, atol=1e-4) for name, weight in stage1.items())


# ---------------------------------------------------------------- options and bad input

def parse(argv: list[str]) -> pipeline.PipelineConfig:
    parser = argparse.ArgumentParser()
    pipeline.add_arguments(parser)
    return pipeline.config_from_args(parser.parse_args(argv))


def test_flags_override_a_json_file_and_mixture_weights_merge(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"stage2_lr": 1e-4, "device": "cpu", "mixture": {"choice": 2}}))
    config = parse(["--config", str(tmp_path / "run.json"), "--stage2-lr", "5e-4", "--mixture", "text=0",
                    "--gradient-checkpointing"])
    assert config.stage2_lr == 5e-4 and config.device == "cpu" and config.gradient_checkpointing is True
    assert config.mixture == {**pipeline.PipelineConfig().mixture, "choice": 2, "text": 0}
    assert parse([]) == pipeline.PipelineConfig()


@pytest.mark.parametrize("text, message", [
    ("stage1_step: 10", r"unknown option 'stage1_step' in .*run.yaml \(did you mean 'stage1_steps'\?\); valid options"),
    ("template: vicuna", "unknown template 'vicuna'; choose one of plain, vicuna_v1"),
    ("stage2_steps: many", r"option 'stage2_steps' must be int, got 'many' \(str\)"),
    ("stage2_steps: true", "option 'stage2_steps' must be int"),
    ("stage1_batch: 0", "option 'stage1_batch' must be at least 1, got 0"),
    ("stage2_lr: -0.1", "option 'stage2_lr' must be positive"),
    ("mixture: {captions: 1}", r"unknown mixture source\(s\) \['captions'\]; the toy sources are conversation"),
    ("mixture: {vqa: -1}", "mixture weight of 'vqa' must be a number >= 0"),
    ("data: no/such/file.json", "data: no file at no/such/file.json"),
    ("- stage1_steps: 3", "must hold a mapping of option names to values, got list"),
    ("stage1_steps: [1", "is not valid YAML"),
])
def test_bad_config_files_are_refused_with_the_problem_named(tmp_path, text, message):
    (tmp_path / "run.yaml").write_text(text)
    with pytest.raises(pipeline.ConfigError, match=message):
        parse(["--config", str(tmp_path / "run.yaml")])


@pytest.mark.parametrize("name", list(pipeline.config.FIELDS))
def test_every_option_is_checked_from_its_field(name):
    """The checks come from each field's type and rules: none is written per option."""
    rules, default = pipeline.config.FIELDS[name].metadata, getattr(pipeline.PipelineConfig(), name)
    with pytest.raises(pipeline.ConfigError, match=f"^option '{name}' must be "):   # a list is no option's type
        pipeline.make_config({name: [default]})
    if "at_least" in rules:
        with pytest.raises(pipeline.ConfigError, match=f"^option '{name}' must be at least {rules['at_least']}, got "):
            pipeline.make_config({name: rules["at_least"] - 1})
        assert getattr(pipeline.make_config({name: rules["at_least"]}), name) == rules["at_least"]
    if rules.get("positive"):
        for bad in (0, -1.0, float("nan")):
            with pytest.raises(pipeline.ConfigError, match=f"^option '{name}' must be positive, got "):
                pipeline.make_config({name: bad})
    assert getattr(pipeline.make_config({name: default}), name) == default   # the default passes its own rules


def test_a_misspelt_rule_is_refused_where_the_option_is_declared():
    with pytest.raises(TypeError, match=r"unknown option rule\(s\) \['atleast'\]"):
        pipeline.config.option(1, "steps", atleast=1)


def test_the_command_line_reports_config_errors_without_a_traceback(tmp_path, capsys):
    """One line on stderr and exit status 2, as for a flag argparse itself cannot parse."""
    (tmp_path / "run.toml").write_text("")
    for argv, message in [
            (["--config", str(tmp_path / "run.toml")], r"config file .*run.toml must end in .json, .yaml"),
            (["--config", str(tmp_path / "missing.yaml")], r"config file .*missing.yaml not found"),
            (["--stage1-steps", "0"], r"option 'stage1_steps' must be at least 1, got 0"),
            (["--template", "vicuna"], r"unknown template 'vicuna'; choose one of plain, vicuna_v1"),
            (["--mixture", "captions=1"], r"unknown mixture source\(s\) \['captions'\]"),
            (["--data", str(tmp_path / "mix.json")], r"data: no file at .*mix.json; give a LLaVA JSON/JSONL file, "
                                                     r".* or a hub id \(owner/name\), or 'toy'")]:
        with pytest.raises(SystemExit) as stopped:
            main(["pipeline", "--out", str(tmp_path / "out"), *argv])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and re.fullmatch(f"minillava pipeline: {message}.*\n", err), (argv, err)
    assert not (tmp_path / "out").exists()   # refused before the run started
    with pytest.raises(SystemExit) as stopped:   # argparse: not a number
        main(["pipeline", "--stage2-lr", "fast"])
    assert stopped.value.code == 2 and "invalid float value: 'fast'" in capsys.readouterr().err


def test_a_misspelt_backbone_fails_before_any_data_is_made(tmp_path):
    config = pipeline.make_config({"out": str(tmp_path), "vision": "toy-vison"})
    with pytest.raises(pipeline.ConfigError, match="cannot load the backbones.*unknown zoo name 'toy-vison'"):
        pipeline.run(config, progress=False, log=lambda *a: None)
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_refused_up_front(tmp_path):
    with pytest.raises(pipeline.ConfigError, match="torch sees no CUDA device; use --device cpu"):
        pipeline.run(pipeline.make_config({"out": str(tmp_path), "device": "cuda"}), progress=False)


# ---------------------------------------------------------------- real backbones and LLaVA data files

def turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def hub_style(tmp_path_factory):
    """Tiny stand-ins for CLIP and a Llama chat model saved as hub folders (no preprocessor
    config: the tower's image_size is used), and LLaVA JSON files over an image folder."""
    root = tmp_path_factory.mktemp("hub")
    captions = [c for seed in range(20) for c in make_scene(seed).captions()]
    system = get_template("vicuna_v1").system
    tokenizer = well_behaved(captions + [f"{system} USER: ASSISTANT: Is there a circle? Yes. No. </s>"] * 3)
    tokenizer.save_pretrained(root / "llama")
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **small)).save_pretrained(root / "llama")
    CLIPModel(CLIPConfig(text_config=dict(small, vocab_size=99), projection_dim=16,
                         vision_config=dict(small, image_size=32, patch_size=8))).save_pretrained(root / "clip")
    (root / "images").mkdir()
    for seed in range(6):
        render(make_scene(seed)).save(root / "images" / f"{seed}.png")
    stage1 = [{"id": f"c{s}", "image": f"{s}.png",
               "conversations": turns("<image>\nDescribe the image briefly.", make_scene(s).captions()[0])}
              for s in range(6)]
    stage2 = [{"id": f"q{s}", "image": f"{s}.png", "conversations": turns("<image>\nIs there a circle?", "Yes.")}
              for s in range(6)]
    stage2 += [{"id": "lost", "image": "missing.png", "conversations": turns("<image>\nWhat is it?", "A square.")},
               {"id": "chat", "conversations": turns("Hello!", "Hello! How can I help you today?")}]
    (root / "stage1.json").write_text(json.dumps(stage1))
    (root / "stage2.jsonl").write_text("\n".join(json.dumps(r) for r in stage2))
    return root


def test_real_backbones_and_llava_files_through_the_same_command(hub_style, tmp_path):
    root = hub_style
    main(["pipeline", "--out", str(tmp_path), "--vision", str(root / "clip"), "--language", str(root / "llama"),
          "--stage1-data", str(root / "stage1.json"), "--data", str(root / "stage2.jsonl"),
          "--image-folder", str(root / "images"), "--device", "cpu",
          *flags({k: v for k, v in TINY.items() if k != "scenes"})])
    assert not (tmp_path / "data").exists()   # no toy data was generated
    report = (tmp_path / "report.md").read_text()
    assert "| stage2.jsonl | 1 | 100.0% | 8 | 8 | 1 |" in report   # the file, used once, as the mixture
    assert "| skipped: missing image file | 1 | lost |" in report
    assistant = load_assistant(tmp_path / "assistant")
    assert assistant.processor.size == 32   # CLIP's image_size: the folder has no preprocessor config
    assert assistant.model.config.image_token_id == assistant.tokenizer.convert_tokens_to_ids("<image>")
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["results"].keys() == set(pipeline.EVAL_TASKS)
