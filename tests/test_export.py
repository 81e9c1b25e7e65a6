"""`minillava export`: a saved assistant as a transformers-native folder, checked against the assistant.

Three assistants on ViT-style towers (transformers' LLaVA cannot hold a convolutional one):
the toy world's (a tiny CLIP tower + the shipped toy-lm and its tokenizer, vicuna_v1), its
LLaVA-NeXT form (AnyRes), and tiny "real backbone" pairs (a SigLIP or CLIP tower with a
Qwen2 or Llama LM, ChatML or Llama-3 template, trained tokenizers). Each is exported, loaded
back by AutoProcessor and AutoModelForImageTextToText from the folder alone, and must give
the assistant's greedy tokens for the same image and question, from the same pixels and
the same prompt ids.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import (AutoModelForImageTextToText, AutoProcessor, CLIPVisionConfig, CLIPVisionModel,
                          LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration,
                          LlavaNextForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig,
                          SiglipVisionModel)

from minillava import MiniLlava, MiniLlavaConfig
from minillava.backbones.zoo import pretrained_model, tiny_backbones
from minillava.chat import Assistant, load_assistant, save_assistant
from minillava.cli import main
from minillava.conversation import IMAGE_MARKER, TEMPLATES
from minillava.errors import UserError
from minillava.export import chat_template, export, image_processor
from minillava.image import ImageProcessor
from minillava.interop import to_hf

from test_conversation import sample_corpus
from tiny_tokenizer import well_behaved

QUESTIONS = ["Describe the image.", "What colour is the circle?", "How many shapes are there?", "Is there a cat?"]
SIZES = [(32, 32), (20, 45), (57, 30), (96, 40)]   # (height, width): square, wide, tall, very tall
NEW_TOKENS = 10


def picture(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny CLIP vision tower saved as a backbone folder (zoo.load reads it like a hub checkpoint)."""
    tower, _ = tiny_backbones("clip", image_size=32, patch_size=8, hidden_size=32)
    folder = tmp_path_factory.mktemp("clip")
    tower.save_pretrained(folder)
    return folder


def toy_assistant(clip_folder, image_mode):
    """The toy world's assistant on a CLIP-architecture tower: toy-lm, its tokenizer, vicuna_v1."""
    torch.manual_seed(0)   # the fresh projector (and AnyRes' image_newline)
    model, tokenizer = pretrained_model(str(clip_folder), "toy-lm")
    if image_mode == "anyres":
        config = MiniLlavaConfig(**{**vars(model.config), "image_mode": "anyres"})
        model = MiniLlava(config, model.vision_tower.model, model.language_model).eval()
    return Assistant(model, tokenizer, ImageProcessor(image_mode, 32), max_new_tokens=NEW_TOKENS)


def real_pair_assistant(kind):
    """A tiny real-backbone pair: SigLIP (no CLS) + Qwen2 with ChatML, or CLIP (CLS kept) + Llama with Llama-3."""
    torch.manual_seed(1)
    tokenizer = well_behaved(sample_corpus())
    lm_size = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    tower_size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
    if kind == "siglip-qwen2":
        tower, lm = SiglipVisionModel(SiglipVisionConfig(**tower_size)), Qwen2ForCausalLM(Qwen2Config(**lm_size))
        template, select, mode = "chatml", "patch", "resize"
    else:
        tower, lm = CLIPVisionModel(CLIPVisionConfig(**tower_size)), LlamaForCausalLM(LlamaConfig(**lm_size))
        template, select, mode = "llama_3", "cls_patch", "pad"
    config = MiniLlavaConfig(image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_MARKER), vision_feature_select=select,
                             pad_token_id=tokenizer.pad_token_id)
    model = MiniLlava(config, tower.eval(), lm.eval()).eval()
    return Assistant(model, tokenizer, ImageProcessor(mode, 32), template=template, max_new_tokens=NEW_TOKENS)


