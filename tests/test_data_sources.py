"""Data in, at scale: every kind of data source, lazy samples equal to eager ones, skips that stop a run.

The layout is LLaVA's own (its README): stage-1 images under LLaVA-Pretrain/images, stage-2
images under playground/data/{coco,gqa,ocr_vqa}/..., each stage's records relative to its own
folder. Nothing here touches the network.
"""

import contextlib
import copy
import dataclasses
import functools
import io
import json
import re
import subprocess
import sys

import datasets
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from minillava.cli import main
from minillava.data.batching import batch_schedule, collate
from minillava.data.dataset import InstructionDataset, LazyInstructionDataset, TooManySkipped
from minillava.data import sources
from minillava.data.sources import DataError, JsonRecords, open_source, source_kind
from minillava.image import ImageProcessor
from minillava.toyworld import make_scene, render
from test_labels_vs_llava import load_llava
from tiny_tokenizer import well_behaved

PROCESSOR = ImageProcessor(mode="pad", size=32)
STAGE2_FOLDERS = ("coco/train2017", "gqa/images", "ocr_vqa/images")


def one_image(image):
    return PROCESSOR([image])["pixel_values"][0]


def turns(*values, first="human"):
    roles = ("human", "gpt") if first == "human" else ("gpt", "human")
    return [{"from": roles[i % 2], "value": v} for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def tok():
    corpus = [c for seed in range(10) for c in make_scene(seed).captions()]
    tok = well_behaved(corpus + ["USER: ASSISTANT: What is in the image? Describe the image. Hello! </s>"] * 3)
    tok.model_max_length = 2048   # LLaVA's preprocessing truncates to it
    return tok


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """LLaVA's folders with tiny images: 4 stage-1 captions, 8 stage-2 records over three folders."""
    root = tmp_path_factory.mktemp("llava")
    pretrain, playground = root / "LLaVA-Pretrain" / "images", root / "playground" / "data"
    stage1, stage2 = [], []
    for seed in range(4):
        name = f"{seed:05d}/{seed:09d}.jpg"
        (pretrain / name).parent.mkdir(parents=True, exist_ok=True)
        render(make_scene(seed), 16, 16).save(pretrain / name)
        stage1.append({"id": f"c{seed}", "image": name,
                       "conversations": turns("<image>\nDescribe the image briefly.", make_scene(seed).captions()[0])})
    for seed in range(6):
        name = f"{STAGE2_FOLDERS[seed % 3]}/{seed:012d}.jpg"
        (playground / name).parent.mkdir(parents=True, exist_ok=True)
        render(make_scene(seed), 16, 16).save(playground / name)
        stage2.append({"id": f"q{seed}", "image": name, "conversations": turns("<image>\nWhat is in the image?",
                                                                              make_scene(seed).captions()[0])})
    stage2.append({"id": "chat", "conversations": turns("Hello!", "Hello! What is in the image?")})
    # ShareGPT records of the 665K mixture may open with a gpt turn: LLaVA drops it, so do we.
    stage2.append({"id": "gpt-first", "conversations": turns("Hello!", "Describe the image.", "A red circle.",
                                                             first="gpt")})
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(stage1, indent=2))
    (playground / "llava_v1_5_mix665k.json").write_text(json.dumps(stage2))
    return root


def lazy(records, tok, template="vicuna_v1", **options):
    return LazyInstructionDataset(records, tok, template, one_image, tokens_per_image=16, **options)


def read_all(dataset, batch_size=3, num_workers=0):
    """Every item through a DataLoader with our collate: (samples used, skipped pairs)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=functools.partial(collate, pad_token_id=0))
    used, skipped = 0, []
    for batch in loader:
        skipped += batch.pop("skipped", [])
        used += len(batch.get("input_ids", []))
    return used, skipped


# ---------------------------------------------------------------- sources and stage folders

def test_each_stage_uses_all_its_records_from_its_own_image_folder(llava, tok):
    """The issue's layout: one folder for both stages lost every record of one stage; two folders lose none."""
    stage1 = lazy(open_source(str(llava / "blip_laion_cc_sbu_558k.json")), tok, "plain",
                  image_folder=llava / "LLaVA-Pretrain" / "images")
    stage2 = lazy(open_source(str(llava / "playground/data/llava_v1_5_mix665k.json")), tok,
                  image_folder=llava / "playground" / "data")
    assert read_all(stage1) == (4, []) and read_all(stage2) == (8, [])
    wrong = lazy(open_source(str(llava / "playground/data/llava_v1_5_mix665k.json")), tok,
                 image_folder=llava / "LLaVA-Pretrain" / "images")   # stage 1's folder for stage 2
    used, skipped = read_all(wrong)
    assert used == 2 and [reason for reason, _ in skipped] == ["missing image file"] * 6


