"""Data-engine throughput against the local OpenAI-compatible server, and a rerun from cache.

Starts ``minillava data serve`` in its own process (so server and client do not share
a GIL), sends the same number of requests through the real ``openai`` client at each
concurrency, and prints requests/s. --latency adds that many seconds to every answer,
like a real model's generation time: that is where concurrency pays off. Finally the
last run is repeated from its cache, which must send 0 requests.

    python benchmarks/bench_engine.py [--requests 150] [--latency 0.05] [--concurrency 1 4 16]
"""

import argparse
import os
import subprocess
import sys
import time

from minillava.data import engine
from minillava.data.cache import Cache
from minillava.data.teachers import OpenAITeacher

KEY_ENV = "MINILLAVA_BENCH_KEY"   # a dummy key for the local server; a real key is never sent to it


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "minillava.cli", "data", "serve", "--port", "0",
                             "--latency", str(latency), "--seconds", "600"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()   # "serving the rule teacher at http://127.0.0.1:PORT/v1 ..."
    url = next((w for w in line.split() if w.startswith("http://127.0.0.1:")), None)
    if url is None:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150, help="requests per concurrency setting (x3 kinds)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server adds per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    os.environ[KEY_ENV] = "local"

    proc, url = start_server(args.latency)
    try:
        seeds = range(args.requests // 3)
        requests = engine.make_requests([engine.toy_item(s) for s in seeds], model="minillava-rules")
        print(f"{len(requests)} requests per run, server latency {args.latency * 1000:.0f} ms, {url}")
        for concurrency in args.concurrency:
            cache = Cache()   # fresh: every request goes over the wire
            teacher = OpenAITeacher("minillava-rules", url, api_key_env=KEY_ENV)
            start = time.perf_counter()
            _, report = engine.run(requests, teacher, cache, concurrency=concurrency)
            seconds = time.perf_counter() - start
            assert report.sent == len(requests) and not report.failed, report.summary()
            print(f"concurrency {concurrency:>3}: {report.sent / seconds:8.1f} requests/s ({seconds:.2f} s)")
        start = time.perf_counter()
        _, report = engine.run(requests, teacher, cache, concurrency=args.concurrency[-1])
        print(f"rerun from cache: {report.sent} requests sent, {report.cache_hits} cache hits, "
              f"{time.perf_counter() - start:.2f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
