"""``minillava serve``: a saved assistant behind OpenAI's chat-completions API, over HTTP.

Every serving stack people use (vLLM, SGLang, llama.cpp's server, Ollama) speaks this API, so
every client does too -- the ``openai`` package that chapter 2 used to generate data talks to
this server unchanged:

    client = OpenAI(base_url=server.url + "v1", api_key="unused")
    client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "What is in the image?"}]}])

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (``stream: true`` answers in
server-sent events, one ``chat.completion.chunk`` per piece of text, then ``data: [DONE]``),
``GET /v1/toy_scene`` (a toy picture for the web demo, ``demo.py``), and the demo page itself:
``GET /`` and ``GET /static/<file>`` from ``static/``.

Safe by default: it listens on 127.0.0.1 only unless told otherwise; with an API key every
``/v1/`` route wants ``Authorization: Bearer <key>``, compared in constant time
(``hmac.compare_digest``: how long a wrong key takes to refuse says nothing about the right
one); nothing is logged (headers hold the key, bodies the users' pictures). A bad request is
a 4xx in OpenAI's error shape (``protocol.py``); slow or vanished clients cost one thread for
at most ``io_timeout`` seconds, and a client that leaves mid-answer stops its generation.
The model runs in one thread (``batcher.py``); the standard library's threading HTTP server
gives each connection a thread of its own, which only parses, waits and writes.
"""

