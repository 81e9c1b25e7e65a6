"""`minillava serve` under load and faults, on 127.0.0.1, bounded in requests and seconds.

Clients that leave mid-answer, a burst over the queue's size, clients too slow to send their
request or to read their answer, connections that never say anything: the server keeps
answering the others correctly, and once the dust settles it holds no thread more than it
started with (``threading.active_count()`` before and after).
"""

import json
import socket
import threading
import time

import pytest

from minillava.chat import load_assistant
from minillava.toyworld import make_scene, render
from serve_helpers import CHAT, Gated, call, chat, is_openai_error, serving, sse_events, user
from tiny_assistant import DESCRIBE, save_tiny_assistant


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    return load_assistant(save_tiny_assistant(tmp_path_factory.mktemp("faults") / "assistant"))


class Slow:
    """A real assistant whose generation takes ``delay`` seconds a step; records how it ended."""

    def __init__(self, assistant, delay: float):
        self.assistant, self.delay = assistant, delay
        self.steps, self.ended = 0, threading.Event()
        self.ran_to_the_end = False

    def __getattr__(self, name):
        return getattr(self.assistant, name)

    def replies(self, *args, **kwargs):
        try:
            for replies in self.assistant.replies(*args, **kwargs):
                self.steps += 1
                yield replies
                time.sleep(self.delay)
            self.ran_to_the_end = True
        finally:   # exhausted, or closed by the batcher when nobody listens any more
            self.ended.set()


