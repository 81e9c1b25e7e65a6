"""`minillava serve`: the OpenAI API as the real openai client and raw HTTP see it.

The answers are checked against the assistant's own ``ask`` / ``chat`` for the same pictures
and questions (the small saved assistant of tiny_assistant.py: fluent toy English, different
for different pictures). Bad input of every kind gets a 4xx in OpenAI's error shape, and the
same server answers a good request afterwards. Traffic goes to 127.0.0.1 only.
"""

import base64
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import AuthenticationError, OpenAI
from PIL import Image

from minillava.chat import load_assistant
from minillava.cli import main
from minillava.serve import server as server_module
from minillava.serve.images import ImageLimits
from minillava.serve.protocol import FIELDS, UNSUPPORTED, APIError, parse_request
from minillava.toyworld import make_scene, render
from serve_helpers import CHAT, Gated, call, chat, data_url, is_openai_error, serving, sse_events, user
from tiny_assistant import DESCRIBE, save_tiny_assistant

QUESTIONS = [DESCRIBE, "What is in the image?", "What colour is the shape?"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_assistant(tmp_path_factory.mktemp("serve") / "assistant")


@pytest.fixture(scope="module")
def assistant(folder):
    return load_assistant(folder)


@pytest.fixture(scope="module")
def server(assistant, tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    render(make_scene(7)).save(root / "scene7.png")
    limits = ImageLimits(max_images=2, max_image_bytes=40_000, max_image_pixels=300 * 300)
    with serving(assistant, image_root=root, limits=limits) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0) as openai_client:
        yield openai_client


def scene(seed):
    return render(make_scene(seed))


def test_the_openai_client_gets_what_ask_answers(client, assistant):
    assert [m.id for m in client.models.list().data] == ["assistant"]
    answers = set()
    for seed, question in enumerate(QUESTIONS):
        image = scene(seed)
        expected = assistant.ask(image, question)
        for image_first in (True, False):   # OpenAI's examples put the text first; LLaVA trained image first
            reply = client.chat.completions.create(model="assistant",
                                                   messages=[user(question, image, image_first=image_first)])
            assert reply.choices[0].message.content == expected
            assert reply.choices[0].finish_reason == "stop" and reply.object == "chat.completion"
        messages = [{"role": "user", "content": f"<image>\n{question}"}]
        assert reply.usage.prompt_tokens == assistant.prompt_length(messages, [image])
        assert reply.usage.completion_tokens == len(assistant.tokenizer.encode(expected, add_special_tokens=False)) + 1
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        stream = client.chat.completions.create(model="assistant", messages=[user(question, image)], stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == expected and len(pieces) > 1
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens and not chunks[-1].choices
        assert chunks[-2].choices[0].finish_reason == "stop"
        answers.add(expected)
    assert len(answers) == len(QUESTIONS)   # different pictures and questions, different answers
    text_only = client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": DESCRIBE}])
    assert text_only.choices[0].message.content == assistant.ask(None, DESCRIBE)


def test_a_conversation_of_many_turns_is_answered_as_chat_answers_it(client, assistant):
    image = scene(3)
    first = assistant.ask(image, DESCRIBE)
    messages = [{"role": "system", "content": "You describe toy scenes."}, user(DESCRIBE, image),
                {"role": "assistant", "content": first}, {"role": "user", "content": "What colour is it?"}]
    reply = client.chat.completions.create(model="assistant", messages=messages)
    ours = [{"role": "system", "content": "You describe toy scenes."},
            {"role": "user", "content": f"<image>\n{DESCRIBE}"},
            {"role": "assistant", "content": first}, {"role": "user", "content": "What colour is it?"}]
    assert reply.choices[0].message.content == assistant.chat([ours], [image])[0]


def test_max_tokens_stop_and_sampling(client, assistant, server):
    image, question = scene(5), DESCRIBE
    full = assistant.ask(image, question)
    short = client.chat.completions.create(model="assistant", messages=[user(question, image)], max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert full.startswith(short.choices[0].message.content) and len(short.choices[0].message.content) < len(full)
    word = full.split()[3]
    cut = client.chat.completions.create(model="assistant", messages=[user(question, image)], stop=[word, "zzz"])
    assert cut.choices[0].message.content == full[:full.index(word)].strip()
    assert cut.choices[0].finish_reason == "stop"
    sampled = client.chat.completions.create(model="assistant", messages=[user(question, image)],
                                             temperature=1.5, top_p=0.9, max_completion_tokens=8)
    assert sampled.choices[0].finish_reason in ("stop", "length") and sampled.usage.completion_tokens <= 8
    # The stream as bytes on the wire: OpenAI's chunk format, then "data: [DONE]".
    status, raw, headers = chat(server, messages=[user(question, image)], stream=True, max_tokens=3)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = sse_events(raw)
    assert events[-1] == "[DONE]" and events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"] for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == short.choices[0].message.content


def test_requests_that_arrive_together_share_one_generation(assistant):
    gated = Gated(assistant)
    images = [scene(seed) for seed in range(5)]
    expected = [assistant.ask(image, DESCRIBE) for image in images]
    with serving(gated, max_batch=8) as running:
        gated.gate.clear()   # the first request holds the batcher; the other four arrive meanwhile
        results = [None] * 5

        def send(i):
            results[i] = chat(running, messages=[user(DESCRIBE, images[i])], max_tokens=20 + i)

        threads = [threading.Thread(target=send, args=(0,))]
        threads[0].start()
        assert gated.entered.wait(30)
        threads += [threading.Thread(target=send, args=(i,)) for i in range(1, 5)]
        for thread in threads[1:]:
            thread.start()
        while running.batcher.queue.qsize() < 4:
            threads[-1].join(0.01)
        gated.gate.set()
        for thread in threads:
            thread.join(60)
        assert [r[1]["choices"][0]["message"]["content"] for r in results] == expected
        assert running.batcher.batch_sizes == {1: 1, 4: 1}   # one batch of four, not four of one


BAD_REQUESTS = {   # name: (request body, the param the error names, its code)
    "unknown field": ({"messages": [user("Hi")], "temprature": 0.5}, "temprature", "unknown_parameter"),
    "unsupported field": ({"messages": [user("Hi")], "tools": []}, "tools", "unsupported_parameter"),
    "n above 1": ({"messages": [user("Hi")], "n": 2}, "n", "unsupported_value"),
    "no messages": ({}, "messages", "invalid_type"),
    "messages not a list": ({"messages": "Hi"}, "messages", "invalid_type"),
    "empty messages": ({"messages": []}, "messages", "invalid_type"),
    "message not an object": ({"messages": ["Hi"]}, "messages[0]", "invalid_type"),
    "unknown role": ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role", "invalid_value"),
    "unknown message field": ({"messages": [{"role": "user", "content": "Hi", "x": 1}]}, "messages[0]",
                              "unknown_parameter"),
    "content a number": ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    "unknown part": ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0]",
                     "invalid_type"),
    "model not a string": ({"model": 3, "messages": [user("Hi")]}, "model", "invalid_type"),
    "temperature a string": ({"messages": [user("Hi")], "temperature": "hot"}, "temperature", "invalid_type"),
    "temperature too high": ({"messages": [user("Hi")], "temperature": 3}, "temperature", "invalid_value"),
    "top_p zero": ({"messages": [user("Hi")], "top_p": 0}, "top_p", "invalid_value"),
    "max_tokens a float": ({"messages": [user("Hi")], "max_tokens": 1.5}, "max_tokens", "invalid_type"),
    "max_tokens a boolean": ({"messages": [user("Hi")], "max_tokens": True}, "max_tokens", "invalid_type"),
    "max_tokens zero": ({"messages": [user("Hi")], "max_tokens": 0}, "max_tokens", "invalid_value"),
    "stream a string": ({"messages": [user("Hi")], "stream": "yes"}, "stream", "invalid_type"),
    "stop a number": ({"messages": [user("Hi")], "stop": 5}, "stop", "invalid_type"),
    "five stops": ({"messages": [user("Hi")], "stop": list("abcde")}, "stop", "invalid_value"),
    "marker in the text": ({"messages": [user("<image> Hi")]}, "messages[0].content[0]", None),
    "roles out of order": ({"messages": [user("Hi"), user("Hi again")]}, "messages", "invalid_conversation"),
    "ends with the assistant": ({"messages": [user("Hi"), {"role": "assistant", "content": "Hello"}]}, "messages",
                                "invalid_conversation"),
    "picture from the assistant": ({"messages": [user("Hi"), {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}, user("And?")]},
        "messages[1].content[0]", None),
    "too many pictures": ({"messages": [user("Hi", scene(1), scene(2), scene(3))]}, "messages", "too_many_images"),
    "remote picture": ({"messages": [user("Hi", "https://example.com/cat.png")]},
                       "messages[0].content[0].image_url.url", "unsupported_image_url"),
    "base64 malformed": ({"messages": [user("Hi", "data:image/png;base64,@@not base64@@")]},
                         "messages[0].content[0].image_url.url", "invalid_image_url"),
    "not base64 at all": ({"messages": [user("Hi", "data:image/png,rawbytes")]},
                          "messages[0].content[0].image_url.url", "invalid_image_url"),
    "not a picture": ({"messages": [user("Hi", "data:image/png;base64," + base64.b64encode(b"hello" * 20).decode())]},
                      "messages[0].content[0].image_url.url", "invalid_image"),
    "truncated picture": ({"messages": [user("Hi", data_url(scene(1))[:200])]},
                          "messages[0].content[0].image_url.url", None),
    "picture over the byte limit": ({"messages": [user("Hi", "data:image/png;base64," + "A" * 60_000)]},
                                    "messages[0].content[0].image_url.url", "image_too_large"),
    "picture over the pixel limit": ({"messages": [user("Hi", Image.new("RGB", (400, 400)))]},
                                     "messages[0].content[0].image_url.url", "image_too_large"),
    "file outside the image root": ({"messages": [user("Hi", "file:///etc/hostname")]},
                                    "messages[0].content[0].image_url.url", "image_outside_root"),
    "file escaping the root": ({"messages": [user("Hi", "file:../../etc/hostname")]},
                               "messages[0].content[0].image_url.url", "image_outside_root"),
    "missing file": ({"messages": [user("Hi", "file:nope.png")]}, "messages[0].content[0].image_url.url",
                     "image_not_found"),
    "longer than the context": ({"messages": [user("a b " * 700)]}, "messages", "context_length_exceeded"),
    "answer past the context": ({"messages": [user("Hi")], "max_tokens": 1020}, "messages", "context_length_exceeded"),
}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
PART = st.dictionaries(st.sampled_from(["type", "text", "image_url", "url"]),
                       st.sampled_from(["text", "image_url", "data:image/png;base64,AAAA"]) | JSON, max_size=3)
MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls"]),
                          st.sampled_from(["user", "assistant", "system", "tool"]) | st.lists(PART, max_size=3) | JSON,
                          max_size=3)