def test_the_pipeline_gives_each_stage_its_folder(llava, tok, tmp_path):
    from minillava.pipeline import make_config
    from minillava.pipeline.steps import datasets as pipeline_datasets

    config = make_config({"stage1_data": str(llava / "blip_laion_cc_sbu_558k.json"),
                          "stage1_image_folder": str(llava / "LLaVA-Pretrain" / "images"),
                          "data": str(llava / "playground/data/llava_v1_5_mix665k.json"),
                          "image_folder": str(llava / "playground" / "data")})
    stage1, stage2, table = pipeline_datasets(config, tmp_path, 0, tok, PROCESSOR, 16, progress=False)
    assert read_all(stage1) == (4, []) and read_all(stage2) == (8, [])
    assert table[0]["source"] == "llava_v1_5_mix665k.json" and table[0]["records"] == 8
    assert not (tmp_path / "data").exists()   # no toy data made


def test_a_leading_gpt_turn_is_dropped_as_llava_drops_it(llava, tok):
    records = open_source(str(llava / "playground/data/llava_v1_5_mix665k.json"))
    record = records[7]
    assert record["id"] == "gpt-first" and record["conversations"][0]["from"] == "gpt"
    sample = lazy(records, tok)[7]
    assert "skip" not in sample
    # LLaVA's own preprocessing (llava-torch's preprocess_v1) of the same record: the same tokens.
    llava_train, conversation_lib = load_llava()
    conversation_lib.default_conversation = conversation_lib.conv_templates["vicuna_v1"]
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = llava_train.preprocess([copy.deepcopy(record["conversations"])], tok, has_image=False)
    # (this tokenizer adds no BOS of its own, as Llama's does; the template adds it)
    assert sample["input_ids"] == [tok.bos_token_id] + theirs["input_ids"][0].tolist()
    assert tok.decode(sample["input_ids"]).count("USER:") == 1   # the human turn, once: the gpt turn is gone


def test_json_jsonl_datasets_folder_and_parquet_give_the_same_records(llava, tok, tmp_path):
    records = json.loads((llava / "playground/data/llava_v1_5_mix665k.json").read_text())
    (tmp_path / "mix.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    rows = [{**r, "image": r.get("image")} for r in records]   # one schema: text-only rows have image None
    table = datasets.Dataset.from_list(rows)
    table.save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"train": table}).save_to_disk(str(tmp_path / "dict"))
    table.to_parquet(str(tmp_path / "mix.parquet"))
    kinds = {"json": llava / "playground/data/llava_v1_5_mix665k.json", "jsonl": tmp_path / "mix.jsonl",
             "datasets": tmp_path / "folder", "parquet": tmp_path / "mix.parquet"}
    reference = None
    for kind, path in [*kinds.items(), ("datasets", tmp_path / "dict")]:
        assert source_kind(str(path)) == kind
        source = open_source(str(path))
        assert len(source) == len(records) and [source[i]["id"] for i in range(len(source))] == [r["id"] for r in records]
        data = lazy(source, tok, image_folder=llava / "playground" / "data")
        items = [data[i] for i in range(len(data))]
        if reference is None:
            reference = (data.lengths.tolist(), data.has_image.tolist(), items)
        assert (data.lengths.tolist(), data.has_image.tolist()) == reference[:2]
        for a, b in zip(items, reference[2]):
            assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
            assert (a["pixel_values"] is None) == (b["pixel_values"] is None)
            assert a["pixel_values"] is None or torch.equal(a["pixel_values"], b["pixel_values"])


def test_a_datasets_folder_with_embedded_images_stays_encoded_until_read(tmp_path, tok):
    """Images stored in the table (Image feature): read when a record is, never all at once."""
    image = render(make_scene(3), 16, 16)
    rows = {"id": ["a", "b"], "image": [image, None],
            "conversations": [turns("<image>\nDescribe the image.", "A red circle."), turns("Hello!", "Hello!")]}
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": datasets.List({"from": datasets.Value("string"),
                                                                  "value": datasets.Value("string")})})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "embedded"))
    source = open_source(str(tmp_path / "embedded"))
    assert source.images.tolist() == [1, 0] and isinstance(source[0]["image"]["bytes"], bytes)
    item = lazy(source, tok)[0]
    assert torch.equal(item["pixel_values"][0], one_image(image))


