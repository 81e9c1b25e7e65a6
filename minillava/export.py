"""``minillava export ASSISTANT OUT``: a saved assistant as a transformers-native model folder.

The folder holds what ``AutoModelForImageTextToText`` and ``AutoProcessor`` load, offline:

- the model (``interop.to_hf``): ``LlavaForConditionalGeneration``, or
  ``LlavaNextForConditionalGeneration`` for ``image_mode="anyres"``, with a generation
  config that stops where the assistant stops (its template's end-of-turn token);
- the processor: transformers' LLaVA (or LLaVA-NeXT) image processor set to preprocess as
  ours does -- pad to a square with the mean colour or squash, resize bicubic, normalise;
  AnyRes tiles -- bit for bit (tests/test_export.py); the tokenizer; the number of
  ``<image>`` tokens an image expands into (``patch_size``, ``num_additional_image_tokens``,
  ``vision_feature_select_strategy``); and the chat template.

The chat template is made from the assistant's conversation template (``Template.to_jinja``,
the one definition of the layout), behind a short prelude that does what ``to_messages``
does for us: it takes transformers' multimodal messages (content as a list of
``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts) or plain strings with
``<image>`` markers, and moves the image markers to the start of the first user turn. The
template writes the BOS token itself where ours adds it, so the processor adds none.
Before anything is written, the template is checked against the assistant's own prompt
ids on a probe conversation: a folder that would prompt the model differently is never
written.

transformers picks its torchvision image processor when torchvision is installed; that one
resizes with torch's bicubic, not PIL's, so its pixels may differ slightly (untested here: no
torchvision). For the very pixels the assistant saw, load with
``AutoProcessor.from_pretrained(folder, backend="pil")`` (the PIL one, which the tests compare).
"""

import copy
import dataclasses
import json
from pathlib import Path

from PIL import Image
from transformers import GenerationConfig, LlavaNextImageProcessorPil, LlavaNextProcessor, LlavaProcessor
from transformers.image_utils import PILImageResampling
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from minillava.chat import Assistant
from minillava.conversation import IMAGE_MARKER, get_template
from minillava.errors import UserError
from minillava.image import ImageProcessor
from minillava.interop import to_hf

# Messages as transformers passes them -> what Template.to_jinja expects (to_messages' form):
# content as one string, every user turn's <image> markers removed and put, one line each,
# at the start of the first user turn. Then BOS where our prompt has one.
_JINJA_PRELUDE = """\
{%- set image = IMAGE -%}
{%- set ns = namespace(images=0, turns=[]) -%}
{%- for m in messages -%}
  {%- set part = namespace(text='') -%}
  {%- if m['content'] is string -%}{%- set part.text = m['content'] -%}
  {%- else -%}
    {%- for c in m['content'] -%}
      {%- if c['type'] == 'image' -%}{%- set part.text = part.text + image -%}
      {%- elif c['type'] == 'text' -%}{%- set part.text = part.text + c['text'] -%}{%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  {%- if m['role'] == 'user' and image in part.text -%}
    {%- set ns.images = ns.images + part.text.count(image) -%}
    {%- set part.text = part.text.replace(image, '').strip() -%}
  {%- endif -%}
  {%- set ns.turns = ns.turns + [{'role': m['role'], 'content': part.text}] -%}
{%- endfor -%}
{%- set ns.first = true -%}{%- set ns.messages = [] -%}
{%- for m in ns.turns -%}
  {%- if m['role'] == 'user' and ns.first and ns.images -%}
    {%- set markers = (image + '\\n') * ns.images -%}
    {%- set m = {'role': 'user', 'content': (markers + m['content']) if m['content'] else markers[:-1]} -%}
  {%- endif -%}
  {%- if m['role'] == 'user' -%}{%- set ns.first = false -%}{%- endif -%}
  {%- set ns.messages = ns.messages + [m] -%}
{%- endfor -%}
{%- set messages = ns.messages -%}
""".replace("IMAGE", json.dumps(IMAGE_MARKER))
# A conversation to check the exported template with: ours with <image> in the text,
# transformers' with an image part (the form its processors take).
_QUESTION, _ANSWER, _FOLLOW_UP = "What is in the picture?", "A red circle.", "And its size?"
_PROBE = [{"role": "user", "content": f"{IMAGE_MARKER}\n{_QUESTION}"}, {"role": "assistant", "content": _ANSWER},
          {"role": "user", "content": _FOLLOW_UP}]


def chat_template(assistant: Assistant) -> str:
    """The assistant's conversation template as a transformers chat template (Jinja)."""
    template = get_template(assistant.template)
    if assistant.system is not None:   # the assistant's own system prompt replaces the template's
        template = dataclasses.replace(template, system=assistant.system)
    bos = template.bos and assistant.tokenizer.bos_token is not None
    return _JINJA_PRELUDE + ("{{- bos_token -}}\n" if bos else "") + template.to_jinja()


