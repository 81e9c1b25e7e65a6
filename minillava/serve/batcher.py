"""Micro-batching: requests that arrive together are answered in one batched generation.

Each step of generation reads every weight of the model once, whatever the batch; on a
small batch that reading, not the arithmetic, is the cost. So eight questions answered in
one batch take little longer than one, and a server that answers its requests one by one
wastes most of its machine (``benchmarks/bench_serve.py`` measures how much).

How a batch forms. One thread runs the model (``Batcher``); the HTTP threads only hand it
requests (``submit``) and read back what it sends each request (``Job.events``). The thread
waits for a request; once one is there, it waits ``window`` seconds more (``WINDOW``, 5 ms:
what batching adds, at most, to a lone request's latency) and takes every request that has
arrived by then, up to ``max_batch``. Requests that arrive while a batch is being generated
wait in the queue and form the next batch as soon as that one ends. Requests with different
sampling settings (temperature, top_p) cannot share a generation: they are split into
groups answered one after another. Within a batch each request keeps its own ``max_tokens``
and ``stop`` strings (``Assistant.replies``), and the batch ends when its last answer does,
or when every client still waiting has gone.

This is micro-batching, not the continuous batching of vLLM or SGLang, which also lets a
request join a batch between two of its steps: here a request that arrives mid-batch waits
for that batch to end. Simple, and most of the gain at the concurrency of a course.

The queue is bounded (``max_queue``): a request that finds it full is refused at once with a
429 and a Retry-After, rather than left to wait for minutes.
"""

import queue
import sys
import threading
import time
import traceback
from collections import Counter
from contextlib import closing

from minillava.serve.protocol import APIError, ChatRequest, bad


MAX_QUEUE = 64    # requests waiting at most; past it, 429
MAX_BATCH = 8     # requests generated together at most
WINDOW = 0.005    # seconds a batch waits for more requests after its first: clients that send "at the
                  # same time" are well within it, and a lone request loses little


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down; retry against a running one", "server_error",
                    code="shutting_down")


class Job:
    """One request on its way through the batcher.

    ``events`` is what the HTTP thread reads, in order: ``("start", None)`` once generation
    begins, ``("text", piece)`` as the answer grows, then ``("done", reply)`` (a ``chat.Reply``)
    or ``("error", APIError)``. ``cancel()`` says nobody is listening any more.
    """

    def __init__(self, request: ChatRequest):
        self.request = request
        self.events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.finished = False   # set by the batcher thread only

    def cancel(self) -> None:
        self.cancelled.set()


class Batcher:
    """The one thread that runs the model, fed by a bounded queue (see the module doc)."""

    def __init__(self, assistant, max_queue: int = MAX_QUEUE, max_batch: int = MAX_BATCH, window: float = WINDOW):
        if max_queue < 1 or max_batch < 1 or window < 0:
            raise ValueError(f"need max_queue >= 1, max_batch >= 1 and window >= 0; got {max_queue}, "
                             f"{max_batch}, {window}")
        self.assistant, self.max_batch, self.window = assistant, max_batch, window
        self.queue: queue.Queue = queue.Queue(max_queue)
        self.batch_sizes = Counter()   # batch size -> how many batches had it (read by tests, the benchmark)
        self._lock = threading.Lock()   # submit vs stop: no request slips into the queue after the last look
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="minillava-batcher", daemon=True)

    def start(self) -> "Batcher":
        self._thread.start()
        return self

    def submit(self, request: ChatRequest) -> Job:
        """Queue a request; APIError 429 when the queue is full, 503 once stopping."""
        job = Job(request)
        with self._lock:
            if self._stopping.is_set():
                raise shutting_down()
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                raise APIError(429, f"the server is busy: {self.queue.maxsize} requests are waiting already; "
                               "retry in a moment", "rate_limit_error", code="queue_full",
                               headers={"Retry-After": "1"}) from None
        return job

    def stop(self) -> None:
        """Finish the step under way, then answer every unfinished request with a 503."""
        with self._lock:
            self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        while not self.queue.empty():
            self.queue.get_nowait().events.put(("error", shutting_down()))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self.queue.get(timeout=0.1)   # wakes up now and then to notice stop()
            except queue.Empty:
                continue
            groups: dict[tuple, list[Job]] = {}
            for job in self._gather(first):
                groups.setdefault(job.request.sampling, []).append(job)
            for jobs in groups.values():
                self._answer(jobs)

    def _gather(self, first: Job) -> list[Job]:
        """The first request and those that arrive within the window, up to max_batch, still wanted."""
        batch, deadline = [first], time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:   # past the deadline, timeout 0 still takes what is queued already
                batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return [job for job in batch if not job.cancelled.is_set()]

    def _admit(self, job: Job) -> bool:
        """Check the conversation against the template and the context; False (and a 400 sent) if it fails."""
        request, assistant = job.request, self.assistant
        try:
            length = assistant.prompt_length(request.messages, request.images)
        except ValueError as err:   # the template refuses it: roles out of order, a system prompt it cannot hold
            return self._refuse(job, bad(f"messages: {err}", "messages", "invalid_conversation"))
        context, limit = assistant.context_length, request.max_tokens or assistant.max_new_tokens
        if context is not None and length + limit > context:
            if request.max_tokens is not None or length >= context:
                return self._refuse(job, bad(
                    f"the conversation takes {length} positions (text and pictures) and the answer up to {limit} "
                    f"more, over the model's context of {context}: shorten the conversation, send fewer "
                    "pictures or lower max_tokens", "messages", "context_length_exceeded"))
            request.max_tokens = context - length   # the default length, cut to what fits
        return True

    @staticmethod
    def _refuse(job: Job, error: APIError) -> bool:
        job.finished = True
        job.events.put(("error", error))
        return False

    def _answer(self, jobs: list[Job]) -> None:
        """Generate the answers of one group in one batched generation, sending each piece as it comes."""
        error = shutting_down()
        try:
            jobs = [job for job in jobs if self._admit(job)]
            if not jobs:
                return
            self.batch_sizes[len(jobs)] += 1
            requests = [job.request for job in jobs]
            for job in jobs:
                job.events.put(("start", None))
            steps = self.assistant.replies(
                [r.messages for r in requests], [image for r in requests for image in r.images],
                temperature=requests[0].temperature, top_p=requests[0].top_p,
                max_new_tokens=[r.max_tokens or self.assistant.max_new_tokens for r in requests],
                stops=[r.stop for r in requests])
            with closing(steps):
                for replies in steps:
                    for job, reply in zip(jobs, replies):
                        if reply.new_text and not job.finished:
                            job.events.put(("text", reply.new_text))
                        if reply.finish_reason and not job.finished:
                            job.finished = True
                            job.events.put(("done", reply))
                    if self._stopping.is_set() or all(job.finished or job.cancelled.is_set() for job in jobs):
                        break
        except Exception:   # a bug, not a bad request (those were refused above): say so, keep serving
            print("minillava serve: generation failed for a batch:", file=sys.stderr)
            traceback.print_exc()
            error = APIError(500, "generation failed on the server (its log says why)", "server_error")
        for job in jobs:
            if not job.finished:
                job.events.put(("error", error))
