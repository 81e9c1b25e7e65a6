"""`minillava serve` throughput and latency: micro-batching against one request at a time.

Starts ``minillava serve`` in its own process (server and clients do not share a GIL) for each
row: batched (``--max-batch 32``, the default window of 5 ms) or one request at a time
(``--max-batch 1``). At each concurrency, that many clients send the same requests (toy
scenes and questions, greedy, up to --max-tokens each) over keep-alive connections, each
sending its next request when its answer arrives. Prints requests/s, p50/p95 latency and the
server's mean batch size as a markdown table. The two servers of a concurrency run side by side
and take turns over a few rounds of the requests, so that on a shared machine the load, which
comes and goes, falls on both alike (the load average is printed too).

What to expect: at concurrency 1 there is nothing to batch with, and the batched server pays
its window (5 ms) on every request; from 8 on, a batch answers many requests for little more
than the cost of one, so requests/s grow and latency stops growing with the queue.

The assistant: the folder given with --assistant (e.g. ``runs/pipeline/assistant`` after
``minillava pipeline``), or by default one built here from the shipped toy backbones with a
fresh projector (its answers are fluent toy English, so they end at the template's ``</s>``
like a trained one's).

    python benchmarks/bench_serve.py [--assistant DIR] [--requests 128] [--concurrency 1 8 32] [--device cpu]
"""

import argparse
import ast
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from minillava.toyworld import make_scene, render

QUESTIONS = ["Describe the image.", "What is in the image?", "What colour is the shape?", "How many shapes are there?"]
MODES = {"one at a time": ["--max-batch", "1"], "micro-batched": ["--max-batch", "32"]}


def build_assistant(folder: Path) -> Path:
    from minillava.backbones.zoo import pretrained_model
    from minillava.chat import Assistant, save_assistant
    from minillava.image import ImageProcessor

    model, tokenizer = pretrained_model()   # toy-vision + toy-lm, a fresh projector
    return save_assistant(Assistant(model, tokenizer, ImageProcessor("pad", 64), max_new_tokens=32), folder)


def bodies(n: int, max_tokens: int) -> list[bytes]:
    """n chat requests: a toy scene (as a data URL) and a question each."""
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        render(make_scene(i)).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTIONS[i % 4]}]
        out.append(json.dumps({"model": "assistant", "messages": [{"role": "user", "content": content}],
                               "max_tokens": max_tokens}).encode())
    return out


def start(folder: Path, mode: list[str], device: str | None) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "minillava.cli", "serve", str(folder), "--port", "0", "--max-queue", "256",
               *mode, *(["--device", device] if device else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()   # "serving 'NAME' at http://127.0.0.1:PORT/ ..."
    if " at http://127.0.0.1:" not in line:
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, int(line.split(" at http://127.0.0.1:")[1].split("/")[0])


def run(port: int, requests: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Send every request with ``concurrency`` clients; (seconds in all, each request's latency)."""
    todo, latencies, lock = list(reversed(requests)), [], threading.Lock()

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        connection.connect()
        # http.client sends a request's headers and body in two writes: with Nagle's algorithm on,
        # the body waits for the server's delayed ACK, up to 40 ms a request on a kept-alive connection.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            with lock:
                if not todo:
                    break
                body = todo.pop()
            sent = time.perf_counter()
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
            with lock:
                latencies.append(time.perf_counter() - sent)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies


def compare(folder: Path, requests: list[bytes], warmup: list[bytes], concurrency: int, device: str | None):
    """Both servers side by side, taking turns over a few rounds of the requests (so that a shared
    machine's load, which comes and goes, falls on both alike); per server: (name, seconds in all,
    latencies, the server's batch sizes {size: count})."""
    servers = {mode: start(folder, flags, device) for mode, flags in MODES.items()}
    rounds = max(1, min(4, len(requests) // concurrency))
    seconds, latencies = dict.fromkeys(MODES, 0.0), {mode: [] for mode in MODES}
    try:
        for _, port in servers.values():
            run(port, warmup, 1)   # first calls pay for lazy initialisation
        for r in range(rounds):
            for mode, (_, port) in servers.items():
                took, each = run(port, requests[r::rounds], concurrency)
                seconds[mode] += took
                latencies[mode] += each
    finally:
        for process, _ in servers.values():
            process.terminate()   # SIGTERM: it stops as on Ctrl-C and prints its batch sizes
    for mode, (process, _) in servers.items():
        out = process.communicate(timeout=60)[0]
        sizes = next((ast.literal_eval(line.split("batches by size: ")[1]) for line in out.splitlines()
                      if "batches by size: " in line), None)
        if sizes:
            sizes[1] -= len(warmup)   # the warm-up's batches of one are not the row's
        yield mode, seconds[mode], latencies[mode], sizes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]   # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assistant", type=Path, default=None, help="a saved assistant (default: a toy one)")
    parser.add_argument("--requests", type=int, default=128, help="requests per row (default 128)")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer length limit per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default=None, help="the server's device (default: the best available)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.assistant or build_assistant(Path(scratch) / "assistant")
        requests, warmup = bodies(args.requests, args.max_tokens), bodies(2, args.max_tokens)
        print(f"{args.requests} requests per row, max_tokens {args.max_tokens}, assistant {folder}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
        print("| concurrency | server | requests/s | p50 latency (ms) | p95 latency (ms) | mean batch |")
        print("|---:|---|---:|---:|---:|---:|")
        for concurrency in args.concurrency:
            for mode, seconds, latencies, sizes in compare(folder, requests, warmup, concurrency, args.device):
                batch = "" if not sizes else f"{sum(k * v for k, v in sizes.items()) / sum(sizes.values()):.1f}"
                print(f"| {concurrency} | {mode} | {len(latencies) / seconds:.1f} | "
                      f"{statistics.median(latencies) * 1000:.0f} | {percentile(latencies, 0.95) * 1000:.0f} | "
                      f"{batch} |", flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
