"""Talking to a trained MiniLlava: image + question -> answer, in one call.

An ``Assistant`` bundles what a conversation needs besides the weights: the tokenizer,
the image processor, and the chat template the model was trained with (a model trained on
vicuna_v1 and prompted in another template answers badly -- chapter 6 shows it). It
renders the conversation with the template's generation prompt, splices the image in,
generates greedily (or by sampling) until the template's end-of-turn marker, and returns
the text.

``save_assistant`` / ``load_assistant`` keep the four parts together in one folder.

An ``Assistant`` is also what the evaluation suite evaluates (``minillava.eval.assistants``):
it has a ``name`` for the reports, ``answer(image, question)``, and ``answer_batch``, which
answers many questions in one batched generation.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from minillava.checkpoint import load_model, save_model
from minillava.conversation import IMAGE_MARKER, get_template
from minillava.image import ImageProcessor
from minillava.model import MiniLlava

CHAT_FILE = "chat.json"


@dataclass
class Assistant:
    model: MiniLlava
    tokenizer: object
    processor: ImageProcessor
    template: str = "vicuna_v1"
    system: str | None = None
    max_new_tokens: int = 64
    name: str = "assistant"   # labels it in evaluation reports

    def _end_marker(self) -> str:
        # The text after "{content}" in the template's answer format: "</s>", "<|im_end|>", "\n".
        marker = get_template(self.template).answer_format.split("{content}")[1]
        return marker.strip() or marker

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation so far, ending with the open assistant turn."""
        template = get_template(self.template)
        text = template.render(messages, add_generation_prompt=True, system=self.system)
        bos = [self.tokenizer.bos_token_id] if template.bos and self.tokenizer.bos_token_id is not None else []
        return bos + self.tokenizer.encode(text, add_special_tokens=False)

    @torch.no_grad()
    def chat(self, conversations: list[list[dict]], images: list, temperature: float = 0.0) -> list[str]:
        """Answer a batch of conversations (each a list of messages, the last one from the
        user); ``images`` holds, in order, every image the conversations' <image> markers
        refer to (PIL images). Returns one answer string per conversation."""
        device = next(self.model.parameters()).device
        rows = [self.prompt_ids(messages) for messages in conversations]
        width = max(map(len, rows))
        pad = self.model.config.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        pixels = self.processor(images) if images else {"pixel_values": None, "image_sizes": None}
        pixel_values = pixels["pixel_values"].to(device) if images else None
        marker = self._end_marker()
        marker_id = self.tokenizer.convert_tokens_to_ids(marker)
        single_token = marker_id is not None and marker_id != self.tokenizer.unk_token_id
        new = self.model.generate(
            ids, pixel_values, mask, pixels["image_sizes"], max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            eos_token_id=marker_id if single_token else self.tokenizer.eos_token_id,
            stop_strings=None if single_token else [marker], tokenizer=self.tokenizer,
        )
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.split(marker)[0].strip() for t in texts]

    def ask(self, image, question: str) -> str:
        """One image, one question -> the answer."""
        content = question if image is None else f"{IMAGE_MARKER}\n{question}"
        return self.chat([[{"role": "user", "content": content}]], [image] if image is not None else [])[0]

    # The evaluation suite's interface (minillava.eval.assistants).

    def answer(self, image, question: str) -> str:
        """``ask`` by the name the suite calls."""
        return self.ask(image, question)

    def answer_batch(self, images: list, questions: list[str]) -> list[str]:
        """One question about each image, all answered in one batched generation."""
        return self.chat([[{"role": "user", "content": f"{IMAGE_MARKER}\n{q}"}] for q in questions], images)


def save_assistant(assistant: Assistant, folder: str | Path) -> Path:
    """Model weights + tokenizer + processor and template settings, in one folder."""
    folder = save_model(assistant.model, folder)
    assistant.tokenizer.save_pretrained(folder)
    settings = {"template": assistant.template, "system": assistant.system,
                "max_new_tokens": assistant.max_new_tokens, "processor": asdict(assistant.processor)}
    (folder / CHAT_FILE).write_text(json.dumps(settings, indent=2))
    return folder


def load_assistant(folder: str | Path, device: str | torch.device = "cpu") -> Assistant:
    """Load a folder written by :func:`save_assistant` (offline)."""
    folder = Path(folder)
    if not (folder / CHAT_FILE).is_file():
        raise FileNotFoundError(f"{folder / CHAT_FILE} is missing: {folder} was not written by save_assistant "
                                "(stage 2 of `minillava pipeline` writes one)")
    settings = json.loads((folder / CHAT_FILE).read_text())
    processor = settings.pop("processor")
    return Assistant(load_model(folder).to(device), AutoTokenizer.from_pretrained(folder),
                     ImageProcessor(**processor), **settings)
