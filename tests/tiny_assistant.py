"""A small saved assistant for the tests that talk to one (the terminal chat, the server, the web demo).

The shipped toy backbones with a fresh projector drawn from a fixed seed, saved as
`minillava pipeline` saves its assistant: it loads in about a second, answers in fluent toy
English (the toy LM's), wrongly (nothing was trained), deterministically -- and differently
for different pictures, so a test can tell which picture a conversation was about.
"""

from pathlib import Path

import torch

from minillava.backbones.zoo import pretrained_model
from minillava.chat import Assistant, save_assistant
from minillava.image import ImageProcessor

# A question whose answer tells two toy scenes apart with the assistant below (seed 0).
DESCRIBE = "Describe the image."


def save_tiny_assistant(folder: str | Path, seed: int = 0, max_new_tokens: int = 12) -> Path:
    """Save the tiny assistant in ``folder`` (created) and return the folder."""
    torch.manual_seed(seed)   # the fresh projector's weights
    model, tokenizer = pretrained_model()
    processor = ImageProcessor("pad", 64)   # toy-vision's input size
    return save_assistant(Assistant(model, tokenizer, processor, max_new_tokens=max_new_tokens), folder)
