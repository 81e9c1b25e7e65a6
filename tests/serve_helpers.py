"""What the server's tests share: a server running in a thread, raw HTTP calls, pictures as data URLs."""

import base64
import http.client
import io
import json
import threading
from contextlib import contextmanager

from minillava.serve.server import running

CHAT = "/v1/chat/completions"


@contextmanager
def serving(assistant, **options):
    """``minillava.serve.server.running``, and afterwards: its serving thread has ended."""
    with running(assistant, **options) as server:
        yield server
    assert f"minillava-serve:{server.server_port}" not in {thread.name for thread in threading.enumerate()}


def data_url(image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def user(question: str, *images, image_first: bool = True) -> dict:
    """A user message in OpenAI's form: the question and pictures (data URLs or PIL images) as parts."""
    pictures = [{"type": "image_url", "image_url": {"url": im if isinstance(im, str) else data_url(im)}}
                for im in images]
    text = [{"type": "text", "text": question}]
    return {"role": "user", "content": pictures + text if image_first else text + pictures}


def call(server, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
         timeout: float = 60):
    """One request on a fresh connection -> (status, JSON payload or raw bytes, response headers)."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        payload = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            payload = json.loads(payload)
        return response.status, payload, dict(response.getheaders())
    finally:
        connection.close()


def chat(server, headers: dict | None = None, **body):
    """POST /v1/chat/completions with ``body`` (model filled in)."""
    return call(server, "POST", CHAT, {"model": "assistant", **body}, headers)


def is_openai_error(payload) -> bool:
    """OpenAI's error shape: {"error": {"message": str, "type": str, "param": ..., "code": ...}}."""
    return (isinstance(payload, dict) and set(payload) == {"error"}
            and set(payload["error"]) == {"message", "type", "param", "code"}
            and isinstance(payload["error"]["message"], str) and payload["error"]["message"] != ""
            and isinstance(payload["error"]["type"], str))


def sse_events(raw: bytes) -> list:
    """A server-sent-events body -> its data payloads (JSON decoded, "[DONE]" as the string)."""
    events = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


class Gated:
    """A real assistant whose generations wait at a gate: tests use it to hold the batcher busy
    while requests pile up. ``entered`` is set once a generation reaches the gate."""

    def __init__(self, assistant):
        self.assistant = assistant
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.assistant, name)

    def replies(self, *args, **kwargs):
        self.entered.set()
        self.gate.wait(30)
        yield from self.assistant.replies(*args, **kwargs)
