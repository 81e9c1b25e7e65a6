"""Precision: what a training step computes in, and what it keeps in float32.

| device | --precision auto | matrix products | trained weights, AdamW moments |
|---|---|---|---|
| CUDA, compute capability 8.0 on (A100, H100, RTX 30xx ...) | bf16 | bfloat16 (autocast) | float32 |
| CUDA before that (T4, V100) | fp16 | float16 (autocast) + loss scaling | float32 |
| CPU, Apple MPS | fp32 | float32 | float32 |

A checkpoint's own dtype (Vicuna's float16, Qwen's bfloat16) decides none of this: the weights
that train are cast to float32 (``master_weights``), the frozen ones keep it. The trainer stops
a run whose loss or gradients become NaN or infinite (``loss.DivergenceError``).
"""

from contextlib import nullcontext

import torch

from minillava.errors import UserError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# fp16 loss scaling. The loss backpropagated is a micro-batch's token-loss *sum*, hundreds to
# thousands of times the mean loss that GradScaler's default start (2**16) is tuned for: from there
# the first dozen steps would overflow and be skipped. 2**8 is that default for a 256-token mean.
INIT_LOSS_SCALE = 2.0 ** 8
# A step whose scaled gradients overflowed is skipped and the scale halved: after 8 skips in a row
# gradients are no longer scaled up at all, after 16 they are scaled down 256-fold. An overflow that
# survives that is not the scale's doing: the gradients are NaN or do not fit float16, and the run stops.
MAX_SKIPPED_IN_A_ROW = 16
TRY_INSTEAD = ("lower the learning rate, or train in another precision (--precision bf16 on a GPU that has it, "
               "else fp32)")


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype:
    """What a training step's matrix products run in: the one place that decides it.

    auto: bfloat16 on a CUDA GPU that computes in it (compute capability 8.0 on: A100, H100,
    RTX 30xx ...), float16 on one that does not (T4, V100; trained with loss scaling), float32
    on a CPU or Apple's MPS. fp32, bf16 and fp16 ask for one; bf16 and fp16 run on CUDA and, for
    checks, on the CPU (slowly); asked for where they cannot run, they are refused.
    """
    device = torch.device(device)
    native_bf16 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)
    if precision == "auto":
        return torch.bfloat16 if native_bf16 else torch.float16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16:
        raise UserError(f"precision bf16 needs a GPU of compute capability 8.0 or newer, and "
                        f"{torch.cuda.get_device_name(device)} is older; use --precision fp16 (or auto)")
    if dtype != torch.float32 and device.type not in ("cuda", "cpu"):
        raise UserError(f"precision {precision} is not supported on {device.type}; use --precision fp32 (or auto)")
    return dtype


def mixed_precision(device: torch.device | str, precision: str = "auto"):
    """The context a training step runs in: autocast to ``autocast_dtype``, or nothing for float32."""
    dtype = autocast_dtype(device, precision)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def master_weights(params: list[torch.nn.Parameter]) -> None:
    """Keep trained weights in float32, whatever dtype their checkpoint loaded in.

    AdamW's state takes the dtype of its parameter. In float16 its eps (1e-8) rounds to 0 and the
    loss is NaN within steps; in bfloat16 an update below about 1/256 of a weight rounds away
    (at lr 2e-5 most of a step's updates do). Autocast still runs the products in half
    precision; frozen modules keep their dtype (half the memory).
    """
    for p in params:
        if p.dtype != torch.float32:
            p.data = p.data.float()   # the same Parameter object: ties (embeddings, lm_head) hold