BODY = st.dictionaries(st.sampled_from(sorted(FIELDS | UNSUPPORTED) + ["temprature"]),
                       st.lists(MESSAGE, max_size=3) | JSON, max_size=5)


@settings(max_examples=300, deadline=None)
@given(BODY)
def test_any_json_body_is_taken_or_refused_with_a_400_never_an_exception(body):
    """Whatever the JSON, parsing a request ends in a ChatRequest or a 400 that names the problem."""
    try:
        request = parse_request(body, ImageLimits())
    except APIError as err:
        assert err.status == 400 and is_openai_error(err.body())
    else:
        assert all(isinstance(m["content"], str) for m in request.messages)


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_a_400_in_openais_shape(server, name):
    body, param, code = BAD_REQUESTS[name]
    status, payload, _ = call(server, "POST", CHAT, {"model": "assistant", **body})
    assert status == 400 and is_openai_error(payload), payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_the_server_survives_bad_http_and_answers_on(server, assistant):
    """Malformed JSON, lengths that lie or are missing, garbage request lines, unknown methods."""
    for raw in (b"{not json", b'{"model": "a", "messages": [}', b"[1, 2]", b'{"temperature": NaN}', b"\xff\xfe"):
        status, payload, _ = call(server, "POST", CHAT, raw=raw)
        assert status == 400 and is_openai_error(payload), raw
    status, payload, _ = call(server, "POST", CHAT, raw=b"x" * 10, headers={"Content-Length": "99999999999"})
    assert status == 413 and is_openai_error(payload)
    assert call(server, "POST", "/v1/completions", {"prompt": "Hi"})[0] == 404
    assert call(server, "GET", "/v1/nothing")[0] == 404
    status, payload, _ = call(server, "PUT", CHAT, {"messages": []})
    assert status == 501 and is_openai_error(payload)
    for garbage in (b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        with socket.create_connection(server.server_address[:2], timeout=30) as sock:
            sock.sendall(garbage)
            head, _, body = sock.makefile("rb").read().partition(b"\r\n\r\n")
        assert head.split()[1] in (b"400", b"411") and is_openai_error(json.loads(body)), head
    image = scene(2)
    status, payload, _ = chat(server, messages=[user(DESCRIBE, image)])
    assert status == 200 and payload["choices"][0]["message"]["content"] == assistant.ask(image, DESCRIBE)


def test_local_pictures_are_read_only_under_the_image_root(server, assistant, client):
    reply = client.chat.completions.create(model="assistant", messages=[user(DESCRIBE, "file:scene7.png")])
    assert reply.choices[0].message.content == assistant.ask(Image.open(server.image_root / "scene7.png"), DESCRIBE)
    absolute = (server.image_root / "scene7.png").as_uri()
    assert chat(server, messages=[user(DESCRIBE, absolute)])[0] == 200
    with serving(assistant) as no_root:   # no --image-root: no file is read, however it is named
        status, payload, _ = chat(no_root, messages=[user(DESCRIBE, absolute)])
        assert status == 400 and "--image-root" in payload["error"]["message"]


def test_the_api_key_is_checked_in_constant_time_and_never_echoed(assistant, monkeypatch, capfd):
    key = "sk-test-" + "7" * 24
    compared, constant_time = [], hmac.compare_digest

    def compare_digest(a, b):
        compared.append(1)
        return constant_time(a, b)

    monkeypatch.setattr(server_module.hmac, "compare_digest", compare_digest)
    with serving(assistant, api_key=key) as locked:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key},
                        {"Authorization": f"Basic {key}"}):
            for method, path, body in (("GET", "/v1/models", None), ("POST", CHAT, {"messages": [user("Hi")]})):
                status, payload, response_headers = call(locked, method, path, body, headers)
                assert status == 401 and is_openai_error(payload) and payload["error"]["code"] == "invalid_api_key"
                assert key not in json.dumps(payload) and key not in json.dumps(response_headers)
        assert compared   # hmac.compare_digest decided
        status, payload, _ = call(locked, "GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert status == 200 and payload["data"][0]["id"] == "assistant"
        with OpenAI(base_url=locked.url + "v1", api_key=key, max_retries=0) as keyed:
            reply = keyed.chat.completions.create(model="assistant", messages=[user("Hi")])
            assert reply.choices[0].message.content == assistant.ask(None, "Hi")
        assert call(locked, "GET", "/")[0] in (200, 404)   # the page itself needs no key (it holds none)
    out, err = capfd.readouterr()
    assert key not in out + err


def test_the_web_page_and_toy_scenes(assistant, tmp_path):
    with serving(assistant, static_dir=tmp_path) as running:
        status, payload, _ = call(running, "GET", "/")
        assert status == 404 and is_openai_error(payload)   # no page yet: a plain 404
        (tmp_path / "index.html").write_text("<!doctype html><title>demo</title>")
        (tmp_path / "demo.js").write_text("console.log(1)")
        (tmp_path / ".secret").write_text("no")
        status, page, headers = call(running, "GET", "/")
        assert status == 200 and page == b"<!doctype html><title>demo</title>"
        assert headers["Content-Type"].startswith("text/html")
        status, script, headers = call(running, "GET", "/static/demo.js")
        assert status == 200 and script == b"console.log(1)" and "javascript" in headers["Content-Type"]
        for path in ("/static/.secret", "/static/../server.py", "/static/%2e%2e/server.py", "/static/nope.js"):
            assert call(running, "GET", path)[0] == 404, path
        status, payload, _ = call(running, "GET", "/v1/toy_scene?seed=5")
        assert status == 200 and payload["seed"] == 5 and payload["image_url"].startswith("data:image/png;base64,")
        reply = chat(running, messages=[user(DESCRIBE, payload["image_url"])])[1]
        assert reply["choices"][0]["message"]["content"] == assistant.ask(scene(5), DESCRIBE)
        status, payload, _ = call(running, "GET", "/v1/toy_scene?seed=abc")
        assert status == 400 and is_openai_error(payload) and payload["error"]["param"] == "seed"


# The command line.

def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *args])
    return exit_info.value.code, capsys.readouterr().err


