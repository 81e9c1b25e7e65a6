"""Stage-2 training at LLaVA-1.5's vision size on a GPU: step time and model FLOPs utilisation.

The toy backbones say nothing about speed at real scale, so this builds random-initialised
backbones of real shapes -- a CLIP ViT-L/14-336-shaped tower (576 patches of width 1024, read
at layer -2 as LLaVA-1.5 does) and a ~0.47 B-parameter LLaMA-shaped language model -- joins them
with the MLP projector, and runs ``minillava.train`` on synthetic stage-2 samples (one image, 512
text tokens) in bf16 autocast, as the pipeline trains on CUDA. Nothing is downloaded.

    python benchmarks/bench_real_size.py                         # the real-size preset, on CUDA
    python benchmarks/bench_real_size.py --batch 4 --gradient-checkpointing
    python benchmarks/bench_real_size.py --profile 30                # + where the GPU time goes
    python benchmarks/bench_real_size.py --preset tiny --device cpu --steps 2   # a smoke run

The levers issue 20 asks about, one flag each, so that each one's gain is measured on its own:
``--compile`` (torch.compile of every decoder and tower layer), ``--no-fused-adamw`` (the
trainer's AdamW is one fused kernel on CUDA; this measures what that gains), ``--batch``
(larger micro-batches), ``--varied-lengths`` with or without ``--group-by-length`` (samples of
64 to 512 text tokens: padding waste, and what length grouping saves of it), ``--precision``.

FLOPs are counted, not estimated: one forward + backward of a micro-batch runs under
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention). That count is
the *model* FLOPs only without recomputation, so it is taken with gradient checkpointing off;
MFU = model FLOPs per step / step time / the GPU's peak dense bf16 FLOP/s (also reported against
the rate its own large bf16 matrix product reaches, measured in the run). As a cross-check
the script prints the textbook estimate (``analytic_flops``): 6 x trainable matmul parameters
x tokens, plus attention, plus the frozen tower's forward pass; the two agree within a few per
cent (tests/test_bench_real_size.py).
"""

import argparse
import dataclasses
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from minillava.data.batching import collate
from minillava.model import MiniLlava, MiniLlavaConfig
from minillava.precision import mixed_precision
from minillava.train import STAGE2, set_trainable, train

# Peak dense bf16 tensor-core FLOP/s by device name (vendor data sheets, SXM parts).
ADAMW = torch.optim.AdamW
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
PRESETS = {
    # LLaVA-1.5's tower shape; a LLaMA shape of about half a billion parameters.
    "real": {"vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14),
             "language": dict(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, num_key_value_heads=16),
             "text_tokens": 512},
    "tiny": {"vision": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                            image_size=56, patch_size=14),
             "language": dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=4),
             "text_tokens": 48},
}


def build(preset: str, seed: int = 0, attention: str = "sdpa") -> MiniLlava:
    """A MiniLlava of the preset's shapes, random weights; the last vocabulary id is the image placeholder.

    attention: transformers' attn_implementation. The FLOP counter sees SDPA's fused kernels on
    CUDA but not on the CPU; "eager" attention is plain matmuls, which it counts everywhere.
    """
    shapes = PRESETS[preset]
    torch.manual_seed(seed)
    tower = CLIPVisionModel(CLIPVisionConfig(**shapes["vision"], attn_implementation=attention))
    lm = LlamaForCausalLM(LlamaConfig(**shapes["language"], max_position_embeddings=4096, attn_implementation=attention,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2))
    config = MiniLlavaConfig(image_token_id=lm.config.vocab_size - 1, projector="mlp2x_gelu")
    return MiniLlava(config, tower, lm)


