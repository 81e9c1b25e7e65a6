"""Tests for the data engine offline: contexts, parsing, clean-up, validation, cache, outputs."""

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillava.cli import main
from minillava.data import engine
from minillava.data.batch_api import ingest_batch_results, write_batch_requests
from minillava.data.cache import Cache, request_key
from minillava.data.parse import ParseError, clean_turns, format_blocks, parse_response, to_llava_turns
from minillava.data.prompts import (BRIEF_INSTRUCTIONS, DETAIL_INSTRUCTIONS, KINDS, build_messages, coco_context,
                                    kind_of, parse_toy_context, toy_context)
from minillava.data.teachers import Completion, RuleTeacher, TeacherError
from minillava.data.validate import check, coco_facts, toy_facts
from minillava.toyworld import CATEGORIES, COLORS, NUMBER_WORDS, make_scene


def plural(shape):
    return shape + ("es" if shape.endswith("s") else "s")


# ----------------------------------------------------------------------------
# Symbolic contexts and prompts


def test_toy_context_layout_and_round_trip():
    ann = make_scene(5, "fine").annotation()
    text = toy_context(ann)
    captions, objects = text.split("\n\n")
    assert captions.splitlines() == make_scene(5, "fine").captions()
    for line, o in zip(objects.splitlines(), ann["objects"]):
        assert re.fullmatch(r"[a-z ]+: \[\d\.\d{3}, \d\.\d{3}, \d\.\d{3}, \d\.\d{3}\]", line)
        a = "an" if o["mark"] == "orange" else "a"  # the only vowel-initial colour
        assert line.startswith(f"{o['size']} {o['name']} with {a} {o['mark']} dot: ")
    back = parse_toy_context(text)
    assert [(o["name"], o["size"], o["mark"], o["box"]) for o in back["objects"]] == \
        [(o["name"], o["size"], o["mark"], o["box"]) for o in ann["objects"]]
    assert back["background"] == ann["background"] and back["relations"] == ann["relations"]
    with pytest.raises(ValueError, match="no toy-world scene"):
        parse_toy_context("A dog on a sofa.\n\ndog: [0.1, 0.2, 0.3, 0.4]")


def test_coco_context_normalises_xywh_pixel_boxes():
    text = coco_context(["A dog on a sofa.", " Two pets. "], [("dog", [64, 48, 128, 96]), ("couch", [0, 0, 640, 480])],
                        width=640, height=480)
    assert text == "A dog on a sofa.\nTwo pets.\n\ndog: [0.100, 0.100, 0.300, 0.300]\ncouch: [0.000, 0.000, 1.000, 1.000]"
    with pytest.raises(ValueError, match="width and height must be positive"):
        coco_context([], [], 0, 480)
    with pytest.raises(ValueError, match="not a COCO"):
        coco_context([], [("dog", [1, 2, 3])], 640, 480)


def test_messages_alternate_few_shot_and_name_their_kind():
    ctx = toy_context(make_scene(1).annotation())
    for kind in KINDS:
        for json_mode in (False, True):
            messages = build_messages(kind, ctx, json_mode)
            assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": ctx}
            assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 2 + ["user"]
            assert kind_of(messages) == kind
            assert ("JSON" in messages[0]["content"]) == json_mode
            for m in messages[0:1] + messages[2:-1:2]:   # no example answer leaks its source
                assert not re.search(r"caption|bounding box|coordinates", m["content"].split("\n\n")[-1].lower())
    with pytest.raises(ValueError, match="unknown response kind"):
        build_messages("story", ctx)
    with pytest.raises(ValueError, match="SYSTEM_MESSAGES"):
        kind_of([{"role": "system", "content": "Be nice."}, {"role": "user", "content": ctx}])


# ----------------------------------------------------------------------------
# Parsing and clean-up


def test_parse_blocks_tolerates_layout_variants():
    strict = format_blocks([("How many?", "Two."), ("Where?", "Left.\nMostly.")])
    loose = "Question 1: How many?\nAnswer 1: Two.\n\nQuestion: Where?\n===\nAnswer:\nLeft.\nMostly.\n===\nQuestion:\nWhy?"
    for text in (strict, loose):
        pairs, unanswered = parse_response(text, "conversation")
        assert pairs == [("How many?", "Two."), ("Where?", "Left.\nMostly.")]
    assert parse_response(loose, "conversation")[1] == ["Why?"]
    assert parse_response(strict, "complex")[0] == [("How many?", "Two.")]   # one question only
    for bad in ("", "I am sorry, I cannot help.", "Question:\nWhat colour is the"):
        with pytest.raises(ParseError):
            parse_response(bad, "conversation")
    assert parse_response("A red circle sits alone.", "detail") == ([("", "A red circle sits alone.")], [])
    with pytest.raises(ParseError):
        parse_response("Question:\nWhat colour is the", "detail")