def test_bad_folders_and_flags_are_one_line_and_exit_2(capsys, tmp_path, folder):
    code, err = run_cli(capsys, str(tmp_path / "nope"))
    assert code == 2 and err.startswith("minillava serve: no folder") and err.count("\n") == 1
    code, err = run_cli(capsys, str(tmp_path))
    assert code == 2 and "chat.json" in err and err.count("\n") == 1 and "Traceback" not in err
    code, err = run_cli(capsys, str(folder), "--image-root", str(tmp_path / "missing"))
    assert code == 2 and "--image-root" in err and err.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run_cli(capsys, str(folder), "--port", str(taken.getsockname()[1]))
    assert code == 2 and err.startswith("minillava serve: cannot listen") and err.count("\n") == 1
    for flags in (["--port", "70000"], ["--port", "http"], ["--max-batch", "0"], ["--bogus"]):
        code, err = run_cli(capsys, str(folder), *flags)
        assert code == 2 and "Traceback" not in err, flags


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_command_serves_until_stopped_and_never_prints_its_key(folder, assistant, stop):
    key = "sk-cli-" + "9" * 20
    env = {**os.environ, "MINILLAVA_API_KEY": key}
    # preexec_fn: Ctrl-C reaches the command even where this test runs with SIGINT ignored (a background job).
    process = subprocess.Popen([sys.executable, "-m", "minillava.cli", "serve", str(folder), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith("serving 'assistant' at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        with OpenAI(base_url=url + "v1", api_key=key, max_retries=0) as keyed:
            reply = keyed.chat.completions.create(model="assistant", messages=[user(DESCRIBE, scene(4))])
        assert reply.choices[0].message.content == assistant.ask(scene(4), DESCRIBE)
        with OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(AuthenticationError):
                wrong.models.list()
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopped" in out and "Traceback" not in err
    assert key not in line + out + err
