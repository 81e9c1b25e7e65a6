"""What fits which GPU: peak memory and step time of stage 2 at real shapes (issue 20, section 3).

Random-initialised backbones of real shapes (nothing downloaded), trained by ``minillava.train``
itself on synthetic LLaVA-1.5 samples (one 336 px image = 576 positions, plus 512 text tokens:
1,088 positions, the answer half supervised), bf16 autocast, float32 master weights:

| config | vision | language model | stage 2 trains |
|---|---|---|---|
| 7b-lora   | CLIP ViT-L/14-336 | LLaMA-7B shape (Vicuna-7B v1.5), bf16 | LoRA r 128 + projector |
| 7b-qlora  | CLIP ViT-L/14-336 | LLaMA-7B shape, 4-bit NF4 (CUDA only)  | LoRA r 128 + projector |
| 0.5b-full | CLIP ViT-L/14-336 | Qwen2-0.5B shape, 152K vocabulary     | everything but the tower |
| 1.5b-full | CLIP ViT-L/14-336 | Qwen2-1.5B shape, 152K vocabulary     | everything but the tower |

at micro-batch 1, 4 and 16, gradient checkpointing off and on. Each row: peak GPU memory
(``torch.cuda.max_memory_allocated``), seconds per optimizer step (after a warm-up step), and
whether it fits a 16 GB T4, a 40 GB A100 and an 80 GB H100 (peak + CONTEXT_GIB within what
torch reports as the card's memory; a T4 runs fp16 rather than bf16, with the same sizes).
Out-of-memory rows say so, and a larger micro-batch is then not tried.

    python benchmarks/bench_sizing.py --out sizing.json       # on a GPU: the table (minutes)
    python benchmarks/bench_sizing.py --configs 0.5b-full --batches 1,4
    python benchmarks/bench_sizing.py --tiny                  # the same code at toy shapes, CPU, seconds
    python benchmarks/bench_sizing.py --loss-memory           # the loss alone: plain vs lean, CPU or GPU

``--loss-memory`` measures what the memory-lean loss saves (loss.lean_loss_sum): the peak memory
of one 1,088-position sample's loss, forward and backward, from bf16 hidden states through a
152K-word head, computed as the trainer did before (full logits, upcast) and as it does now
(logits at the scored positions only, upcast a chunk at a time). On a CPU each variant runs in a
fresh process and its peak is the growth of the process's peak resident memory.
"""

import argparse
import dataclasses
import gc
import json
import resource
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from bench_real_size import PRESETS, samples, step_times
from minillava.errors import UserError
from minillava.lora import add_adapters
from minillava.loss import lean_loss_sum, lm_loss_sum, scored_positions
from minillava.model import MiniLlava, MiniLlavaConfig
from minillava.train import STAGE2, train

GIB = 2 ** 30
LANGUAGE = {   # the shapes of the published configs
    "llama-7b": (LlamaForCausalLM, LlamaConfig, dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                                     num_hidden_layers=32, num_attention_heads=32,
                                                     num_key_value_heads=32)),
    "qwen2-0.5b": (Qwen2ForCausalLM, Qwen2Config, dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                                       num_hidden_layers=24, num_attention_heads=14,
                                                       num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2-1.5b": (Qwen2ForCausalLM, Qwen2Config, dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                                       num_hidden_layers=28, num_attention_heads=12,
                                                       num_key_value_heads=2, tie_word_embeddings=True)),
}
# The same architectures at toy sizes (--tiny: the code path on a CPU, in seconds).
TINY_SHAPES = {
    "llama-7b": dict(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4),
    "qwen2-0.5b": dict(vocab_size=1500, hidden_size=56, intermediate_size=304, num_hidden_layers=2,
                       num_attention_heads=7, num_key_value_heads=1),
    "qwen2-1.5b": dict(vocab_size=1500, hidden_size=96, intermediate_size=560, num_hidden_layers=2,
                       num_attention_heads=6, num_key_value_heads=1),
}
TINY_LANGUAGE = {name: (model, config, {**shape, **TINY_SHAPES[name]})
                 for name, (model, config, shape) in LANGUAGE.items()}
CONFIGS = {"7b-lora": ("llama-7b", "lora"), "7b-qlora": ("llama-7b", "qlora"),
           "0.5b-full": ("qwen2-0.5b", "full"), "1.5b-full": ("qwen2-1.5b", "full")}
