"""Talking to a trained MiniLlava: image + question -> answer, in one call.

An ``Assistant`` bundles what a conversation needs besides the weights: the tokenizer,
the image processor, and the chat template the model was trained with (a model trained on
vicuna_v1 and prompted in another template answers badly -- chapter 6 shows it). It
renders the conversation with the template's generation prompt, splices the image in,
generates greedily (or by sampling) until the template's end-of-turn marker, and returns
the text.

``save_assistant`` / ``load_assistant`` keep the four parts together in one folder.

``stream`` yields an answer while it is generated, for a chat that prints it as it comes;
``replies`` is its batched form, for a server: many conversations at once, each with its own
length limit and stop strings, its text released step by step with its token counts. Text is
released only once no later token can change it (see ``_release``), so the pieces always join
into the very answer ``chat`` returns.

An ``Assistant`` is also what the evaluation suite evaluates (``minillava.eval.assistants``):
it has a ``name`` for the reports, ``answer(image, question)``, and ``answer_batch``, which
answers many questions in one batched generation.
"""

import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from transformers import AutoTokenizer

from minillava.anyres import num_image_tokens
from minillava.checkpoint import load_model, save_model
from minillava.conversation import IMAGE_MARKER, encode, get_template
from minillava.errors import UserError
from minillava.image import ImageProcessor
from minillava.model import MiniLlava

CHAT_FILE = "chat.json"


@dataclass
class Reply:
    """One conversation's answer while it is generated (``Assistant.replies``)."""

    prompt_tokens: int                 # positions the prompt takes: text tokens + each image's features
    text: str = ""                     # the answer so far: only text that no later token can change
    new_text: str = ""                 # what the last step added to ``text``
    completion_tokens: int = 0         # tokens generated, the one that ended the answer included
    finish_reason: str | None = None   # "stop" (end of turn or a stop string), "length" (the token limit)


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
        return encode(text, self.tokenizer, bos=template.bos)   # exactly as training tokenizes

    def image_tokens(self, image) -> int:
        """Positions one image (a PIL image) takes in the model: its projected features."""
        tower = self.model.vision_tower
        if self.model.config.image_mode == "anyres":
            rows, _ = tower.patch_grid(tower.image_size, tower.image_size)
            return num_image_tokens((image.height, image.width), self.model.pinpoints, tower.image_size,
                                    tower.image_size // rows)
        if tower.image_size is None:   # a convolutional tower takes any size: here, the processor's
            rows, cols = tower.patch_grid(self.processor.size, self.processor.size)
            return rows * cols
        return tower.num_patches

    def _spliced_length(self, ids: list[int], images) -> int:
        """Length of a prompt once each <image> id is replaced by the features of the next image."""
        n = ids.count(self.model.config.image_token_id)
        return len(ids) - n + sum(self.image_tokens(next(images)) for _ in range(n))

    def prompt_length(self, messages: list[dict], images: list) -> int:
        """Positions the conversation takes in the model (text tokens, each image's features):
        what ``context_length`` bounds, and what a server reports as the prompt's tokens."""
        return self._spliced_length(self.prompt_ids(messages), iter(images))

    @property
    def context_length(self) -> int | None:
        """The most positions a prompt and its answer may take: the language model's position
        limit, or the model's ``max_length`` (beyond it the splice cuts prompts); None if neither."""
        limits = [self.model.config.max_length,
                  getattr(self.model.language_model.config, "max_position_embeddings", None)]
        return min((limit for limit in limits if limit), default=None)

    def _generation_inputs(self, rows: list[list[int]], images: list) -> dict:
        """``MiniLlava.generate``'s arguments for a batch of prompts (``prompt_ids``): left-padded
        ids, pixels, and when to stop."""
        device = next(self.model.parameters()).device
        width = max(map(len, rows))
        pad = self.model.config.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        pixels = self.processor(images) if images else {"pixel_values": None, "image_sizes": None}
        pixel_values = pixels["pixel_values"].to(device) if images else None
        marker = self._end_marker()
        marker_id = self.tokenizer.convert_tokens_to_ids(marker)
        single_token = marker_id is not None and marker_id != self.tokenizer.unk_token_id
        return dict(input_ids=ids, pixel_values=pixel_values, attention_mask=mask, image_sizes=pixels["image_sizes"],
                    eos_token_id=marker_id if single_token else self.tokenizer.eos_token_id,
                    stop_strings=None if single_token else [marker], tokenizer=self.tokenizer)

    @torch.no_grad()
    def chat(self, conversations: list[list[dict]], images: list, temperature: float = 0.0) -> list[str]:
        """Answer a batch of conversations (each a list of messages, the last one from the
        user); ``images`` holds, in order, every image the conversations' <image> markers
        refer to (PIL images). Returns one answer string per conversation."""
        rows = [self.prompt_ids(messages) for messages in conversations]
        new = self.model.generate(**self._generation_inputs(rows, images),
                                  max_new_tokens=self.max_new_tokens, temperature=temperature)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        marker = self._end_marker()
        return [t.split(marker)[0].strip() for t in texts]

    @torch.no_grad()
    def replies(self, conversations: list[list[dict]], images: list, temperature: float = 0.0, top_p: float = 1.0,
                max_new_tokens: int | list[int] | None = None, stops: list[list[str]] | None = None,
                ) -> Iterator[list[Reply]]:
        """``chat`` step by step, as a server needs it: after every generated token, yields the
        conversations' ``Reply`` objects (the same ones each time, updated).

        Each conversation has its own token limit (``max_new_tokens``: one int for all, a list,
        or None for the assistant's own) and its own stop strings (``stops``: a list per
        conversation; an answer ends before the first one, as in the OpenAI API). Generation
        ends once every reply is finished, or as soon as the caller stops iterating.
        """
        n = len(conversations)
        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens or self.max_new_tokens] * n
        stops = [[self._end_marker(), *s] for s in (stops or [[]] * n)]
        rows = [self.prompt_ids(messages) for messages in conversations]
        inputs = self._generation_inputs(rows, images)
        found = iter(images)
        replies = [Reply(self._spliced_length(row, found)) for row in rows]
        tokens = [[] for _ in range(n)]
        steps = self.model.generate_steps(**inputs, max_new_tokens=max(limits), temperature=temperature, top_p=top_p)
        with closing(steps):
            for step in steps:
                for reply, ids, token, limit, stop in zip(replies, tokens, step.tolist(), limits, stops):
                    reply.new_text = ""
                    if reply.finish_reason is None:
                        ids.append(token)
                        reply.completion_tokens += 1
                        text, stopped = _cut(self.tokenizer.decode(ids, skip_special_tokens=True), stop)
                        if stopped or token == inputs["eos_token_id"]:
                            reply.finish_reason = "stop"
                        elif len(ids) == limit:
                            reply.finish_reason = "length"
                        _advance(reply, _release(text, reply.finish_reason is not None, stop))
                yield replies
                if all(reply.finish_reason for reply in replies):
                    return

    def stream(self, messages: list[dict], images: list, temperature: float = 0.0, top_p: float = 1.0,
               max_new_tokens: int | None = None, stop: str | list[str] | None = None) -> Iterator[str]:
        """Answer one conversation, yielding the text as it is generated; the pieces join into
        what ``chat([messages], images)`` returns (greedily decoded). ``stop``: strings that end
        the answer (left out of it). Closing the generator, or leaving the loop, stops generating."""
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        with closing(self.replies([messages], images, temperature, top_p, max_new_tokens, [stop])) as steps:
            for (reply,) in steps:
                if reply.new_text:
                    yield reply.new_text

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


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of the stop strings, and whether one was there."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(ends)], True) if ends else (text, False)