def test_parse_json_mode():
    assert parse_response('{"qa": [{"question": "Q?", "answer": "A."}]}', "conversation", True)[0] == [("Q?", "A.")]
    assert parse_response('{"description": " A red circle. "}', "detail", True)[0] == [("", "A red circle.")]
    for bad in ('{"qa": []}', '{"qa": [{"question": 1}]}', "not json", '["qa"]'):
        with pytest.raises(ParseError):
            parse_response(bad, "conversation", True)


def test_clean_turns_strips_lead_ins_and_drops_leaks():
    kept, dropped = clean_turns([
        ("What is there?", "Based on the description, there is a red circle."),
        ("Where is it?", "According to the captions provided, it is on the left."),
        ("How big?", "Its bounding box is large."),
        ("What colour?", "I'm sorry, I cannot see the image."),
        ("What does the description say?", "A red circle."),
    ])
    assert kept == [("What is there?", "There is a red circle."), ("Where is it?", "It is on the left.")]
    assert [reason for _, reason in dropped] == ["leak: bounding box", "leak: sorry", "leak: description"]


def test_image_marker_goes_before_or_after_the_first_question_only():
    sides = set()
    for s in range(40):
        turns = to_llava_turns([("Q1?", "A1."), ("Q2?", "A2.")], random.Random(s))
        assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
        assert turns[0]["value"] in ("<image>\nQ1?", "Q1?\n<image>") and "<image>" not in turns[2]["value"]
        sides.add(turns[0]["value"].startswith("<image>"))
    assert sides == {True, False}


# ----------------------------------------------------------------------------
# Validation: a lying teacher is caught, the truthful rule teacher never is


class LyingTeacher:
    """Answers each conversation with two true turns and one lie of every checkable kind."""

    model, prices = "liar", (0.0, 0.0)
    LIES = ("presence", "absence", "count", "count", "colour")

    async def complete(self, messages, params):
        ann = parse_toy_context(messages[-1]["content"])
        objs, names = ann["objects"], {o["name"] for o in ann["objects"]}
        o = objs[0]
        n_shape = sum(p["shape"] == o["shape"] for p in objs)
        absent = next(c for c in CATEGORIES if c not in names)
        wrong = next(c for c in COLORS if all(p["color"] != c for p in objs if p["shape"] == o["shape"]))
        truths = RuleTeacher().answer(messages)
        lies = format_blocks([
            (f"Is there a {absent} in the image?", f"Yes, there is a {absent} on the left."),
            (f"Can you see a {o['name']}?", f"No, there is no {o['name']} in the image."),
            (f"How many {plural(o['shape'])} are there?", f"{n_shape + 1}"),
            ("What is in the image?", f"There are {NUMBER_WORDS[len(objs) + 1]} shapes."),
            (f"What colour are the {plural(o['shape'])}?", f"{wrong}"),
        ])
        return Completion(truths + "\n===\n" + lies, 1, 1)


def test_lying_teacher_is_caught_and_truths_are_kept():
    requests = engine.make_requests([engine.toy_item(s) for s in range(25)], ["conversation"], "liar")
    traces, report = engine.run(requests, LyingTeacher())
    for trace in traces:
        truths = engine.process(trace.request, RuleTeacher().answer(trace.request.messages)).turns
        assert trace.turns == truths   # every true turn kept, every lie dropped
        assert sorted(d.reason.split(": ")[1] for d in trace.dropped) == sorted(LyingTeacher.LIES)
        assert trace.sample["conversations"][1::2] == [{"from": "gpt", "value": a} for _, a in truths]
    assert report.turns_dropped == {"hallucination: presence": 25, "hallucination: absence": 25,
                                    "hallucination: count": 50, "hallucination: colour": 25}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), variant=st.sampled_from(["base", "fine"]))
def test_rule_teacher_passes_validation(seed, variant):
    requests = engine.make_requests([engine.toy_item(seed, variant)])
    traces, report = engine.run(requests)
    assert not report.turns_dropped and report.kept == {k: 1 for k in KINDS}