def samples(model: MiniLlava, n: int, text_tokens: int, seed: int = 0, varied: bool = False) -> list[dict]:
    """n stage-2-like samples: a prompt with one image, then an answer (the supervised half).

    varied: text lengths drawn from text_tokens / 8 to text_tokens instead of all text_tokens long.
    """
    g = torch.Generator().manual_seed(seed)
    size = model.vision_tower.model.config.image_size
    image_id = model.config.image_token_id   # the last id: text ids are drawn below it
    out = []
    for _ in range(n):
        length = int(torch.randint(text_tokens // 8, text_tokens + 1, (), generator=g)) if varied else text_tokens
        ids = [1, image_id] + torch.randint(3, image_id, (length - 1,), generator=g).tolist()
        half = len(ids) // 2
        out.append({"input_ids": ids, "labels": [-100] * half + ids[half:],
                    "pixel_values": torch.randn(1, 3, size, size, generator=g)})
    return out


def counted_flops(model: MiniLlava, batch: dict, device: torch.device) -> int:
    """FLOPs of one forward + backward of ``batch`` as stage 2 runs it (tower frozen), counted by torch."""
    set_trainable(model, STAGE2.trainable)
    model.to(device).train()
    model.vision_tower.eval()   # frozen, as train() runs it
    batch = {k: v.to(device) if v is not None else None for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    with counter, mixed_precision(device):
        model(**batch, lean=True).loss_sum.backward()   # as train() runs it: logits only where scored
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def analytic_flops(model: MiniLlava, batch: dict) -> int:
    """The textbook count of the same step: 2 FLOPs per multiply-add; backward costs twice the forward.

    language model + projector (trained): 3 x (2 x matmul weights x positions + causal attention
        counted in full, 2 x 2 x positions^2 x width per layer, as the counter does), the output
        head at the scored positions only (the trainer's lean loss computes no other logits)
    vision tower (frozen, forward only): 2 x matmul weights x patches + attention, per image
    """
    lm, vision = model.language_model.config, model.vision_tower.model.config
    b, text = batch["input_ids"].shape
    images = batch["pixel_values"].shape[0]
    patches = (vision.image_size // vision.patch_size) ** 2
    positions = text - 1 + patches   # each placeholder becomes the image's tokens

    def matmul_weights(module) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if p.dim() == 2 and "embed" not in n)

    scored = int((batch["labels"] != -100).sum())   # each supervised label is predicted from the position before it
    lm_forward = (b * (2 * matmul_weights(model.language_model.model.layers) * positions
                       + lm.num_hidden_layers * 4 * positions ** 2 * lm.hidden_size)
                  + 2 * lm.vocab_size * lm.hidden_size * scored)   # the head
    projector_forward = 2 * matmul_weights(model.projector) * images * patches
    tokens = patches + 1   # the tower attends over its CLS token too
    v = vision.hidden_size
    tower_forward = images * (2 * matmul_weights(model.vision_tower.model.encoder) * tokens
                              + vision.num_hidden_layers * 4 * tokens ** 2 * v
                              + 2 * 3 * vision.patch_size ** 2 * v * patches)   # the patch convolution
    return 3 * (lm_forward + projector_forward) + tower_forward


def positions_per_sample(model: MiniLlava, batch: dict) -> int:
    """Spliced positions of a sample of ``batch``'s text length: the placeholder becomes the image's patches."""
    vision = model.vision_tower.model.config
    return int(batch["input_ids"].shape[1]) - 1 + (vision.image_size // vision.patch_size) ** 2


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def matmul_ceiling(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 matrix-product rate (FLOP/s) of this GPU: the practical ceiling MFU is also read against.

    Data-sheet peaks are rarely reached (an H100 SXM reaches about 800 of its 989 TFLOP/s on one large
    product), so the benchmark reports utilisation against both. Random operands: zeros run faster.
    """
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):   # warm-up: cuBLAS picks its kernel and the clocks rise
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / sorted(times)[len(times) // 2]


def step_times(metrics: list[dict]) -> list[float]:
    """Seconds of each step, from train()'s metrics (cumulative positions / cumulative positions per second)."""
    seen, ends = 0, []
    for record in metrics:
        seen += record["tokens"]
        ends.append(seen / record["tokens_per_s"])
    return [b - a for a, b in zip([0.0] + ends, ends)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="real")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps, after --warmup steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile each decoder and tower layer")
    parser.add_argument("--no-fused-adamw", action="store_true", help="AdamW without its fused CUDA kernel")
    parser.add_argument("--varied-lengths", action="store_true",
                        help="text lengths from 1/8 of the preset's to all of it (MFU then per real position)")
    parser.add_argument("--group-by-length", action="store_true", help="the trainer's length grouping")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of the device, if its name is not in PEAK_BF16")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N operators that take the most GPU time over the whole run (torch.profiler)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = build(args.preset)
    text_tokens = PRESETS[args.preset]["text_tokens"]
    data = samples(model, args.batch * (args.warmup + args.steps), text_tokens, varied=args.varied_lengths)
    batch = collate(samples(model, args.batch, text_tokens), pad_token_id=0)   # full length: the FLOPs per position
    flops, estimate = counted_flops(model, batch, device), analytic_flops(model, batch)
    stage = dataclasses.replace(STAGE2, batch_size=args.batch, max_steps=args.warmup + args.steps,
                                gradient_checkpointing=args.gradient_checkpointing, precision=args.precision,
                                group_by_length=args.group_by_length)
    lengths = [len(s["input_ids"]) for s in data]
    if args.compile:   # layer by layer: each compiles once, and the glue between them stays eager
        for layer in [*model.language_model.model.layers, *model.vision_tower.model.encoder.layers]:
            layer.compile()
    # The trainer fuses AdamW on CUDA; to measure what that gains, this run makes it not.
    unfused = mock.patch.object(torch.optim, "AdamW", lambda *a, **k: ADAMW(*a, **{**k, "fused": False}))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    activities = [torch.profiler.ProfilerActivity.CPU] + [torch.profiler.ProfilerActivity.CUDA] * (device.type == "cuda")
    profiler = torch.profiler.profile(activities=activities) if args.profile else nullcontext()
    with tempfile.TemporaryDirectory() as out, profiler as prof, unfused if args.no_fused_adamw else nullcontext():
        result = train(model, stage, data, out, lengths=lengths, has_image=[True] * len(data), device=device,
                       progress=False)
    if args.profile:   # where the step time goes: matmuls, attention, elementwise, optimizer
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile, max_name_column_width=60))
    seconds = sum(step_times(result.metrics)[args.warmup:]) / args.steps
    positions = sum(r["tokens"] for r in result.metrics[args.warmup:]) / args.steps   # real ones, per step
    if args.varied_lengths:   # both counts were of full-length samples: per real position, approximately
        scale = positions / (batch["attention_mask"].shape[0] * positions_per_sample(model, batch))
        flops, estimate = flops * scale, estimate * scale
    peak = peak_flops(device, args.peak_tflops)
    ceiling = matmul_ceiling(device) if device.type == "cuda" else None
    record = {
        "preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": args.batch, "positions_per_sample": positions_per_sample(model, batch),
        "gradient_checkpointing": args.gradient_checkpointing, "precision": args.precision, "compile": args.compile,
        "fused_adamw": device.type == "cuda" and not args.no_fused_adamw, "varied_lengths": args.varied_lengths,
        "group_by_length": args.group_by_length,
        "parameters": {name: sum(p.numel() for p in getattr(model, name).parameters())
                       for name in ("vision_tower", "projector", "language_model")},
        "step_seconds": seconds, "positions_per_s": positions / seconds,
        "model_tflops_per_step": flops / 1e12, "analytic_tflops_per_step": estimate / 1e12,
        "achieved_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "matmul_ceiling_tflops_per_s": ceiling / 1e12 if ceiling else None,
        "utilisation_of_measured_ceiling": flops / seconds / ceiling if ceiling else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
        "final_loss": result.final_loss,
    }
    print("| quantity | value |\n|---|---:|")
    for key, value in record.items():
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
