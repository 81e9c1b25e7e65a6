"""The OpenAI teacher through the real openai client against the local server, faults injected.

Every server here binds 127.0.0.1 on a free port and is stopped by its test.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from minillava.cli import main
from minillava.data import engine
from minillava.data.cache import Cache
from minillava.data.prompts import KINDS, build_messages, toy_context
from minillava.data.server import Faults, TeacherServer
from minillava.data.teachers import OpenAITeacher, RuleTeacher
from minillava.toyworld import make_scene

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "sk-minillava-SENTINEL-must-never-be-written-7f3a9c"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)


def requests_for(seeds, kinds=KINDS):
    return engine.make_requests([engine.toy_item(s) for s in seeds], kinds, TeacherServer.model)


def test_server_speaks_the_openai_protocol(api_key):
    with TeacherServer() as server:
        client = openai.OpenAI(base_url=server.url, max_retries=0, timeout=5)   # key from the environment
        assert [m.id for m in client.models.list()] == [server.model]
        messages = build_messages("conversation", toy_context(make_scene(3).annotation()))
        response = client.chat.completions.create(model=server.model, messages=messages)
        assert response.choices[0].message.content == RuleTeacher().answer(messages)
        assert response.choices[0].finish_reason == "stop"
        assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens > 0
        detail = build_messages("detail", toy_context(make_scene(3).annotation()), json_mode=True)
        response = client.chat.completions.create(model=server.model, messages=detail,
                                                  response_format={"type": "json_object"})
        assert "description" in json.loads(response.choices[0].message.content)
        with pytest.raises(openai.BadRequestError, match="SYSTEM_MESSAGES"):
            client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}])
        assert server.stats["rejected"] == 1


def test_faults_are_retried_counted_and_nothing_is_lost(api_key, tmp_path):
    faults = Faults(rate_limit=0.25, server_error=0.15, stall=0.08, malformed=0.06, stall_seconds=10, seed=1)
    requests = requests_for(range(30))
    with TeacherServer(faults=faults) as server:
        # max_per_prompt=2 < max_attempts: every request gets through in the end
        teacher = OpenAITeacher(server.model, server.url, timeout=1.0, backoff=0.01, max_attempts=4)
        traces, report = engine.run(requests, teacher, Cache(tmp_path / "cache.jsonl"), concurrency=8)
        stats = dict(server.stats)
    assert min(stats["rate_limit"], stats["server_error"], stats["stall"], stats["malformed"]) > 0
    assert report.failures == {"HTTP 429": stats["rate_limit"], "HTTP 500": stats["server_error"],
                               "timeout": stats["stall"]}
    assert not report.failed and report.sent == 90 and report.cache_hits == 0
    assert report.dropped == {"unparseable": stats["malformed"]}   # 200s with cut-off text: counted, not kept
    ids = [t.sample["id"] for t in traces if t.sample]
    assert len(ids) == len(set(ids)) == 90 - stats["malformed"]
    for trace in traces:   # every kept sample is exactly what the teacher meant to say
        if trace.sample:
            assert trace.raw == RuleTeacher().answer(trace.request.messages)

    with TeacherServer() as server:   # a rerun from the cache sends nothing at all
        teacher = OpenAITeacher(server.model, server.url)
        _, again = engine.run(requests, teacher, Cache(tmp_path / "cache.jsonl"))
        assert again.sent == 0 and again.cache_hits == 90 and server.stats["requests"] == 0
        assert again.kept == report.kept and again.dropped == report.dropped


def test_requests_that_keep_failing_are_reported_then_resent(api_key):
    requests, cache = requests_for(range(5), ["conversation"]), Cache()
    with TeacherServer(faults=Faults(server_error=1.0, max_per_prompt=100)) as server:
        teacher = OpenAITeacher(server.model, server.url, backoff=0.001, max_attempts=3)
        traces, report = engine.run(requests, teacher, cache)
    assert traces == [] and len(cache) == 0
    assert report.failed == {"HTTP 500": 5} and report.failures == {"HTTP 500": 15} and report.sent == 0
    with TeacherServer() as server:
        _, report = engine.run(requests, OpenAITeacher(server.model, server.url), cache)
    assert report.sent == 5 and report.kept == {"conversation": 5}


def test_retry_after_is_honoured(api_key):
    with TeacherServer(faults=Faults(rate_limit=1.0, max_per_prompt=1, retry_after=0.4)) as server:
        teacher = OpenAITeacher(server.model, server.url, backoff=0.0)
        start = time.perf_counter()
        _, report = engine.run(requests_for([0], ["detail"]), teacher)
    assert time.perf_counter() - start >= 0.4
    assert report.failures == {"HTTP 429": 1} and report.kept == {"detail": 1}


def test_killed_run_resumes_without_loss_or_duplicates_and_never_writes_the_key(api_key, tmp_path, capsys):
    out = tmp_path / "run"
    cache_file = out / "cache.jsonl"
    with TeacherServer(faults=Faults(latency=0.05)) as server:
        args = ["data", "generate", "--teacher", "openai", "--model", server.model, "--base-url", server.url,
                "--seeds", "0:30", "--out", str(out), "--concurrency", "2"]
        proc = subprocess.Popen([sys.executable, "-m", "minillava.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        deadline = time.time() + 60
        while time.time() < deadline and (not cache_file.exists() or cache_file.read_text().count("\n") < 10):
            time.sleep(0.05)
        proc.kill()
        logs = proc.communicate(timeout=30)[0].decode()
        saved = len(Cache(cache_file))
        assert 10 <= saved < 90, "the run must be killed midway"

        main(args)   # the same command again resumes
        logs += capsys.readouterr().out
        answered = server.stats["answered"]

    report = json.loads((out / "report.json").read_text())
    assert report["cache_hits"] == saved and report["sent"] == 90 - saved and not report["failed"]
    assert answered - (90 - saved) - saved <= 2   # only the requests in flight at the kill were paid twice
    keys = [json.loads(line)["key"] for line in cache_file.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 90
    ids = [s["id"] for s in json.loads((out / "llava_instruct.json").read_text())]
    assert sorted(ids) == sorted(f"base-{s:06d}-{k}" for s in range(30) for k in KINDS)
    assert len(list((out / "images").iterdir())) == 30

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 30
    for path in written:
        assert SENTINEL.encode() not in path.read_bytes(), path
    assert SENTINEL not in logs


def test_cli_serve_prints_its_url_and_stops(capsys):
    main(["data", "serve", "--port", "0", "--seconds", "0.2"])
    out = capsys.readouterr().out
    assert "serving the rule teacher at http://127.0.0.1:" in out and "served: {}" in out
