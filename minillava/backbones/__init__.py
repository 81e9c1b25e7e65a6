"""The backbones: the zoo that loads any vision tower and language model, and the shipped toy pair's recipe."""