def test_validation_checks_coco_categories_and_spares_scoped_or_negated_claims():
    facts = coco_facts(["dog", "dog", "couch"], ["dog", "couch", "cat", "hot dog"])
    assert check("What animals are there?", "There are two dogs on the couch.", facts) == []
    assert check("Is there a cat?", "No, there is no cat.", facts) == []
    assert check("What is on the couch?", "A cat sleeps on the couch.", facts)[0].startswith("presence")
    assert check("How many dogs are there?", "3", facts)[0].startswith("count")
    assert check("How many dogs are on the couch?", "1", facts) == []   # scoped: not checkable
    assert check("Is there a hot dog?", "Yes.", facts)[0].startswith("presence")
    toy = toy_facts(make_scene(1).annotation())   # blue triangle, green circle, blue square
    assert check("Which shape rolls?", "Only a circle has no corners, so a triangle cannot roll.", toy) == []
    assert check("Is there a red circle?", "The image doesn't show any red circle.", toy) == []
    assert check("What colour is the circle?", "It is green.", toy) == []
    assert check("What colour is the circle?", "It is blue.", toy)[0].startswith("colour")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        coco_facts(["zebra"], ["dog"])


def test_coco_item_context_and_validation():
    image = {"id": 42, "file_name": "000000000042.jpg", "width": 640, "height": 480}
    instances = [{"category_id": 18, "bbox": [64, 48, 128, 96]}, {"category_id": 18, "bbox": [300, 200, 50, 50]},
                 {"category_id": 63, "bbox": [0, 240, 640, 240]}]
    item = engine.coco_item(image, ["Two dogs on a couch."], instances, {17: "cat", 18: "dog", 63: "couch"})
    assert item.context.endswith("dog: [0.100, 0.100, 0.300, 0.300]\ndog: [0.469, 0.417, 0.547, 0.521]\n"
                                 "couch: [0.000, 0.500, 1.000, 1.000]")
    (request,) = engine.make_requests([item], ["conversation"], "gpt-4o-mini")
    assert request.custom_id == "42-conversation" and request.messages[-1]["content"] == item.context
    reply = format_blocks([("How many dogs are there?", "There are two dogs."),
                           ("What is next to the dogs?", "A cat is sitting next to them."),
                           ("Is there a cat?", "No, there is no cat.")])
    trace = engine.process(request, reply)
    assert [q for q, _ in trace.turns] == ["How many dogs are there?", "Is there a cat?"]
    assert [d.reason for d in trace.dropped] == ["hallucination: presence"]
    assert trace.sample["image"] == "000000000042.jpg"
    with pytest.raises(ValueError, match="missing 'bbox'"):
        engine.coco_item(image, [], [{"category_id": 18}], {18: "dog"})


# ----------------------------------------------------------------------------
# Engine runs, cache, outputs


def test_sample_from_scene_exposes_every_step():
    trace = engine.sample_from_scene(7, "detail")
    assert trace.request.messages[-1]["content"] == toy_context(make_scene(7).annotation())
    assert trace.raw == trace.turns[0][1] and trace.dropped == []
    human, gpt = trace.sample["conversations"]
    assert human["value"].replace("<image>", "").strip() in DETAIL_INSTRUCTIONS
    assert gpt["value"] == trace.raw and trace.sample["id"] == "base-000007-detail"
    assert trace.sample["image"] == "images/base-000007.png"


def test_cache_key_and_torn_line_repair(tmp_path):
    m = [{"role": "user", "content": "hi"}]
    assert request_key("a", m, {}) == request_key("a", [dict(m[0])], {})
    assert len({request_key("a", m, {}), request_key("b", m, {}), request_key("a", m, {"temperature": 1}),
                request_key("a", [{"role": "user", "content": "hi!"}], {})}) == 4
    path = tmp_path / "cache.jsonl"
    cache = Cache(path)
    cache.put("k1", "one", 1, 2)
    cache.put("k1", "again", 9, 9)   # first write wins, written once
    cache.put("k2", "two", 3, 4)
    with open(path, "a") as f:
        f.write('{"key": "k3", "te')   # a kill in the middle of a write
    reopened = Cache(path)
    assert reopened.repaired == 1 and len(reopened) == 2 and reopened.get("k1")["text"] == "one"
    reopened.put("k3", "three", 1, 1)
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k2", "k3"]
    path.write_text("garbage\n")
    with pytest.raises(ValueError, match="not a cache record"):
        Cache(path)


class CountingTeacher(RuleTeacher):
    """The rule teacher, counting its calls; the calls numbered in fail_on fail for good."""

    def __init__(self, fail_on=()):
        self.calls, self.fail_on = 0, set(fail_on)

    async def complete(self, messages, params):
        self.calls += 1
        if self.calls in self.fail_on:
            raise TeacherError("HTTP 503 (gave up after 1 attempt)", ["HTTP 503"])
        return await super().complete(messages, params)


