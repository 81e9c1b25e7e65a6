"""LoRA for stage 2: what trains, what stays bitwise put, merging, resuming, the pipeline flags.

References: llava-torch's own rule for which layers get adapters (``find_all_linear_names``)
and peft's own merge (``merge_and_unload``). QLoRA needs CUDA and bitsandbytes; on a CPU
only its refusal is tested.
"""

import ast
import copy
import dataclasses
import importlib.util
import json
import socket
from pathlib import Path

import llava
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from minillava import lora
from minillava.backbones import zoo
from minillava.backbones.zoo import tiny_random_model
from minillava.chat import load_assistant
from minillava.checkpoint import load_model
from minillava.cli import main
from minillava.toyworld import make_scene, render
from minillava.train import STAGE2, param_groups, set_trainable, train
from test_pipeline import TINY, flags
from test_train import DATA, HAS_IMAGE, LENGTHS

R, ALPHA = 4, 8.0
# A few steps at a large lr, so that the adapters move clearly.
LORA_STAGE = dataclasses.replace(STAGE2, lr=1e-2, batch_size=4, max_steps=6, warmup_ratio=0.0)


def adapted_model(r=R, dropout=0.0, seed=0):
    model = tiny_random_model()
    torch.manual_seed(seed)   # the adapters' A matrices
    return lora.add_adapters(model, r, ALPHA, dropout)


def fit(model, stage, out_dir, **kwargs):
    return train(model, stage, DATA, out_dir, lengths=LENGTHS, has_image=HAS_IMAGE, progress=False, **kwargs)


def llava_linear_names(lm: torch.nn.Module) -> set[str]:
    """llava-torch's find_all_linear_names on ``lm``. Its module imports transformers names that
    transformers 5 no longer has, so the function is read out of the file and run on its own."""
    source = Path(llava.__file__).parent / "train" / "train.py"
    tree = ast.parse(source.read_text())
    function = next(node for node in tree.body if getattr(node, "name", None) == "find_all_linear_names")
    namespace = {"torch": torch}
    exec(compile(ast.Module([function], type_ignores=[]), str(source), "exec"), namespace)
    return set(namespace["find_all_linear_names"](lm))


def test_adapters_sit_on_the_layers_llava_puts_them_on():
    model = adapted_model()
    adapted = {name.rpartition(".")[2] for name, module in model.language_model.named_modules()
               if isinstance(module, LoraLayer)}
    expected = llava_linear_names(tiny_random_model().language_model)
    assert adapted == expected == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("r", [1, 4, 16])
def test_trainable_parameters_are_r_times_in_plus_out_per_layer_plus_the_projector(r):
    plain = tiny_random_model()
    linears = [m for name, m in plain.language_model.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")]
    model = adapted_model(r)
    trainable = set_trainable(model, STAGE2.trainable)
    expected = sum(r * (m.in_features + m.out_features) for m in linears) + sum(
        p.numel() for p in model.projector.parameters())
    assert sum(p.numel() for p in trainable) == expected
    assert f"= {expected:,} of " in lora.describe(model)
    # Every trainable parameter is the projector's or an adapter's.
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith("projector.") or lora.is_adapter(n) for n in names)


def test_training_moves_only_the_adapters_and_the_projector(tmp_path):
    model = adapted_model(dropout=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit(model, LORA_STAGE, tmp_path, stop_after=3)   # unfinished: the adapters are not merged yet
    assert lora.has_adapters(model)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name.startswith("projector.") or lora.is_adapter(name)), name