def image_processor(processor: ImageProcessor):
    """transformers' image processor that preprocesses as ``processor`` does (PIL backend)."""
    common = dict(image_mean=list(processor.mean), image_std=list(processor.std), resample=PILImageResampling.BICUBIC,
                  do_convert_rgb=True, crop_size={"height": processor.size, "width": processor.size})
    if processor.mode == "anyres":
        # base view squashed to one tile, then the tiles of the best canvas (minillava.anyres)
        return LlavaNextImageProcessorPil(size={"shortest_edge": processor.size}, do_pad=True,
                                          image_grid_pinpoints=[list(p) for p in processor.pinpoints], **common)
    # "pad": pad to a square with the mean colour, then resize; "resize": squash to the square
    return LlavaImageProcessorPil(do_pad=processor.mode == "pad", size={"height": processor.size, "width": processor.size},
                                  do_center_crop=False, **common)


def hf_processor(assistant: Assistant, hf_config) -> LlavaProcessor | LlavaNextProcessor:
    """Image processor + tokenizer + chat template, expanding <image> into the model's count."""
    tower = assistant.model.vision_tower
    if assistant.processor.size != tower.image_size:
        raise UserError(f"the assistant's image processor makes {assistant.processor.size} px views but its vision "
                        f"tower takes {tower.image_size} px; re-save the assistant with ImageProcessor(size="
                        f"{tower.image_size})")
    if (assistant.processor.mode == "anyres") != (assistant.model.config.image_mode == "anyres"):
        raise UserError(f"the assistant's image processor mode {assistant.processor.mode!r} does not fit its model's "
                        f"image_mode {assistant.model.config.image_mode!r}; re-save the assistant with matching ones")
    tokenizer = copy.deepcopy(assistant.tokenizer)   # the assistant's own stays as it was
    if tokenizer.convert_tokens_to_ids(IMAGE_MARKER) != assistant.model.config.image_token_id:
        raise UserError(f"the tokenizer's {IMAGE_MARKER} id differs from the model's image_token_id "
                        f"{assistant.model.config.image_token_id}; re-save the assistant with its own tokenizer")
    if tokenizer.pad_token is None:   # LLaMA's has none: pad with the id the model pads with
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(assistant.model.config.pad_token_id)
    # Batched generation pads on the left. save_pretrained writes the tokenizer's init arguments,
    # not its attributes: set both, so the folder's tokenizer pads on the left too.
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    template = chat_template(assistant)
    tokenizer.chat_template = template
    cls = LlavaNextProcessor if assistant.model.config.image_mode == "anyres" else LlavaProcessor
    return cls(image_processor=image_processor(assistant.processor), tokenizer=tokenizer, patch_size=tower.patch_size,
               vision_feature_select_strategy=hf_config.vision_feature_select_strategy,
               num_additional_image_tokens=int(tower.has_cls), chat_template=template, image_token=IMAGE_MARKER)


def generation_config(assistant: Assistant) -> GenerationConfig:
    """Greedy, up to the assistant's answer length, stopping at its end-of-turn token."""
    tokenizer = assistant.tokenizer
    marker_id = tokenizer.convert_tokens_to_ids(assistant._end_marker())
    single = marker_id is not None and marker_id != tokenizer.unk_token_id
    # A marker of several tokens (plain's "\n") needs stop strings, which transformers' generate
    # takes only with the tokenizer passed in: there it stops at the tokenizer's EOS.
    return GenerationConfig(do_sample=False, max_new_tokens=assistant.max_new_tokens,
                            eos_token_id=marker_id if single else tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id, pad_token_id=assistant.model.config.pad_token_id)


def check_prompt(assistant: Assistant, processor) -> None:
    """Raise unless the exported processor prompts as the assistant does: the same ids, and
    as many <image> tokens as the model puts features there (checked on a probe conversation)."""
    turns = 1 if assistant.template == "plain" else 3   # plain: one caption turn, no follow-up
    image = Image.new("RGB", (2 * assistant.processor.size, assistant.processor.size), (200, 30, 30))
    theirs = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": _QUESTION}]},
              {"role": "assistant", "content": [{"type": "text", "text": _ANSWER}]},
              {"role": "user", "content": [{"type": "text", "text": _FOLLOW_UP}]}][:turns]
    ids = processor.apply_chat_template(theirs, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"][0]
    image_id = assistant.model.config.image_token_id
    # transformers writes one <image> per feature; ours one per image: collapse the run
    collapsed = [t for i, t in enumerate(ids) if t != image_id or i == 0 or ids[i - 1] != image_id]
    ours = assistant.prompt_ids(_PROBE[:turns])
    if collapsed != ours or ids.count(image_id) != assistant.image_tokens(image):
        raise UserError(f"the exported processor prompts differently from the assistant ({len(collapsed)} vs "
                        f"{len(ours)} ids, {ids.count(image_id)} vs {assistant.image_tokens(image)} image tokens) "
                        f"with template {assistant.template!r} and {type(assistant.tokenizer).__name__}; "
                        "it cannot be exported as is")


def export(assistant: Assistant, folder: str | Path) -> Path:
    """Write ``assistant`` as a transformers-native folder (model, processor, generation config)."""
    hf = to_hf(assistant.model)   # on the CPU, wherever the assistant's model is
    processor = hf_processor(assistant, hf.config)
    check_prompt(assistant, processor)
    hf.generation_config = generation_config(assistant)
    folder = Path(folder)
    hf.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