BATCHES, TINY_BATCHES = (1, 4, 16), (1, 2)
TEXT_TOKENS, TINY_TEXT_TOKENS = 513, 24   # 576 image positions + 513 - 1 placeholder = 1,088 positions
LORA = dict(r=128, alpha=256.0, dropout=0.05)   # LLaVA-1.5's LoRA recipe
# The memory torch reports for each card (GiB), and what a run needs beyond its allocated peak:
# the CUDA context and cuBLAS workspaces (not counted by max_memory_allocated) and fragmentation.
CARDS = {"T4 16 GB": 15.0, "A100 40 GB": 39.4, "H100 80 GB": 79.1}
CONTEXT_GIB = 1.0


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Create modules' parameters in ``dtype`` (a 7B model built in float32 first would need twice the memory)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(name: str, tiny: bool, device: torch.device) -> MiniLlava:
    """The config's MiniLlava, random weights, backbones in bf16 on a GPU (as their checkpoints load) and
    float32 on a CPU; LoRA/QLoRA adapters added as the pipeline adds them before stage 2."""
    lm_name, method = CONFIGS[name]
    model_class, config_class, shape = (TINY_LANGUAGE if tiny else LANGUAGE)[lm_name]
    torch.manual_seed(0)
    with torch.device(device), default_dtype(torch.float32 if device.type == "cpu" else torch.bfloat16):
        tower = CLIPVisionModel(CLIPVisionConfig(**PRESETS["tiny" if tiny else "real"]["vision"]))
        lm = model_class(config_class(**shape, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
                                      eos_token_id=2))
        model = MiniLlava(MiniLlavaConfig(image_token_id=shape["vocab_size"] - 1), tower, lm)
    if method != "full":
        add_adapters(model, **LORA, qlora=method == "qlora")   # QLoRA on a CPU: QLoraUnavailable
    return model


def measure(model: MiniLlava, batch: int, checkpointing: bool, steps: int, warmup: int, text_tokens: int,
            device: torch.device) -> dict:
    """Peak memory and seconds per step of ``steps`` stage-2 steps after ``warmup`` ones, by train() itself."""
    if not checkpointing and model.language_model.is_activation_checkpointing:
        model.language_model.activation_checkpointing_disable()   # train() turns it on, never off
    data = samples(model, batch * (warmup + steps), text_tokens)
    # One step more than is run: the stage does not end, so nothing is saved and LoRA is not merged.
    stage = dataclasses.replace(STAGE2, batch_size=batch, max_steps=warmup + steps + 1, group_by_length=False,
                                gradient_checkpointing=checkpointing)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as out:
        result = train(model, stage, data, out, device=device, progress=False, stop_after=warmup + steps)
    seconds = sum(step_times(result.metrics)[warmup:]) / steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()
    return {"peak_gib": peak / GIB, "step_seconds": seconds, "samples_per_s": batch / seconds}


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes (Linux reports KiB): on a CPU, an upper bound."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def fits(peak_gib: float) -> dict:
    return {card: peak_gib + CONTEXT_GIB <= memory for card, memory in CARDS.items()}


def sizing(configs, batches, steps: int, warmup: int, tiny: bool, device: torch.device, done=None) -> list[dict]:
    """Every row (config x checkpointing x micro-batch); ``done(rows)`` after each, so that a run cut short
    by a time limit still leaves what it measured."""
    rows = []
    for name in configs:
        try:
            model = build(name, tiny, device).to(device)
        except UserError as err:   # QLoRA without CUDA or bitsandbytes
            for checkpointing in (True, False):
                for batch in batches:
                    rows.append({"config": name, "micro_batch": batch, "checkpointing": checkpointing,
                                 "status": f"skipped: {err}"})
                    if done:
                        done(rows)
            continue
        for checkpointing in (True, False):   # with checkpointing first: it needs the least memory
            too_big = False
            for batch in batches:
                row = {"config": name, "micro_batch": batch, "checkpointing": checkpointing}
                if too_big:
                    rows.append({**row, "status": "OOM (at a smaller micro-batch)"})
                    continue
                try:
                    row.update(measure(model, batch, checkpointing, steps, warmup,
                                       TINY_TEXT_TOKENS if tiny else TEXT_TOKENS, device), status="ok")
                    row["fits"] = fits(row["peak_gib"])
                except torch.cuda.OutOfMemoryError:
                    row["status"], too_big = "OOM", True
                    model.zero_grad(set_to_none=True)   # a backward cut short leaves gradients behind
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                if done:
                    done(rows)
        del model
        gc.collect()
    return rows


def table(rows: list[dict], header: bool = True) -> str:
    lines = ["| config | micro-batch | checkpointing | peak GiB | s / step | samples / s | "
             + " | ".join(f"fits {card}" for card in CARDS) + " |",
             "|---|---:|---|---:|---:|---:|" + "---|" * len(CARDS)] if header else []
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['config']} | {r['micro_batch']} | {'on' if r['checkpointing'] else 'off'} | "
                         f"{r['status']} |" + " |" * (2 + len(CARDS)))
            continue
        lines.append(f"| {r['config']} | {r['micro_batch']} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{r['peak_gib']:.1f} | {r['step_seconds']:.3f} | {r['samples_per_s']:.1f} | "
                     + " | ".join("yes" if r["fits"][card] else "no" for card in CARDS) + " |")
    return "\n".join(lines)