def test_a_finished_stage_merges_and_saves_a_plain_model_with_the_adapter_models_logits(tmp_path):
    model = adapted_model()
    fit(model, LORA_STAGE, tmp_path / "run", stop_after=LORA_STAGE.max_steps - 1)
    reference = copy.deepcopy(model)   # peft's own merge, from the same trained adapters
    batch = {"input_ids": torch.tensor([[1, 5, 6, 99, 7, 8]]), "pixel_values": DATA[1]["pixel_values"]}
    with torch.no_grad():
        adapted_logits = model.eval()(**batch).logits
    # Our merge against peft's: the same float32 sums, so bitwise the same weights.
    reference.language_model = reference.language_model.merge_and_unload()
    merged = lora.merge_adapters(copy.deepcopy(model))
    assert not isinstance(merged.language_model, PeftModel)
    assert merged.state_dict().keys() == reference.state_dict().keys() == tiny_random_model().state_dict().keys()
    for name, value in merged.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    # W x + s B A x and (W + s B A) x differ by float rounding: measured 1.2e-7 at logits up to 0.42.
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted_logits, rtol=0, atol=1e-5)

    fit(model, LORA_STAGE, tmp_path / "run")   # the last step, then the stage's product
    assert not lora.has_adapters(model)
    saved = load_model(tmp_path / "run" / "model")
    with torch.no_grad():
        assert torch.equal(saved(**batch).logits, model.eval()(**batch).logits)


def test_resume_with_adapters_and_a_projector_lr_is_bitwise_exact(tmp_path):
    # Two optimizer groups (adapters, projector) and LoRA dropout: every group's moments and
    # the dropout RNG must come back from the checkpoint.
    stage = dataclasses.replace(LORA_STAGE, projector_lr=1e-3, save_every=2)
    uninterrupted = adapted_model(dropout=0.1)
    fit(uninterrupted, stage, tmp_path / "a")
    fit(adapted_model(dropout=0.1), stage, tmp_path / "b", stop_after=3)   # dies after 3; checkpoint-2 is newest
    resumed = adapted_model(dropout=0.1, seed=1)   # other initial adapters: the checkpoint overrides them
    fit(resumed, stage, tmp_path / "b")
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_projector_learns_at_its_own_rate(tmp_path):
    model = adapted_model()
    set_trainable(model, STAGE2.trainable)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    groups = param_groups(named, dataclasses.replace(LORA_STAGE, projector_lr=1e-4))
    assert [len(g["params"]) for g in groups] == [len(named) - 4, 4]   # mlp2x_gelu: 2 weights, 2 biases
    assert "peak_lr" not in groups[0] and groups[1]["peak_lr"] == 1e-4
    assert param_groups(named, LORA_STAGE) == [{"params": list(named.values())}]   # no projector lr: one group
    # A projector lr of 0 leaves the projector where it was while the adapters move.
    adapters = {n: p.detach().clone() for n, p in named.items() if lora.is_adapter(n)}
    projector = {n: p.detach().clone() for n, p in model.projector.named_parameters()}
    result = fit(model, dataclasses.replace(LORA_STAGE, projector_lr=0.0), tmp_path, stop_after=2)
    assert result.metrics[0]["lr"] == LORA_STAGE.lr   # group 0, the adapters, is what the metrics log
    assert all(torch.equal(p, projector[n]) for n, p in model.projector.named_parameters())
    assert not any(torch.equal(p, adapters[n]) for n, p in model.named_parameters() if n in adapters)


def test_checkpointing_still_trains_the_adapters_through_frozen_inputs(tmp_path):
    # Text-only batches give the LM inputs that need no gradient; the adapters inside the
    # recomputed layers must get theirs anyway, the same as without checkpointing.
    stage = dataclasses.replace(LORA_STAGE, max_steps=2)
    plain, checkpointed = adapted_model(), adapted_model()
    fit(plain, stage, tmp_path / "a", stop_after=1)
    fit(checkpointed, dataclasses.replace(stage, gradient_checkpointing=True), tmp_path / "b", stop_after=1)
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _ddp_worker(rank, world, folder, stage):
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = adapted_model()
    fit(model, stage, folder / "ddp")
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "ddp.safetensors"))
    dist.destroy_process_group()