import hmac
import json
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from minillava.serve.batcher import MAX_BATCH, MAX_QUEUE, WINDOW, Batcher, Job
from minillava.serve.demo import TOY_SCENE_PATH, toy_scene
from minillava.serve.images import ImageLimits
from minillava.serve.protocol import (APIError, ChatRequest, bad, chunk, completion, error_body, model_list, new_id,
                                      parse_json, parse_request, usage)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")   # one plain file name: no folders, nothing hidden
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                 ".ico": "image/x-icon", ".json": "application/json"}
CHAT_PATH = "/v1/chat/completions"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: the openai client reuses its connections
    default_request_version = "HTTP/1.0"   # a garbled request line still gets a status line (0.9 sends a bare body)
    # Headers and body go out as separate small writes; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK (~40 ms per request on loopback).
    disable_nagle_algorithm = True
    server: "ChatServer"

    def setup(self):
        self.timeout = self.server.io_timeout   # a client silent this long (not reading, not writing) is dropped
        super().setup()

    def log_message(self, *args):   # silent: headers hold the API key, bodies the users' pictures
        pass

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a malformed request line, headers too long, an
        unknown method) in OpenAI's error shape too."""
        self.close_connection = True
        self._json(code, error_body(message or HTTPStatus(code).phrase, code=HTTPStatus(code).name.lower()))

    def _json(self, status: int, payload: dict, headers: dict | None = None, content_type="application/json"):
        self._send(status, json.dumps(payload).encode(), content_type, headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._handle(self._get)

    def do_POST(self):
        self._handle(self._post)

    def _handle(self, route) -> None:
        """Run a route; refusals become their 4xx, vanished clients a closed connection, bugs a 500."""
        try:
            try:
                route()
            except APIError as err:
                self._json(err.status, err.body(), err.headers)
        except (ConnectionError, TimeoutError):   # the client left, or went silent past io_timeout
            self.close_connection = True
        except Exception:
            print(f"minillava serve: internal error on {self.command} {urlsplit(self.path).path}:", file=sys.stderr)
            traceback.print_exc()
            self.close_connection = True
            try:
                self._json(500, error_body("internal server error (the server's log says why)", "server_error"))
            except OSError:
                pass

    def _check_key(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        # Constant time: a wrong key is refused as fast however much of it is right.
        if not (hmac.compare_digest(given.strip().encode(), key.encode()) and scheme.lower() == "bearer"):
            raise APIError(401, "missing or wrong API key: send the header Authorization: Bearer <key>, the key the "
                           "server was started with (--api-key or MINILLAVA_API_KEY)", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    def _get(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path.startswith("/v1/"):
            self._check_key()
        name = self.server.model_name
        if path == "/v1/models":
            return self._json(200, model_list(name))
        if path == f"/v1/models/{name}":
            return self._json(200, model_list(name)["data"][0])
        if path == TOY_SCENE_PATH:
            try:
                return self._json(200, toy_scene(parse_qs(url.query).get("seed", [None])[0]))
            except ValueError as err:
                raise bad(str(err), "seed", "invalid_value") from None
        raise APIError(404, f"no route GET {path}: the API is GET /v1/models and POST {CHAT_PATH}", code="not_found")

    def _static(self, name: str) -> None:
        """A file of the web demo's folder; nothing outside it, nothing but plain file names."""
        file = self.server.static_dir / name
        if not STATIC_NAME.fullmatch(name) or not file.is_file():
            raise APIError(404, f"no file {name!r} in the web demo's folder", code="not_found")
        self._send(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"),
                   {"Cache-Control": "no-cache"})

    def _read_body(self) -> bytes:
        """The request body, within the size limit and the time limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise APIError(411, "send the body with a Content-Length (chunked request bodies are not read)",
                           code="length_required")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        limit = self.server.limits.max_body_bytes
        if not 0 <= length <= limit:
            raise APIError(413 if length > limit else 411,
                           f"Content-Length {self.headers.get('Content-Length')!r}: send a body of at most "
                           f"{limit} bytes with its length (fewer or smaller pictures)", code="invalid_body_length")
        chunks, left, deadline = [], length, time.monotonic() + self.server.io_timeout
        while left:
            data = self.rfile.read1(min(left, 1 << 16))
            if not data:
                raise ConnectionError("the client closed the connection in the middle of its request")
            chunks.append(data)
            left -= len(data)
            if left and time.monotonic() > deadline:   # a trickle of bytes must not hold a thread for ever
                raise APIError(408, f"the request body took over {self.server.io_timeout:g} s to arrive",
                               code="request_timeout")
        return b"".join(chunks)

    def _post(self) -> None:
        # Until the body is read, a refusal closes the connection: the unread body would be
        # taken for the next request on it.
        keep_alive, self.close_connection = not self.close_connection, True
        path = urlsplit(self.path).path.rstrip("/")
        if path.startswith("/v1/"):
            self._check_key()
        if path != CHAT_PATH:
            raise APIError(404, f"no route POST {path}: chat completions are POST {CHAT_PATH}", code="not_found")
        raw = self._read_body()
        self.close_connection = not keep_alive
        server = self.server
        request = parse_request(parse_json(raw), server.limits, server.image_root)
        job = server.batcher.submit(request)
        try:
            self._stream(job, request) if request.stream else self._complete(job)
        finally:
            job.cancel()   # answered, refused or abandoned: nobody reads this job any more

    def _complete(self, job: Job) -> None:
        while True:
            kind, value = job.events.get()
            if kind == "error":
                raise value
            if kind == "done":
                return self._json(200, completion(new_id(), self.server.model_name, value))

    def _stream(self, job: Job, request: ChatRequest) -> None:
        """Server-sent events: a chunk per piece of text, the finish reason, usage if asked, [DONE]."""
        kind, value = job.events.get()   # "start", or an error: refused before anything was sent
        if kind == "error":
            raise value
        self.close_connection = True     # the stream ends with the connection (no length known ahead)
        self.send_response(200)
        for name, header in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                             ("Connection", "close"), ("X-Accel-Buffering", "no")):
            self.send_header(name, header)
        self.end_headers()
        answer, model = new_id(), self.server.model_name
        self._event(chunk(answer, model, {"role": "assistant", "content": ""}))
        while True:
            kind, value = job.events.get()
            if kind == "text":
                self._event(chunk(answer, model, {"content": value}))
            elif kind == "done":
                self._event(chunk(answer, model, {}, value.finish_reason))
                if request.include_usage:
                    self._event(chunk(answer, model, usage_counts=usage(value.prompt_tokens, value.completion_tokens)))
                break
            elif kind == "error":   # after the 200 an error can only travel as an event (clients raise it)
                return self._event(value.body())
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")


class ChatServer(ThreadingHTTPServer):
    """The HTTP server; build it with ``make_server``."""

    daemon_threads = True    # a stuck connection never keeps the interpreter alive ...
    block_on_close = True    # ... yet server_close() joins every handler thread (shutdown() ends them first)
    request_queue_size = 128   # listen backlog: at 5 (the default) bursts of new connections get dropped

    def __init__(self, assistant, host: str, port: int, batcher: Batcher, api_key: str | None,
                 image_root: Path | None, limits: ImageLimits, model_name: str, static_dir: Path, io_timeout: float,
                 max_connections: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.assistant, self.batcher, self.api_key = assistant, batcher, api_key
        self.image_root, self.limits, self.model_name = image_root, limits, model_name
        self.static_dir, self.io_timeout, self.max_connections = Path(static_dir), io_timeout, max_connections
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        """The root URL (the web demo); OpenAI clients take ``url + "v1"`` as their base_url."""
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def process_request(self, request, client_address):
        """A thread for the new connection, or, past max_connections, a 503 and no thread."""
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
        if not full:
            return super().process_request(request, client_address)
        body = json.dumps(error_body(f"the server has {self.max_connections} connections open already; retry in a "
                                     "moment", "server_error", code="too_many_connections")).encode()
        try:   # a few hundred bytes into an empty socket buffer: does not block the accepting thread
            request.settimeout(1)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):   # nothing about the request leaks into logs
        print("minillava serve: a connection failed:", file=sys.stderr)
        traceback.print_exc()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving.set()
        super().serve_forever(poll_interval)

    def shutdown(self) -> None:
        """Stop accepting, stop the batcher (requests still waiting get a 503), close every open
        connection and join every thread. Call it from another thread than serve_forever's."""
        if self._serving.is_set():
            super().shutdown()   # returns once serve_forever has
        self.batcher.stop()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:   # wakes handlers blocked on a silent client
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()


def make_server(assistant, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                image_root: str | Path | None = None, max_queue: int = MAX_QUEUE, max_batch: int = MAX_BATCH,
                batch_window: float = WINDOW, limits: ImageLimits | None = None, model_name: str | None = None,
                static_dir: str | Path = STATIC_DIR, io_timeout: float = 30.0,
                max_connections: int = 256) -> ChatServer:
    """An OpenAI-compatible server for ``assistant`` (a ``minillava.chat.Assistant``), bound and
    with its batcher running; ``serve_forever()`` serves (in a thread if you like), ``shutdown()`` stops.

    port 0 picks a free port (``server.url`` says which). api_key: None serves anyone who can
    reach the port. image_root: the folder whose files ``file:`` image URLs may name (None:
    data URLs only). max_queue / max_batch / batch_window: see ``batcher.py``. model_name: what
    ``/v1/models`` lists (default ``assistant.name``). io_timeout: seconds a client may stay silent
    (and the most its request body may take). max_connections: open connections at most (one
    thread each); past it a new one gets a 503.
    """
    if image_root is not None:
        image_root = Path(image_root).expanduser().resolve()
        if not image_root.is_dir():
            raise ValueError(f"image root {image_root} is not a folder: give the folder whose pictures "
                             "clients may name")
    if io_timeout <= 0 or max_connections < 1:
        raise ValueError(f"need io_timeout > 0 and max_connections >= 1, got {io_timeout} and {max_connections}")
    batcher = Batcher(assistant, max_queue, max_batch, batch_window)
    server = ChatServer(assistant, host, port, batcher, api_key or None, image_root, limits or ImageLimits(),
                        model_name or assistant.name, Path(static_dir), io_timeout, max_connections)
    batcher.start()
    return server


@contextmanager
def running(assistant, **options) -> Iterator[ChatServer]:
    """``make_server(assistant, **options)`` serving in a background thread for a ``with`` block::

        with running(assistant) as server:   # 127.0.0.1, a free port
            client = OpenAI(base_url=server.url + "v1", api_key="unused")

    On the way out the server shuts down and its thread is joined.
    """
    server = make_server(assistant, **options)
    thread = threading.Thread(target=server.serve_forever, name=f"minillava-serve:{server.server_port}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(30)