def request_bytes(body: dict) -> bytes:
    data = json.dumps({"model": "assistant", **body}).encode()
    return (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def settle(baseline: int, seconds: float = 10) -> int:
    """The thread count once handler threads have ended (they end when their connection does)."""
    deadline = time.monotonic() + seconds
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def test_a_client_that_leaves_mid_stream_stops_its_generation(assistant):
    image = render(make_scene(2))
    expected = assistant.ask(image, DESCRIBE)
    full_length = len(assistant.tokenizer.encode(expected, add_special_tokens=False)) + 1
    slow = Slow(assistant, delay=0.2)
    before = threading.active_count()
    with serving(slow) as server:
        with socket.create_connection(server.server_address[:2], timeout=30) as sock:
            sock.sendall(request_bytes({"messages": [user(DESCRIBE, image)], "stream": True}))
            received = b""
            while received.count(b"data: ") < 2:   # the role chunk and the first piece of text
                received += sock.recv(4096)
        assert b" 200 OK" in received.split(b"\r\n")[0]
        assert slow.ended.wait(30)
        assert not slow.ran_to_the_end and slow.steps < full_length - 2, (slow.steps, full_length)
        slow.delay = 0   # the server answers the next client in full
        status, payload, _ = chat(server, messages=[user(DESCRIBE, image)])
        assert status == 200 and payload["choices"][0]["message"]["content"] == expected
        assert settle(before + 2) == before + 2   # serve_forever's thread and the batcher's, nothing else
    assert settle(before) == before


def test_a_burst_over_the_queue_is_refused_with_429_and_the_rest_answered(assistant):
    image = render(make_scene(3))
    expected = assistant.ask(image, DESCRIBE)
    gated = Gated(assistant)
    before = threading.active_count()
    with serving(gated, max_queue=3, max_batch=1) as server:
        gated.gate.clear()
        results = []

        def send():
            results.append(chat(server, messages=[user(DESCRIBE, image)]))

        first = threading.Thread(target=send)
        first.start()
        assert gated.entered.wait(30)   # the batcher is busy with the first request
        burst = [threading.Thread(target=send) for _ in range(7)]
        for thread in burst:
            thread.start()
        deadline = time.monotonic() + 30
        while len(results) < 4 and time.monotonic() < deadline:   # 3 wait in the queue, 4 are refused at once
            time.sleep(0.02)
        refused = list(results)
        assert len(refused) == 4 and server.batcher.queue.qsize() == 3
        for status, payload, headers in refused:
            assert status == 429 and is_openai_error(payload) and payload["error"]["code"] == "queue_full"
            assert headers["Retry-After"] == "1"
        gated.gate.set()
        for thread in [first, *burst]:
            thread.join(60)
        answered = [r for r in results if r[0] == 200]
        assert len(answered) == 4 and all(r[1]["choices"][0]["message"]["content"] == expected for r in answered)
        assert chat(server, messages=[user(DESCRIBE, image)])[0] == 200
        assert settle(before + 2) == before + 2
    assert settle(before) == before


def test_32_clients_at_once_get_an_answer_or_a_429_never_a_broken_connection(assistant):
    images = [render(make_scene(seed)) for seed in range(4)]
    expected = [assistant.ask(image, DESCRIBE) for image in images]
    before = threading.active_count()
    with serving(assistant, max_queue=8, max_batch=8) as server:
        results = [None] * 32

        def send(i):
            results[i] = chat(server, messages=[user(DESCRIBE, images[i % 4])])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert {status for status, _, _ in results} <= {200, 429}
        for i, (status, payload, _) in enumerate(results):
            if status == 200:
                assert payload["choices"][0]["message"]["content"] == expected[i % 4]
            else:
                assert is_openai_error(payload)
        assert sum(status == 200 for status, _, _ in results) >= 9   # the queue's 8 and the one generating, at least
        assert max(server.batcher.batch_sizes) > 1
        assert settle(before + 2) == before + 2
    assert settle(before) == before


def test_slow_and_silent_clients_are_dropped_and_never_hold_up_the_others(assistant):
    image = render(make_scene(4))
    expected = assistant.ask(image, DESCRIBE)
    before = threading.active_count()
    with serving(assistant, io_timeout=1.0) as server:
        address = server.server_address[:2]
        request = request_bytes({"messages": [user(DESCRIBE, image)]})
        silent = socket.create_connection(address, timeout=30)    # connects, says nothing
        stalled = socket.create_connection(address, timeout=30)   # half a request, then nothing
        stalled.sendall(request[:len(request) // 2])
        trickle = socket.create_connection(address, timeout=30)   # a byte every 0.3 s: each in time, the whole not
        trickle.sendall(request[:-20])

        def drip():
            try:
                for byte in request[-20:]:
                    time.sleep(0.3)
                    trickle.sendall(bytes([byte]))
            except OSError:   # the server gave up on it: as it should
                pass

        dripping = threading.Thread(target=drip)
        dripping.start()
        status, payload, _ = chat(server, messages=[user(DESCRIBE, image)])   # meanwhile, a normal client
        assert status == 200 and payload["choices"][0]["message"]["content"] == expected
        answers = []
        for sock in (silent, stalled, trickle):
            sock.settimeout(10)
            answers.append(b"".join(iter(lambda: sock.recv(4096), b"")))   # until the server closes it
            sock.close()
        dripping.join(10)
        assert answers[:2] == [b"", b""]   # dropped after io_timeout without a word
        head, _, body = answers[2].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and is_openai_error(json.loads(body))
        # A client that reads its stream slowly still gets all of it.
        with socket.create_connection(address, timeout=30) as reader:
            reader.sendall(request_bytes({"messages": [user(DESCRIBE, image)], "stream": True}))
            time.sleep(0.5)
            raw = b""
            while chunk := reader.recv(64):
                raw += chunk
                time.sleep(0.01)
        events = sse_events(raw.partition(b"\r\n\r\n")[2])
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == expected
        assert events[-1] == "[DONE]"
        assert settle(before + 2) == before + 2
        assert call(server, "GET", "/v1/models")[0] == 200
    assert settle(before) == before


def test_connections_past_the_limit_get_a_503_without_a_thread(assistant):
    before = threading.active_count()
    with serving(assistant, max_connections=2) as server:
        address = server.server_address[:2]
        idle = [socket.create_connection(address, timeout=30) for _ in range(2)]
        with socket.create_connection(address, timeout=30) as third:
            answer = b"".join(iter(lambda: third.recv(4096), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["error"]["code"] == "too_many_connections"
        assert threading.active_count() == before + 2 + 2   # the two idle connections' threads, no third
        for sock in idle:
            sock.close()
        assert settle(before + 2) == before + 2
        assert call(server, "GET", "/v1/models")[0] == 200
    assert settle(before) == before


class Broken:
    """A real assistant whose next generation fails, as a bug would."""

    def __init__(self, assistant):
        self.assistant, self.failures = assistant, 1

    def __getattr__(self, name):
        return getattr(self.assistant, name)

    def replies(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in generation")
        yield from self.assistant.replies(*args, **kwargs)


def test_a_failed_generation_is_a_500_for_its_requests_and_the_server_goes_on(assistant, capfd):
    image = render(make_scene(6))
    broken = Broken(assistant)
    with serving(broken) as server:
        status, payload, _ = chat(server, messages=[user(DESCRIBE, image)])
        assert status == 500 and is_openai_error(payload) and payload["error"]["type"] == "server_error"
        broken.failures = 1
        status, raw, _ = chat(server, messages=[user(DESCRIBE, image)], stream=True)
        events = sse_events(raw)   # the 200 was sent before generation failed: the error is the last event
        assert status == 200 and is_openai_error(events[-1]) and "[DONE]" not in events
        status, payload, _ = chat(server, messages=[user(DESCRIBE, image)])
        assert status == 200 and payload["choices"][0]["message"]["content"] == assistant.ask(image, DESCRIBE)
    assert "a bug in generation" in capfd.readouterr().err   # the operator's log says why