def test_two_process_ddp_with_adapters_matches_one_process(tmp_path):
    # DDP around a model whose LM is peft-wrapped: the same adapters on every process, their
    # gradients averaged, the merge at the end the same on all.
    stage = dataclasses.replace(LORA_STAGE, max_steps=3, grad_accum=2, group_by_length=False, projector_lr=1e-3)
    mp.start_processes(_ddp_worker, args=(2, tmp_path, dataclasses.replace(stage, batch_size=2)),
                       nprocs=2, start_method="fork")
    single = adapted_model()
    fit(single, dataclasses.replace(stage, batch_size=4), tmp_path / "single")
    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    assert ddp.keys() == single.state_dict().keys()   # merged: plain names on both
    for name, w in single.state_dict().items():
        torch.testing.assert_close(ddp[name], w, rtol=0, atol=1e-5, msg=name)


def test_qlora_refuses_a_cpu_and_names_the_missing_package(monkeypatch):
    with pytest.raises(lora.QLoraUnavailable, match="needs a CUDA GPU .*use --lora"):
        lora.check_qlora(torch.device("cpu"))
    if not torch.cuda.is_available():   # called directly, add_adapters checks as well
        with pytest.raises(lora.QLoraUnavailable, match="needs a CUDA GPU"):
            lora.add_adapters(tiny_random_model(), R, ALPHA, 0.0, qlora=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(lora.QLoraUnavailable, match="pip install bitsandbytes"):
        lora.check_qlora(torch.device("cuda"))


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args):
        raise AssertionError(f"the pipeline tried to open a network connection to {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_pipeline_with_qlora_on_a_cpu_stops_before_anything_runs(tmp_path, capsys, no_network):
    with pytest.raises(SystemExit) as exit:
        main(["pipeline", "--qlora", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert exit.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "stage1").exists()


def test_pipeline_refuses_lora_with_fsdp(tmp_path, capsys, monkeypatch, no_network):
    # As if under torchrun (rank 0 of 2): FSDP would shard the layers that merging needs whole.
    for name, value in (("is_initialized", True), ("get_rank", 0), ("get_world_size", 2)):
        monkeypatch.setattr(torch.distributed, name, lambda value=value: value)
    with pytest.raises(SystemExit):
        main(["pipeline", "--lora", "--distributed", "fsdp", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert "cannot be combined with --distributed fsdp; use --distributed ddp" in capsys.readouterr().err


def test_pipeline_with_lora_saves_an_assistant_that_loads_and_answers(tmp_path, no_network):
    out = tmp_path / "out"
    main(["pipeline", "--lora", "--lora-r", "4", "--lora-alpha", "8", "--out", str(out), *flags(TINY)])
    report = (out / "report.md").read_text()
    # No --stage2-projector-lr: under LoRA the projector takes LLaVA's mm_projector_lr, 2e-5.
    assert "Stage 2 trained LoRA r 4, alpha 8" in report and "(projector 2e-05)" in report
    assert json.loads((out / "config.json").read_text())["lora"] is True
    assistant = load_assistant(out / "assistant")
    answer = assistant.ask(render(make_scene(5)), "What shapes are in the image?")
    assert isinstance(answer, str) and answer.strip()
    # The saved LM is the toy LM plus, on each linear layer, an update of rank <= r;
    # everything else of it (embeddings, norms, head) is bitwise the toy LM's.
    toy_lm = zoo.load("toy-lm")
    saved, original = assistant.model.language_model.state_dict(), toy_lm.state_dict()
    assert saved.keys() == original.keys()
    linear = {f"{name}.weight" for name, m in toy_lm.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not toy_lm.get_output_embeddings()}
    assert {name for name in saved if not torch.equal(saved[name], original[name])} == linear
    for name in linear:   # singular values past the 4th: float rounding of W + update, nothing more
        s = torch.linalg.svdvals(saved[name] - original[name])
        assert s[4] < 1e-3 * s[0], (name, s[4] / s[0])