def our_tokens(assistant, images, questions):
    """The assistant's greedy tokens for a batch of (image, question), as its chat generates them."""
    rows = [assistant.prompt_ids([{"role": "user", "content": f"{IMAGE_MARKER}\n{q}"}]) for q in questions]
    inputs = assistant._generation_inputs(rows, images)
    return assistant.model.generate(**inputs, max_new_tokens=NEW_TOKENS).tolist()


def their_tokens(processor, model, images, questions):
    """transformers' greedy tokens, from its own chat template and processor."""
    conversations = [[{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": q}]}]
                     for image, q in zip(images, questions)]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt", processor_kwargs={"padding": True})
    new = model.generate(**inputs)[:, inputs["input_ids"].shape[1]:]
    return inputs, new.tolist()


def strip(rows, pad):
    # a finished answer is filled with pad ids, as many as the batch's longest answer needs
    return [[t for t in r if t != pad] for r in rows]


@pytest.mark.parametrize("case", ["toy-clip", "toy-clip-anyres", "siglip-qwen2", "clip-llama3"])
def test_exported_folder_loads_offline_and_answers_with_the_same_tokens(case, clip_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assistant = (toy_assistant(clip_folder, "anyres" if case.endswith("anyres") else "pad") if case.startswith("toy")
                 else real_pair_assistant(case))
    export(assistant, tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    anyres = case.endswith("anyres")
    assert type(model) is (LlavaNextForConditionalGeneration if anyres else LlavaForConditionalGeneration)
    images = [picture(h, w, seed) for seed, (h, w) in enumerate(SIZES)]

    equal = 0
    for image, question in zip(images, QUESTIONS):   # one at a time: the answers must be the very same tokens
        inputs, theirs = their_tokens(processor, model, [image], [question])
        ours = our_tokens(assistant, [image], [question])
        assert torch.equal(inputs["pixel_values"], assistant.processor([image])["pixel_values"])
        assert (inputs["input_ids"] == assistant.model.config.image_token_id).sum() == assistant.image_tokens(image)
        equal += ours == theirs
    assert equal == len(images), f"{case}: {equal} of {len(images)} answers equal"

    # and in one left-padded batch, as both generate for many conversations at once
    pad = assistant.model.config.pad_token_id
    _, theirs = their_tokens(processor, model, images, QUESTIONS)
    assert strip(theirs, pad) == strip(our_tokens(assistant, images, QUESTIONS), pad)
    assert len({tuple(t) for t in theirs}) > 1   # the answers really differ with the picture


def test_the_toy_assistant_answers_in_words_and_stops_where_it_does(clip_folder, tmp_path):
    # The trained toy-lm answers in fluent toy English: the exported model ends the answer at
    # the template's end-of-turn token (</s>), as the assistant does, and the text is the same.
    assistant = toy_assistant(clip_folder, "pad")
    assistant.max_new_tokens = 32   # room to finish the answer (the export's generation config takes it)
    export(assistant, tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    image = picture(40, 50)
    _, (theirs,) = their_tokens(processor, model, [image], [QUESTIONS[0]])
    assert theirs[-1] == model.generation_config.eos_token_id == assistant.tokenizer.convert_tokens_to_ids("</s>")
    assert processor.decode(theirs, skip_special_tokens=True).strip() == assistant.ask(image, QUESTIONS[0])


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(["pad", "resize", "anyres"]), height=st.integers(1, 120), width=st.integers(1, 120))
def test_the_exported_image_processor_gives_our_pixels_exactly(mode, height, width):
    ours = ImageProcessor(mode, 32)
    image = picture(height, width, seed=height * 1000 + width)
    want = ours([image])
    got = image_processor(ours)(images=[image], return_tensors="pt")
    assert torch.equal(got["pixel_values"], want["pixel_values"])
    if mode == "anyres":
        assert torch.equal(got["image_sizes"], want["image_sizes"])


CONVERSATIONS = {
    "one question": [{"role": "user", "content": f"{IMAGE_MARKER}\nWhat is this?"}],
    "no image": [{"role": "user", "content": "Hello there."}],
    "marker after the text": [{"role": "user", "content": f"What is this? {IMAGE_MARKER}"}],
    "two turns": [{"role": "user", "content": f"{IMAGE_MARKER}\nWhat is this?"},
                  {"role": "assistant", "content": "A red circle."}, {"role": "user", "content": "How big?"}],
    "image in the second turn": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                                 {"role": "user", "content": f"{IMAGE_MARKER}\nAnd this?"}],
    "system message": [{"role": "system", "content": "Answer briefly."},
                       {"role": "user", "content": f"{IMAGE_MARKER}\nWhat is this?"}],
}


def multimodal(messages):
    """The same conversation in transformers' form: content as typed parts, images as image parts."""
    def parts(text):
        pieces = text.split(IMAGE_MARKER)
        out = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
        for piece in pieces[1:]:
            out += [{"type": "image"}] + ([{"type": "text", "text": piece}] if piece else [])
        return out
    return [{"role": m["role"], "content": parts(m["content"])} for m in messages]


@pytest.fixture(scope="module")
def tok():
    return well_behaved(sample_corpus())


@pytest.mark.parametrize("template, system", [(t, s) for t in sorted(TEMPLATES) for s in (None, "", "Be brief.")
                                              if not s or TEMPLATES[t].system_format])   # plain has no system prompt
def test_the_chat_template_gives_our_prompt_ids(template, system, tok):
    assistant = Assistant(None, tok, None, template=template, system=system)
    jinja, checked = chat_template(assistant), 0
    for name, messages in CONVERSATIONS.items():
        if template == "plain" and len(messages) > 1:   # plain is one caption turn
            continue
        if name == "system message" and (system is not None or not TEMPLATES[template].system_format):
            continue   # refused by our templates (a system prompt given twice, or none allowed)
        ours = assistant.prompt_ids(messages)
        for form in (messages, multimodal(messages)):
            theirs = tok.apply_chat_template(form, chat_template=jinja, add_generation_prompt=True,
                                             tokenize=True)["input_ids"]
            assert theirs == ours, (name, tok.decode(theirs), tok.decode(ours))
        checked += 1
    assert checked >= (1 if template == "plain" else 4)


def test_a_folder_that_would_prompt_differently_is_never_written(clip_folder, tmp_path, monkeypatch):
    assistant = toy_assistant(clip_folder, "pad")
    no_bos = chat_template(assistant).replace("{{- bos_token -}}", "")
    monkeypatch.setattr("minillava.export.chat_template", lambda assistant: no_bos)   # BOS left out
    with pytest.raises(UserError, match=r"prompts differently from the assistant \((\d+) vs (?!\1)\d+ ids"):
        export(assistant, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_convolutional_tower_is_a_one_line_error():
    model, _ = pretrained_model()   # the shipped toy assistant's RegNet tower
    with pytest.raises(UserError, match="reads a ViT's sequence of hidden states; .* convolutional regnet") as err:
        to_hf(model)
    assert "\n" not in str(err.value)


def test_to_hf_keeps_the_dtype_and_gives_a_cpu_model_of_its_own():
    model = MiniLlava(MiniLlavaConfig(image_token_id=99), *tiny_backbones()).to(torch.bfloat16)
    hf = to_hf(model)
    assert hf.dtype == torch.bfloat16 and hf.device.type == "cpu"
    with torch.no_grad():
        hf.lm_head.weight.zero_()   # a copy, not the same storage
    assert model.language_model.lm_head.weight.abs().sum() > 0


def test_the_command_writes_a_folder_transformers_loads(clip_folder, tmp_path, capsys):
    assistant = save_assistant(toy_assistant(clip_folder, "pad"), tmp_path / "assistant")
    main(["export", str(assistant), str(tmp_path / "hf")])
    assert f"wrote {tmp_path / 'hf'}" in capsys.readouterr().out
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path / "hf"), LlavaForConditionalGeneration)
    assert AutoProcessor.from_pretrained(tmp_path / "hf").chat_template == chat_template(load_assistant(assistant))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:   # never over a folder that holds something
        main(["export", str(assistant), str(assistant)])
    assert exit.value.code == 2
    assert capsys.readouterr().err.startswith(f"minillava export: {assistant} exists and is not an empty folder")