def _release(text: str, final: bool, stops: list[str]) -> str:
    """What of a growing answer (decoded, cut at the first stop) can be shown already.

    A finished answer is stripped, as ``chat`` strips it. An unfinished one holds back what
    the next token could still change: trailing whitespace (it is stripped if the answer ends
    there, and tokenizers turn " ." into "."), a half-decoded character ("\ufffd": the first
    bytes of a multi-byte one) and a beginning of a stop string.
    """
    if final:
        return text.strip()
    text = text.lstrip()
    while True:
        held = text.rstrip().rstrip("\ufffd")
        partial = max((k for s in stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
        held = held[:len(held) - partial]
        if held == text:
            return text
        text = held


def _advance(reply: Reply, shown: str) -> None:
    """Move a reply on to ``shown``: the new part is what a stream sends next, and ``text``
    stays what was sent (``_release`` holds back all that could change, so shown extends it)."""
    reply.new_text = shown[len(reply.text):] if shown.startswith(reply.text) else ""
    reply.text += reply.new_text


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
    try:
        settings = json.loads((folder / CHAT_FILE).read_text())
        processor = ImageProcessor(**settings.pop("processor"))
        unknown = set(settings) - {f.name for f in fields(Assistant)}
        if unknown:
            raise KeyError(f"unknown settings {sorted(unknown)}")
    except (ValueError, KeyError, TypeError, AttributeError) as err:   # not JSON, not the settings we write
        raise UserError(f"{folder / CHAT_FILE} is corrupt ({type(err).__name__}: {err}); re-save the assistant "
                        "(minillava pipeline writes one)") from None
    return Assistant(load_model(folder).to(device), AutoTokenizer.from_pretrained(folder), processor, **settings)