def test_a_hub_id_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"^no file or folder at liuhaotian/LLaVA-Instruct-150K, and as a hub id it "
                                        r"cannot be reached"):
        source_kind("liuhaotian/LLaVA-Instruct-150K")


@pytest.mark.parametrize("text, suffix, message", [
    ('[{"id": "a", "conversations": []},\n {"id": "b", "conversations": [}]', ".json",
     r"bad\.json: not valid JSON at line 2, column 32 \(record 2\): Expecting value; fix or remove that record"),
    ('{"id": "a", "conversations": []}\n{"id": "b" "conversations": []}\n', ".jsonl",
     r"bad\.jsonl: not valid JSON at line 2, column 12 \(Expecting ',' delimiter\)"),
    ('{"questions": []}', ".json", r"bad\.json does not hold a JSON list of LLaVA records \(it starts with "
                                   r"'\{\"questions\": \[\]\}'\)"),
    ('', ".json", r"bad\.json does not hold a JSON list of LLaVA records \(it starts with ''\)"),
    ('[{"question_id": 1, "question": "What?"}]', ".json", r"none of its first records has a 'conversations' list"),
    ('[]', ".json", "holds no records"),
    ('[{"id": "a", "conversations": []}', ".json", r"the list is not closed with \]"),
])
def test_malformed_files_are_one_line_errors_with_the_position(tmp_path, text, suffix, message):
    (tmp_path / f"bad{suffix}").write_text(text)
    with pytest.raises(DataError, match=message) as raised:
        open_source(str(tmp_path / f"bad{suffix}"))
    assert "\n" not in str(raised.value)


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path, capsys, monkeypatch):
    """Bad data stops `minillava pipeline` before any model loads: one line on stderr, no traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "bad.json").write_text('[{"id": "a", "conversations": [{"from": "human", "value": "hi"}]},,]')   # ,,
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    cases = {str(tmp_path / "bad.json"): r"bad\.json: not valid JSON at line 1, column 67 \(record 2\): Expecting value",
             str(tmp_path / "nope.json"): r"data: no file at .*nope\.json; give a LLaVA JSON/JSONL file",
             str(tmp_path / "notes.txt"): r"notes\.txt is neither \.json, \.jsonl nor \.parquet",
             str(tmp_path / "folder"): r"is a folder but not a `datasets` folder",
             "owner/dataset": r"no file or folder at owner/dataset, and as a hub id it cannot be reached"}
    argv = ["pipeline", "--out", str(tmp_path / "out"), "--stage1-steps", "1", "--stage2-steps", "1", "--scenes", "2"]
    for data, message in cases.items():
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--data", data])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and re.fullmatch(f"minillava pipeline: .*{message}.*\n", err), (data, err)
    done = subprocess.run([sys.executable, "-m", "minillava.cli", *argv, "--data", str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=120)   # as a user runs it
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "data").exists()   # stopped before any toy data was made


# ---------------------------------------------------------------- lazy = eager, skips, scale

@pytest.fixture
def mixed(tmp_path):
    """Records of every kind a dataset meets: good, text-only, AnyRes-free bad ones of each reason."""
    for seed in (1, 2):
        render(make_scene(seed)).save(tmp_path / f"{seed}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path, [
        {"id": "ok", "image": "1.png", "conversations": turns("<image>\nDescribe the image.", "A red circle.")},
        {"id": "text", "conversations": turns("What is in the image?", "A shape.")},
        {"id": "missing", "image": "nope.png", "conversations": turns("<image>\nDescribe.", "x")},
        {"id": "corrupt", "image": "broken.png", "conversations": turns("<image>\nDescribe.", "x")},
        {"id": "nolist"},
        {"id": "markers", "image": "2.png", "conversations": turns("Describe the image.", "A circle.")},
        {"id": "two", "image": "2.png", "conversations": turns("<image>\nWhat is it?", "A circle.", "And?", "Blue.")},
    ]


def test_lazy_samples_equal_the_eager_ones_and_bad_records_become_markers(mixed, tok):
    folder, records = mixed
    eager = InstructionDataset(records, tok, "vicuna_v1", one_image, image_folder=folder, tokens_per_image=16)
    lazy_data = lazy(records, tok, image_folder=folder)
    assert len(lazy_data) == len(records) and len(eager) == 3
    items = [lazy_data[i] for i in range(len(records))]
    kept = [item for item in items if "skip" not in item]
    assert len(kept) == len(eager)
    for a, b in zip(kept, (eager[i] for i in range(len(eager)))):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
        assert (a["pixel_values"] is None and b["pixel_values"] is None) or torch.equal(a["pixel_values"],
                                                                                        b["pixel_values"])
    assert {item["id"]: item["skip"] for item in items if "skip" in item} == {
        "missing": "missing image file", "corrupt": "corrupt image file",
        "nolist": "malformed record: no 'conversations' list", "markers": "image count differs from <image> markers"}
    # The same reasons as the eager dataset's report, counted as the batches arrive.
    batch = collate(items, pad_token_id=0)
    assert batch["input_ids"].shape[0] == 3 and len(batch["skipped"]) == 4
    lazy_data.report.record_batch(kept=3, skipped=batch["skipped"])
    assert lazy_data.report.reasons == eager.report.reasons and lazy_data.report.kept == eager.report.kept
    assert collate([items[2]], pad_token_id=0) == {"skipped": [("missing image file", "missing")]}
    assert "skipped" not in collate(kept, pad_token_id=0)   # `model(**collate(samples))` keeps working


def test_lengths_are_llava_estimates_words_plus_image_tokens(mixed, tok):
    folder, records = mixed
    data = lazy(records, tok, image_folder=folder)
    # words of "<image>\nDescribe the image." + "A red circle." + 16 image positions; a text-only record's words
    assert data.lengths.tolist()[:2] == [4 + 3 + 16, 5 + 2]
    assert data.has_image.tolist() == [True, False, True, True, False, True, True]
    batches = batch_schedule(len(data), 2, 0, 0, data.lengths, data.has_image)
    assert all(len({bool(data.has_image[i]) for i in b}) == 1 for b in batches)   # modalities kept apart
    assert sorted(i for b in batches for i in b) == list(range(len(data)))


def test_too_many_skips_stop_with_the_reasons_and_counts(llava, tok):
    stage2 = lazy(open_source(str(llava / "playground/data/llava_v1_5_mix665k.json")), tok,
                  image_folder=llava / "LLaVA-Pretrain" / "images", name="stage 2 (mix665k)")
    report = stage2.report
    loader = torch.utils.data.DataLoader(stage2, batch_size=2, collate_fn=functools.partial(collate, pad_token_id=0))
    with pytest.raises(TooManySkipped) as stopped:
        for batch in loader:
            report.record_batch(kept=len(batch.get("input_ids", [])), skipped=batch.pop("skipped", []))
            report.check()
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("stage 2 (mix665k): 4 of the 4 records read were skipped (100%, "
                                                      "more than --max-skip-ratio 0.05): missing image file: 4 (e.g. ")
    assert f"image paths are resolved in {llava / 'LLaVA-Pretrain' / 'images'}" in message
    assert "| skipped: missing image file | 4 |" in stopped.value.table   # 2 skips were too few to judge


def test_a_few_skips_within_the_ratio_go_on(tok, mixed):
    folder, records = mixed
    data = lazy([records[0]] * 60 + [records[2]] * 3, tok, image_folder=folder)
    data.report.record_batch(kept=60, skipped=[("missing image file", "missing")] * 3)
    data.report.check()   # 3 of 63: under 5%
    data.report.record_batch(kept=0, skipped=[("missing image file", "missing")])
    with pytest.raises(TooManySkipped):   # 4 of 64 is 6%
        data.report.check()
    small = lazy(records[:3], tok, image_folder=folder)
    small.report.record_batch(kept=2, skipped=[("missing image file", "missing")])
    small.report.check()   # 1 of 3: too few skips to judge the data by
    strict = lazy(records[:3], tok, image_folder=folder, max_skip_ratio=0.0)
    strict.report.record_batch(kept=2, skipped=[("missing image file", "missing")])
    with pytest.raises(TooManySkipped):   # none allowed: the first one stops
        strict.report.check()


def test_workers_give_the_same_batches_as_the_main_process(llava, tok):
    data = lazy(open_source(str(llava / "playground/data/llava_v1_5_mix665k.json")), tok,
                image_folder=llava / "playground" / "data")
    order = batch_schedule(len(data), 3, 0, 0, data.lengths, data.has_image)
    batches = {}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(data, batch_sampler=order, num_workers=workers,
                                             collate_fn=functools.partial(collate, pad_token_id=0))
        batches[workers] = list(loader)
    for a, b in zip(batches[0], batches[2]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if a[k] is not None)


def test_a_jsonl_index_costs_bytes_per_record_not_the_record(tmp_path):
    record = {"id": "x", "image": "a.png", "conversations": turns("<image>\nDescribe the image.", "A circle. " * 50)}
    (tmp_path / "big.jsonl").write_text("\n".join(json.dumps({**record, "id": str(i)}) for i in range(2000)))
    source = JsonRecords(tmp_path / "big.jsonl")
    index_bytes = sum(a.nbytes for a in (source.offsets, source.sizes, source.words, source.images))
    assert index_bytes / len(source) == 18 and source.offsets.base is None and source[1234]["id"] == "1234"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=12), indent=st.sampled_from([None, 1, 2]),
       chunk=st.integers(1, 90), bad=st.booleans())
def test_a_json_list_is_indexed_exactly_whatever_the_chunks(tmp_path, monkeypatch, texts, indent, chunk, bad):
    """Records cut across decoding chunks, non-ASCII text (bytes are not characters), any layout:
    every record reads back as json.load reads it, and a malformed one is placed as json.loads places it."""
    monkeypatch.setattr(sources, "CHUNK", chunk)
    monkeypatch.setattr(sources, "MAX_RECORD", 2000)   # records here are < 1000 characters
    records = [{"id": i, "image": "a.png" if i % 2 else None, "conversations": turns(f"<image>\n{t}", t[::-1])}
               for i, t in enumerate(texts)]
    text = json.dumps(records, indent=indent, ensure_ascii=False)
    path = tmp_path / "mix.json"
    if bad:   # the last record's closing brace lost
        text = text[:text.rindex("}")] + text[text.rindex("}") + 1:]
        path.write_text(text, encoding="utf-8")
        with pytest.raises(json.JSONDecodeError) as reference:
            json.loads(text)
        with pytest.raises(DataError, match=f"line {reference.value.lineno}, column {reference.value.colno} "):
            JsonRecords(path)
        return
    path.write_text(text, encoding="utf-8")
    source = JsonRecords(path)
    assert [source[i] for i in range(len(source))] == records
    assert source.words.tolist() == [sum(len(t["value"].split()) for t in r["conversations"]) for r in records]


# ---------------------------------------------------------------- through the trainer

def test_lazy_data_trains_resumes_exactly_and_reads_alike_in_workers(llava, tok, tmp_path):
    """train() over a lazy source with a bad record in it: killed and resumed, or read by two worker
    processes, the weights end bitwise equal; the bad record is counted, not trained on."""
    from minillava.backbones.zoo import tiny_backbones
    from minillava.model import MiniLlava, MiniLlavaConfig
    from minillava.train import STAGE2, train

    records = json.loads((llava / "playground/data/llava_v1_5_mix665k.json").read_text())
    records.append({"id": "lost", "image": "coco/train2017/gone.jpg",
                    "conversations": turns("<image>\nWhat is it?", "A red circle.")})
    (tmp_path / "mix.json").write_text(json.dumps(records))
    stage = dataclasses.replace(STAGE2, lr=1e-3, batch_size=4, max_steps=4, save_every=2)

    def run(out, **kwargs):
        torch.manual_seed(0)
        tower, lm = tiny_backbones(vocab_size=len(tok))
        model = MiniLlava(MiniLlavaConfig(image_token_id=tok.convert_tokens_to_ids("<image>"),
                                          pad_token_id=tok.pad_token_id), tower, lm)
        data = LazyInstructionDataset(open_source(str(tmp_path / "mix.json")), tok, "vicuna_v1", one_image,
                                      image_folder=llava / "playground" / "data", tokens_per_image=16)
        workers = kwargs.pop("num_workers", 0)
        train(model, dataclasses.replace(stage, num_workers=workers), data, tmp_path / out, lengths=data.lengths,
              has_image=data.has_image, pad_token_id=tok.pad_token_id, progress=False, **kwargs)
        return model, data.report

    whole, report = run("whole")
    assert set(report.reasons) == {"missing image file"} and report.examples["missing image file"] == ["lost"]
    assert report.kept > 0 and report.seen >= 9   # every record read at least once (and the lost one skipped)
    run("killed", stop_after=3)   # dies after step 3; the newest checkpoint is step 2
    resumed, _ = run("killed")
    in_workers, _ = run("workers", num_workers=2)
    for name, weight in whole.state_dict().items():
        assert torch.equal(weight, resumed.state_dict()[name]) and torch.equal(weight, in_workers.state_dict()[name])
