"""One place that picks the device, so every chapter runs unchanged on Colab or a laptop."""

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the MINILLAVA_DEVICE environment variable) forces a choice, e.g.
    ``"cpu"`` to reproduce the stored notebook outputs exactly on a GPU machine.
    """
    choice = prefer or os.environ.get("MINILLAVA_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
