"""Tests for minillava.backbones.gates on made-up towers: a measurement that can tell two apart.

The gates themselves, on the shipped weights, are in test_zoo.py.
"""

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from minillava.backbones import gates


def _vit(position_scale: float) -> CLIPVisionModel:
    """A random 4 x 4-patch ViT whose position embeddings are scaled by ``position_scale``."""
    torch.manual_seed(0)
    vit = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=64, patch_size=16))
    with torch.no_grad():
        table = vit.embeddings.position_embedding.weight
        table.copy_(torch.randn_like(table) * position_scale)
    return vit


def test_token_position_probe_finds_position_embeddings_and_only_them():
    # Tokens that carry a strong position embedding are told apart every time; without one,
    # a ViT's tokens are the same function of their patch wherever it is, so only content is left.
    placed = gates.token_position_probe(_vit(1.0), n_train=100, n_test=50, layer=-1)
    unplaced = gates.token_position_probe(_vit(0.0), n_train=100, n_test=50, layer=-1)
    assert placed["accuracy"] > 0.95 and placed["chance"] == 1 / 16
    assert unplaced["accuracy"] < 0.3
    assert len(placed["by_token"]) == 4 and all(len(row) == 4 for row in placed["by_token"])
