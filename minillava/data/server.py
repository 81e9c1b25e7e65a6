"""A local OpenAI-compatible endpoint that serves the rule teacher, faults on demand.

To test a GPT-4 data run without paying for one, point the real ``openai`` client at
this server: it speaks the chat-completions protocol (``GET /v1/models``, ``POST
/v1/chat/completions`` with the usual response shape and token usage), and it answers
like GPT-4 would -- from the text alone: it reads the scene back out of the symbolic
context in the prompt and lets ``RuleTeacher`` write the reply.

Real endpoints misbehave, so this one can too (``Faults``): rate limits (429), server
errors (500), a response held back past the client's timeout, or a 200 whose text is
cut off mid-reply. Faults are drawn per attempt from a seeded generator, and one prompt
gets at most ``max_per_prompt`` of them, so a client that retries enough always gets
through and tests stay deterministic. ``stats`` counts every request and every fault.

    with TeacherServer(faults=Faults(rate_limit=0.2)) as server:
        teacher = OpenAITeacher(server.model, base_url=server.url)

Judge mode: given a ``judge`` -- any object with a ``system_prompt`` and ``reply(messages)
-> text``, such as ``minillava.eval.judges.RuleJudge()`` -- a request whose system message is
the judge's own is answered by it, so an LLM judge client can be tested offline, faults and
all. The judge comes from outside because evaluation builds on the data engine, not the
other way round: this module knows no judge.

    with TeacherServer(judge=RuleJudge()) as server:
        judge = OpenAIJudge(server.model, base_url=server.url)

It binds to 127.0.0.1 only, uses the standard library only, and never logs requests
(their headers carry the API key).
"""

import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minillava.data.teachers import RuleTeacher, estimate_tokens, is_json_mode, messages_tokens

# A reply cut off mid-way: no question has an answer, it is not JSON, not a description.
MALFORMED_TEXT = "Question:\nWhat colour is the"


@dataclass(frozen=True)
class Faults:
    """Fault injection: probabilities per attempt, checked in this order."""
    rate_limit: float = 0.0     # answer 429
    server_error: float = 0.0   # answer 500
    stall: float = 0.0          # hold the answer for stall_seconds (make it past the client's timeout)
    malformed: float = 0.0      # answer 200 with MALFORMED_TEXT
    stall_seconds: float = 30.0
    max_per_prompt: int = 2     # no prompt gets more faults than this, so retries get through
    latency: float = 0.0        # seconds added to every answer, like a real model's generation time
    retry_after: float | None = None   # Retry-After header of a 429, in seconds
    seed: int = 0

    def __post_init__(self):
        for name in ("rate_limit", "server_error", "stall", "malformed"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"fault probability {name}={getattr(self, name)} must be between 0 and 1")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: the openai client reuses connections
    # Headers and body go out as separate small writes; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK (~40 ms per request on loopback).
    disable_nagle_algorithm = True
    server: "TeacherServer"

    def log_message(self, *args):   # silent: request lines are noise, headers hold API keys
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up (timed out on a stalled answer): nothing to deliver

    def _error(self, status: int, message: str, kind: str, headers: dict | None = None):
        self._send(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model",
                                                          "created": 0, "owned_by": "minillava"}]})
        else:
            self._error(404, f"no route {self.path}", "invalid_request_error")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}", "invalid_request_error")
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return self._error(400, "body must be JSON with a 'messages' list", "invalid_request_error")
        self.server.answer(self, body, messages)


class TeacherServer(ThreadingHTTPServer):
    """The rule teacher over HTTP on 127.0.0.1 (port 0: a free one). Use as a context manager.

    judge: None, or an object with ``system_prompt`` and ``reply(messages) -> text`` that
    answers the requests carrying that system message (see the module doc).
    """

    daemon_threads = True      # a stalled handler must not keep the process alive
    block_on_close = False     # ... nor make stop() wait for it
    request_queue_size = 128   # listen backlog: at 5 (the default) bursts of new connections get dropped
    model = RuleTeacher.model

    def __init__(self, port: int = 0, faults: Faults | None = None, judge=None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.faults = faults or Faults()
        self.teacher = RuleTeacher()
        self.judge = judge
        self.stats = Counter()
        self._lock = threading.Lock()
        self._attempts = Counter()   # per prompt: attempts seen, faults given
        self._faulted = Counter()
        self._stopping = threading.Event()
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def _draw_fault(self, key: str) -> str | None:
        """The fault for this attempt of this prompt, or None; deterministic given the seed."""
        f = self.faults
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
            if self._faulted[key] >= f.max_per_prompt:
                return None
            rng = random.Random(f"{f.seed}-{key}-{attempt}")
            for name in ("rate_limit", "server_error", "stall", "malformed"):
                if rng.random() < getattr(f, name):
                    self._faulted[key] += 1
                    self.stats[name] += 1
                    return name
        return None

    def answer(self, handler: _Handler, body: dict, messages: list) -> None:
        with self._lock:
            self.stats["requests"] += 1
        key = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        fault = self._draw_fault(key)
        if fault == "rate_limit":
            headers = {} if self.faults.retry_after is None else {"Retry-After": str(self.faults.retry_after)}
            return handler._error(429, "rate limit reached (injected fault)", "requests", headers)
        if fault == "server_error":
            return handler._error(500, "internal server error (injected fault)", "server_error")
        if fault == "stall" and self._stopping.wait(self.faults.stall_seconds):
            return   # shutting down: drop the stalled answer
        if self.faults.latency:
            time.sleep(self.faults.latency)
        if fault == "malformed":
            text = MALFORMED_TEXT
        else:
            try:
                text = self._reply(messages, body)
            except ValueError as err:
                with self._lock:
                    self.stats["rejected"] += 1
                return handler._error(400, str(err), "invalid_request_error")
        with self._lock:
            self.stats["answered"] += 1
        prompt, completion = messages_tokens(messages), estimate_tokens(text)
        handler._send(200, {
            "id": f"chatcmpl-{key[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})

    def _reply(self, messages: list, body: dict) -> str:
        """The judge's reply to a judge prompt, the teacher's to anything else (ValueError: neither)."""
        if self.judge is not None and messages and messages[0].get("content") == self.judge.system_prompt:
            return self.judge.reply(messages)
        return self.teacher.answer(messages, is_json_mode(body))

    def start(self) -> "TeacherServer":
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="minillava-teacher-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled handlers, close the socket."""
        self._stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
