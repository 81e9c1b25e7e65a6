"""The data path (LLaVA records -> samples, bad ones skipped out loud) and the chat helper."""

import dataclasses
import json

import pytest
import torch

from minillava.backbones.zoo import tiny_backbones
from minillava.chat import Assistant, load_assistant, save_assistant
from minillava.cli import main
from minillava.data.batching import collate
from minillava.data.dataset import InstructionDataset, load_llava_json
from minillava.eval.assistants import as_assistant
from minillava.image import ImageProcessor
from minillava.model import MiniLlava, MiniLlavaConfig
from minillava.toyworld import make_scene, render
from minillava.train import STAGE1, STAGE2, train
from tiny_tokenizer import well_behaved

CORPUS = [c for seed in range(30) for c in make_scene(seed).captions()] + \
         ["USER: ASSISTANT: What is in the image? Describe the image. </s>"] * 5


@pytest.fixture(scope="module")
def tok():
    return well_behaved(CORPUS)


@pytest.fixture(scope="module")
def model(tok):
    tower, lm = tiny_backbones(vocab_size=len(tok))
    config = MiniLlavaConfig(image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    return MiniLlava(config, tower, lm).eval()


PROCESSOR = ImageProcessor(mode="pad", size=32)


def one_image(image):
    return PROCESSOR([image])["pixel_values"][0]


def turns(question, answer):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture
def records(tmp_path):
    for seed in (1, 2):
        render(make_scene(seed)).save(tmp_path / f"{seed}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return [
        {"id": "ok", "image": "1.png", "conversations": turns("<image>\nDescribe the image.", "A red circle.")},
        {"id": "text", "conversations": turns("What is in the image?", "A shape.")},
        {"id": "missing", "image": "nope.png", "conversations": turns("<image>\nDescribe.", "x")},
        {"id": "corrupt", "image": "broken.png", "conversations": turns("<image>\nDescribe.", "x")},
        {"id": "roles", "image": "2.png", "conversations": [{"from": "gpt", "value": "hi"}]},
        {"id": "nolist"},
        {"id": "markers", "image": "2.png", "conversations": turns("Describe the image.", "A circle.")},
    ]


def test_bad_records_are_skipped_with_a_reason_and_counted(tmp_path, records, tok):
    ds = InstructionDataset(records, tok, "vicuna_v1", one_image, image_folder=tmp_path,
                            tokens_per_image=16, max_length=256)
    assert [s["input_ids"] != [] for s in ds.samples] == [True, True] and len(ds) == 2
    report = ds.report
    assert report.kept + report.skipped == len(records)
    assert report.reasons == {
        "missing image file": 1, "corrupt image file": 1, "malformed record: no 'conversations' list": 1,
        "image count differs from <image> markers": 1,
        **{r: 1 for r in report.reasons if r.startswith("malformed conversation")},
    }
    assert "| skipped: corrupt image file | 1 | corrupt |" in report.summary()
    assert ds.lengths[0] == len(ds.samples[0]["input_ids"]) + 15 and ds.has_image == [True, False]


def test_samples_batch_and_train(tmp_path, records, tok, model):
    ds = InstructionDataset(records[:2], tok, "plain", one_image, image_folder=tmp_path, tokens_per_image=16)
    sample = ds[0]
    assert sample["pixel_values"].shape == (1, 3, 32, 32)
    assert sample["input_ids"].count(model.config.image_token_id) == 1
    batch = collate([ds[0], ds[1]], tok.pad_token_id)
    assert batch["pixel_values"].shape[0] == 1
    result = train(model, dataclasses.replace(STAGE1, batch_size=2, max_steps=2), ds, tmp_path / "run",
                   lengths=ds.lengths, has_image=ds.has_image, pad_token_id=tok.pad_token_id, progress=False)
    assert result.steps == 2 and (tmp_path / "run" / "mm_projector.safetensors").exists()


def test_anyres_images_of_different_sizes_flow_from_the_files_to_the_model(tmp_path, tok):
    """AnyRes through the training path: views and original sizes from the dataset, batches
    padded along the views exactly as the processor pads a batch, and a stage that trains."""
    tower, lm = tiny_backbones(vocab_size=len(tok))
    pins = [(32, 32), (32, 64), (64, 32), (64, 64)]
    config = MiniLlavaConfig(image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
                             image_mode="anyres", image_grid_pinpoints=pins)
    model = MiniLlava(config, tower, lm).eval()
    processor = ImageProcessor(mode="anyres", size=32, pinpoints=pins)
    images = {"wide.png": render(make_scene(1), 64, 128), "square.png": render(make_scene(2), 64, 64)}
    for name, image in images.items():
        image.save(tmp_path / name)
    records = [{"id": name, "image": name, "conversations": turns("<image>\nDescribe the image.", "A red circle.")}
               for name in images]
    records.append({"id": "text", "conversations": turns("What is in the image?", "A shape.")})
    ds = InstructionDataset(records, tok, "vicuna_v1", lambda image: processor([image])["pixel_values"][0],
                            image_folder=tmp_path, tokens_per_image=200)
    assert ds[0]["image_sizes"] == [(64, 128)] and ds[0]["pixel_values"].shape == (1, 3, 3, 32, 32)
    assert ds[1]["image_sizes"] == [(64, 64)] and ds[1]["pixel_values"].shape == (1, 5, 3, 32, 32)
    batch = collate([ds[0], ds[2], ds[1]], tok.pad_token_id)
    reference = processor(list(images.values()))
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])
    assert torch.equal(batch["image_sizes"], reference["image_sizes"])
    with torch.no_grad():
        out = model(**batch)
        alone = model(**collate([ds[1]], tok.pad_token_id))
    n = int(alone.attention_mask.sum())   # the square image's sample, batched or alone
    assert torch.allclose(out.logits[2, :n], alone.logits[0, :n], atol=1e-5)
    result = train(model, dataclasses.replace(STAGE2, lr=1e-3, batch_size=2, max_steps=2), ds, tmp_path / "run",
                   lengths=ds.lengths, has_image=ds.has_image, pad_token_id=tok.pad_token_id, progress=False)
    assert result.steps == 2 and result.final_loss == result.final_loss   # finite, not NaN


