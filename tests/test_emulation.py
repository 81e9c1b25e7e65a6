"""MINILLAVA_EMULATE: the notebook kernels compute float32 matrix products as another machine would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import run_notebook  # tools/, on sys.path through conftest.py

ROOT = Path(__file__).resolve().parents[1]
# The largest error of a 64 x 64 product of standard normals against float64, and of a linear
# layer's weight gradient: float32 is off by about 1e-5, bfloat16 by about 1e-1, float16 by about
# 1e-2; computing in float64 leaves only the rounding of the result to float32 (about 1e-6).
PROBE = """
import torch, torch.nn.functional as F
torch.manual_seed(0)
a, b = torch.randn(64, 64), torch.randn(64, 64)
x = torch.randn(8, 64, requires_grad=True)
F.linear(x, a).sum().backward()
errors = [((a @ b).double() - a.double() @ b.double()).abs().max().item(),
          (F.linear(x, a).double() - x.double() @ a.double().T).abs().max().item()]
print((a @ b).dtype, x.grad.dtype, *errors)
"""


def kernel_python(emulate: str | None) -> list[str]:
    """Run PROBE in a fresh Python with the environment a notebook kernel gets."""
    env = {k: v for k, v in os.environ.items() if k not in ("MINILLAVA_EMULATE", "PYTHONPATH")}
    if emulate:
        env["MINILLAVA_EMULATE"] = emulate
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        run_notebook.prepare_kernel_environment()
        env = dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("emulate, low, high", [(None, 1e-7, 1e-4), ("bf16", 1e-2, 1.0), ("fp16", 1e-3, 1e-1),
                                                ("fp64", 0.0, 2e-6)])
def test_the_kernel_computes_products_in_the_emulated_precision(emulate, low, high):
    product_dtype, grad_dtype, *errors = kernel_python(emulate)
    assert product_dtype == grad_dtype == "torch.float32"   # the code around the products sees float32
    for error in map(float, errors):
        assert low <= error <= high, (emulate, error)


def test_an_unknown_emulation_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("MINILLAVA_EMULATE", "fp8")
    with pytest.raises(SystemExit, match="must be one of bf16, fp16, fp64, got 'fp8'"):
        run_notebook.prepare_kernel_environment()