def recipes(rows: list[dict]) -> str:
    """Per card and config: the largest micro-batch that fits, and whether it needs checkpointing."""
    lines = []
    for card in CARDS:
        for name in dict.fromkeys(r["config"] for r in rows):
            measured = [r for r in rows if r["config"] == name and r["status"] == "ok"]
            fitting = [r for r in measured if r["fits"][card]]
            best = max(fitting, key=lambda r: (r["micro_batch"], not r["checkpointing"]), default=None)
            verdict = ("not measured" if not measured else "does not fit" if best is None else
                       f"micro-batch {best['micro_batch']}, checkpointing {'on' if best['checkpointing'] else 'off'}")
            lines.append(f"{card}: {name}: {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the loss alone

def loss_peak(variant: str, vocab: int, hidden: int, positions: int, scored: int, device: torch.device) -> int:
    """Peak bytes one sample's loss (forward + backward) adds, from bf16 hidden states through a bf16 head.

    variant: "plain" (the trainer before: logits everywhere, lm_loss_sum) or "lean" (lean_loss_sum).
    The last ``scored`` positions are scored (the answer); image and prompt positions are not.
    """
    torch.manual_seed(0)
    # Drawn in place: randn in bf16 would make a float32 temporary, whose peak would hide the loss's.
    head = torch.empty(vocab, hidden, dtype=torch.bfloat16, device=device).normal_(std=hidden ** -0.5)
    states = torch.empty(1, positions, hidden, dtype=torch.bfloat16, device=device).normal_().requires_grad_()
    labels = torch.full((1, positions), -100, device=device)
    labels[0, positions - scored:] = torch.randint(0, vocab, (scored,), device=device)
    labels[0, positions - scored - 1] = 0   # the first answer token is predicted from the position before it
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = current_rss()
        assert peak_rss() < base + 2 ** 20, "an earlier peak would hide the loss's: measure in a fresh process"
    if variant == "plain":
        loss, _ = lm_loss_sum(states @ head.T, labels)
    else:
        loss, _ = lean_loss_sum(states[scored_positions(labels)] @ head.T, labels)
    loss.backward()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    return peak_rss() - base


def loss_memory(device: torch.device, vocab: int = 151936, hidden: int = 896, positions: int = 1088) -> list[dict]:
    """Both variants, with the answer a quarter of the sample and with every position scored."""
    rows = []
    for scored in (positions // 4, positions - 1):
        for variant in ("plain", "lean"):
            args = [variant, vocab, hidden, positions, scored]
            if device.type == "cpu":   # a fresh process each: the peak resident memory only grows
                out = subprocess.run([sys.executable, __file__, "--loss-variant", *map(str, args)],
                                     capture_output=True, text=True, check=True).stdout
                peak = int(out.split()[-1])
            else:
                peak = loss_peak(*args, device)
            rows.append({"variant": variant, "vocab": vocab, "positions": positions, "scored": scored,
                         "peak_gib": peak / GIB})
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy shapes on the CPU: the same code, in seconds")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--batches", default=None, help="micro-batch sizes (default 1,4,16; --tiny: 1,2)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row, after --warmup steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss-memory", action="store_true", help="measure the loss alone, plain vs lean")
    parser.add_argument("--loss-variant", nargs=5, help=argparse.SUPPRESS)   # the child process of --loss-memory
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)
    if args.loss_variant:
        variant, *sizes = args.loss_variant
        print(loss_peak(variant, *map(int, sizes), torch.device("cpu")))
        return []
    device = torch.device(args.device or ("cpu" if args.tiny or args.loss_memory and not torch.cuda.is_available()
                                          else "cuda"))
    if args.loss_memory:
        rows = loss_memory(device)
        print("| loss | vocabulary | positions | scored | peak GiB |\n|---|---:|---:|---:|---:|")
        print("\n".join(f"| {r['variant']} | {r['vocab']} | {r['positions']} | {r['scored']} | {r['peak_gib']:.2f} |"
                        for r in rows))
    else:
        if device.type != "cuda" and not args.tiny:
            raise SystemExit("bench_sizing.py measures GPU memory: run it on a CUDA GPU, or with --tiny to try the "
                             "code at toy shapes on the CPU")
        configs = [c for c in args.configs.split(",") if c]
        unknown = set(configs) - set(CONFIGS)
        if unknown:
            raise SystemExit(f"unknown config(s) {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
        batches = [int(b) for b in args.batches.split(",")] if args.batches else TINY_BATCHES if args.tiny else BATCHES

        def done(rows):
            print(table(rows[-1:], header=len(rows) == 1), flush=True)
            save(args.out, device, args.tiny, rows)
        rows = sizing(configs, batches, args.steps, args.warmup, args.tiny, device, done)
        print(recipes(rows))
    save(args.out, device, args.tiny, rows)
    return rows


def save(out: Path | None, device: torch.device, tiny: bool, rows: list[dict]) -> None:
    if out:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        out.write_text(json.dumps({"device": name, "tiny": tiny, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