def test_json_and_jsonl_files_load_alike(tmp_path, records):
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert load_llava_json(tmp_path / "a.json") == load_llava_json(tmp_path / "a.jsonl") == records


def test_max_length_cuts_text_never_an_image_and_drops_samples_left_without_answer(tmp_path, records, tok):
    text = {"id": "t", "conversations": turns("Describe the image. " * 10, "A red circle.")}
    kept = InstructionDataset([text], tok, "vicuna_v1", one_image, tokens_per_image=16, max_length=400)
    cut = InstructionDataset([text], tok, "vicuna_v1", one_image, tokens_per_image=16, max_length=20)
    assert len(kept) == 1 and cut.report.reasons == {"no supervised tokens left": 1}
    huge_image = InstructionDataset(records[:1], tok, "vicuna_v1", one_image, image_folder=tmp_path,
                                    tokens_per_image=500, max_length=256)
    assert huge_image.report.reasons == {"an image would be truncated by max_length": 1}


def test_batched_chat_equals_one_by_one_and_survives_save_load(tmp_path, tok, model):
    assistant = Assistant(model, tok, PROCESSOR, max_new_tokens=6)
    images = [render(make_scene(s)) for s in (1, 2)]
    questions = ["What is in the image?", "Describe the image."]
    alone = [assistant.ask(im, q) for im, q in zip(images, questions)]
    together = assistant.chat([[{"role": "user", "content": f"<image>\n{q}"}] for q in questions], images)
    assert together == alone and all(isinstance(a, str) for a in alone)
    # It is an assistant the evaluation suite takes as it is, batched or one by one.
    assert as_assistant(assistant) is assistant and assistant.name == "assistant"
    assert assistant.answer_batch(images, questions) == [assistant.answer(im, q) for im, q in zip(images, questions)]
    assert assistant.answer_batch(images, questions) == alone
    reloaded = load_assistant(save_assistant(assistant, tmp_path / "assistant"))
    assert [reloaded.ask(im, q) for im, q in zip(images, questions)] == alone
    with pytest.raises(FileNotFoundError, match="save_assistant"):
        load_assistant(tmp_path)


def test_minillava_eval_runs_a_saved_assistant(tmp_path, tok, model, capsys):
    """The CLI loads the folder and answers every task's questions in batches."""
    save_assistant(Assistant(model, tok, PROCESSOR, max_new_tokens=4), tmp_path / "run7")
    main(["eval", "--assistant", str(tmp_path / "run7"), "--tasks", "toy_vqa,pope_random", "--n", "2",
          "--out", str(tmp_path / "eval")])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["config"]["assistant"] == "run7"   # named after its folder
    results = results["results"]
    assert set(results) == {"toy_vqa", "pope_random"}
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(isinstance(s["prediction"], str) for s in samples)  # random weights: any answer
    assert {s["task"] for s in samples} == {"toy_vqa", "pope_random"}