def test_generate_writes_outputs_and_rerun_sends_nothing(tmp_path):
    seeds = range(6)
    teacher = CountingTeacher(fail_on={2, 5})
    report = engine.generate(seeds, tmp_path, teacher)
    assert report.failed == {"HTTP 503": 2} and report.sent == 16 and teacher.calls == 18
    assert sum(report.kept.values()) + sum(report.dropped.values()) + sum(report.failed.values()) == 18
    first = json.loads((tmp_path / "llava_instruct.json").read_text())
    assert len(first) == 16

    teacher = CountingTeacher()
    report = engine.generate(seeds, tmp_path, teacher)   # resumes: only the 2 failed requests go out
    assert (report.cache_hits, report.sent, teacher.calls) == (16, 2, 2) and not report.failed
    samples = json.loads((tmp_path / "llava_instruct.json").read_text())
    ids = [s["id"] for s in samples]
    assert sorted(ids) == sorted(f"base-{s:06d}-{k}" for s in seeds for k in KINDS) and len(set(ids)) == 18
    assert all(s in samples for s in first)   # earlier samples are unchanged

    teacher = CountingTeacher()
    report = engine.generate(seeds, tmp_path, teacher)
    assert (report.cache_hits, report.sent, teacher.calls) == (18, 0, 0)
    assert json.loads((tmp_path / "llava_instruct.json").read_text()) == samples
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["kept"] == {k: 6 for k in KINDS} and saved["sent"] == 0 and saved["captions"] == 6

    captions = json.loads((tmp_path / "llava_captions.json").read_text())
    for s in captions:
        human, gpt = s["conversations"]
        assert human["value"].replace("<image>", "").strip() in BRIEF_INSTRUCTIONS
        seed = int(s["id"].split("-")[1])
        assert gpt["value"] in make_scene(seed).captions() and (tmp_path / s["image"]).exists()

    ds = engine.to_dataset(samples, tmp_path)
    assert len(ds) == 18 and ds[0]["image"].size == (64, 64) and ds[0]["conversations"][0]["from"] == "human"


def test_batch_requests_and_results_round_trip(tmp_path):
    requests = engine.make_requests([engine.toy_item(s) for s in range(3)], ["conversation", "detail"], "gpt-4o-mini",
                                    {"max_tokens": 512})
    cache = Cache(tmp_path / "cache.jsonl")
    assert write_batch_requests(requests, tmp_path / "req.jsonl", cache) == 6
    lines = [json.loads(line) for line in (tmp_path / "req.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [r.custom_id for r in requests]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["max_tokens"] == 512
    assert lines[0]["body"]["messages"] == requests[0].messages

    teacher = RuleTeacher()
    results = [{"custom_id": x["custom_id"], "response": {"status_code": 200, "body": {
        "choices": [{"message": {"role": "assistant", "content": teacher.answer(x["body"]["messages"])}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}}, "error": None} for x in lines[1:]]
    results.reverse()   # results come back in any order
    results += [{"custom_id": lines[0]["custom_id"], "response": None, "error": {"code": "rate_limit_exceeded"}},
                {"custom_id": "nobody", "response": {"status_code": 200, "body": {}}}, "not json"]
    (tmp_path / "res.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in results))
    outcome = ingest_batch_results(tmp_path / "res.jsonl", requests, cache)
    assert outcome == {"ingested": 5, "error: rate_limit_exceeded": 1, "unknown custom_id": 1, "malformed line": 1}
    assert write_batch_requests(requests, tmp_path / "req2.jsonl", cache) == 1   # only the failed one again
    traces, report = engine.run(requests, CountingTeacher(), cache)
    assert report.cache_hits == 5 and report.sent == 1 and sum(report.kept.values()) == 6


def test_cli_generate_and_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    main(["data", "generate", "--teacher", "openai", "--model", "gpt-4o-mini", "--seeds", "0:10",
          "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert re.search(r"30 requests, 0 cached, 30 to send; ~\d+ prompt \+ ~\d+ completion tokens; "
                     r"estimated cost ~\$\d+\.\d{4}, at most \$\d+\.\d{4}", out)
    assert not any(tmp_path.iterdir())   # a dry run writes nothing
    main(["data", "generate", "--seeds", "0:4", "--out", str(tmp_path), "--kinds", "conversation,complex"])
    assert "samples kept {'conversation': 4, 'complex': 4}" in capsys.readouterr().out
    main(["data", "generate", "--seeds", "0:10", "--out", str(tmp_path), "--dry-run"])
    assert "30 requests, 8 cached, 22 to send" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "generate", "--seeds", "5:1", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        main(["data", "generate", "--teacher", "openai", "--model", "m", "--seeds", "0:1", "--out", str(tmp_path)])
