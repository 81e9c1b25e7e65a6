"""Run torch as another machine would: every float32 matrix product in another precision.

Strict ``pytest --nbval`` must pass on any machine a learner has, but a test machine has only
its own CPU. What differs elsewhere is the arithmetic: a GPU's autocast multiplies matrices in
bfloat16 (or float16 on a T4), another CPU sums in another order. This module imitates that on
the CPU: while it is on, every float32 matrix product, convolution and attention is computed
with its inputs rounded to ``bf16`` or ``fp16`` (as autocast computes them), or in ``fp64`` (more
exact than any machine), and the result is handed back in float32, so the code around it runs
unchanged. A chapter whose stored outputs survive all three quotes no digit that depends on the
machine.

    MINILLAVA_EMULATE=bf16 python -m pytest notebooks/04_two_stage_training.ipynb

tools/run_notebook.py puts tools/emulate/ first on the kernels' PYTHONPATH when
``MINILLAVA_EMULATE`` is set; Python then runs ``sitecustomize.py`` there at start-up, which calls
:func:`enable`. It works through a ``TorchFunctionMode``: every torch call is seen by
``__torch_function__`` below, and the matrix products are rerouted. Gradients flow through the
casts, so backward passes run in the emulated precision too, as under autocast.
"""

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}

# The operations autocast runs in half precision on a GPU (its "lower_precision_fp" list, in
# short): the matrix products of linear layers, attention and convolutions.
MATMULS = {
    F.linear, F.conv1d, F.conv2d, F.scaled_dot_product_attention,
    torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.Tensor.mm, torch.Tensor.bmm,
}


class EmulatedArithmetic(TorchFunctionMode):
    """Compute every float32 matrix product in ``dtype``; hand back float32."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in MATMULS or not _has_float32(args, kwargs):
            return func(*args, **kwargs)
        cast = lambda x: x.to(self.dtype) if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x
        out = func(*[_map(cast, a) for a in args], **{k: _map(cast, v) for k, v in kwargs.items()})
        return _map(lambda x: x.float() if isinstance(x, torch.Tensor) and x.dtype == self.dtype else x, out)


def _map(fn, value):
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v) for v in value)
    return fn(value)


def _has_float32(args, kwargs) -> bool:
    values = list(args) + list(kwargs.values())
    flat = [v for value in values for v in (value if isinstance(value, (list, tuple)) else [value])]
    return any(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in flat)


_ACTIVE: list[EmulatedArithmetic] = []


def enable(name: str) -> None:
    """Turn the emulation on for the rest of this process (main thread)."""
    if name not in DTYPES:
        raise ValueError(f"MINILLAVA_EMULATE must be one of {', '.join(DTYPES)}, got {name!r}")
    mode = EmulatedArithmetic(DTYPES[name])
    mode.__enter__()
    _ACTIVE.append(mode)
