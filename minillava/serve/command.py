"""``minillava serve ASSISTANT``: serve a saved assistant over OpenAI's chat-completions API.

    minillava serve runs/pipeline/assistant                      (http://127.0.0.1:8000/, Ctrl-C stops)
    minillava serve runs/pipeline/assistant --port 0             (a free port; the URL is printed)
    MINILLAVA_API_KEY=... minillava serve runs/pipeline/assistant --host 0.0.0.0
    minillava serve runs/pipeline/assistant --image-root data/toy/images   (file: image URLs under it)

The API key comes from --api-key or the MINILLAVA_API_KEY environment variable (the variable
keeps it out of shell history and ``ps``); it is never printed. Bad input -- a folder that
holds no assistant, a flag out of range, a port already taken -- is one line on stderr and
exit status 2, as argparse's own errors. Ctrl-C or SIGTERM stops it: requests still waiting
get a 503, and it prints how many batches of each size it generated.
"""

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from minillava.device import pick_device
from minillava.serve.batcher import MAX_BATCH, MAX_QUEUE, WINDOW
from minillava.serve.images import ImageLimits
from minillava.serve.server import make_server

API_KEY_ENV = "MINILLAVA_API_KEY"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _count(low: int, high: int = 2**31 - 1):
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {low} to {high}")
        return value
    return parse


def serve_command(args: argparse.Namespace) -> None:
    def fail(message: str):
        print(f"minillava serve: {message}", file=sys.stderr)
        raise SystemExit(2)

    folder = Path(args.assistant).expanduser()
    if not folder.is_dir():   # checked before loading anything: a typo fails at once
        fail(f"no folder {folder}: give the folder save_assistant wrote (runs/pipeline/assistant after "
             "`minillava pipeline`)")
    if args.image_root is not None and not Path(args.image_root).expanduser().is_dir():
        fail(f"--image-root {args.image_root} is not a folder")
    try:
        device = pick_device(args.device)
    except RuntimeError as err:
        fail(f"--device {args.device}: {err}")
    from minillava.chat import load_assistant   # transformers (seconds): only once the input is good

    try:
        assistant = load_assistant(folder, device)
    except (OSError, ValueError) as err:   # no chat.json, missing or corrupt weights
        fail(f"cannot load an assistant from {folder}: {err}")
    limits = ImageLimits(max_images=args.max_images)
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        server = make_server(assistant, args.host, args.port, api_key=key, image_root=args.image_root,
                             max_queue=args.max_queue, max_batch=args.max_batch,
                             batch_window=args.batch_window_ms / 1000, limits=limits, model_name=folder.name)
    except (OSError, ValueError) as err:   # port taken, unknown host
        fail(f"cannot listen on {args.host}:{args.port}: {err}")
    if args.host not in LOOPBACK and key is None:
        print(f"minillava serve: warning: listening on {args.host} without an API key: anyone who can reach "
              f"this port can use the assistant (set {API_KEY_ENV})", file=sys.stderr)
    print(f"serving {folder.name!r} at {server.url} (web demo there; OpenAI base_url {server.url}v1); "
          f"API key {'required' if key else 'not required'}; Ctrl-C stops", flush=True)
    thread = threading.Thread(target=server.serve_forever, name="minillava-serve", daemon=True)
    thread.start()
    # `kill`, `docker stop` and systemd send SIGTERM: stop as cleanly as on Ctrl-C.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        threading.Event().wait(args.seconds or None)   # None: until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    server.shutdown()
    thread.join()
    print(f"stopped; batches by size: {dict(sorted(server.batcher.batch_sizes.items()))}", flush=True)


def add_parser(sub) -> None:
    """Register `minillava serve` on the main parser's subcommands."""
    p = sub.add_parser("serve", help="serve a saved assistant over OpenAI's chat API (and a web demo) on 127.0.0.1")
    p.add_argument("assistant", help="a folder saved by minillava.chat.save_assistant "
                   "(e.g. runs/pipeline/assistant, written by `minillava pipeline`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 opens it to the network -- set an API key first)")
    p.add_argument("--port", type=_count(0, 65535), default=8000, help="default 8000; 0 picks a free one")
    p.add_argument("--api-key", default=None, help=f"require this key (Authorization: Bearer KEY); "
                   f"default: the {API_KEY_ENV} environment variable, else none")
    p.add_argument("--image-root", default=None, help="a folder whose pictures clients may name with file: "
                   "URLs (default: none, pictures come as data URLs only); never remote URLs")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--max-batch", type=_count(1, 1024), default=MAX_BATCH,
                   help=f"requests answered together at most (default {MAX_BATCH})")
    p.add_argument("--batch-window-ms", type=_count(0, 10_000), default=round(WINDOW * 1000),
                   help=f"how long a batch waits for more requests after its first (default {WINDOW * 1000:g} ms)")
    p.add_argument("--max-queue", type=_count(1), default=MAX_QUEUE,
                   help=f"requests waiting at most; beyond, 429 (default {MAX_QUEUE})")
    p.add_argument("--max-images", type=_count(1, 64), default=ImageLimits.max_images,
                   help=f"pictures per request at most (default {ImageLimits.max_images})")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (default 0: until Ctrl-C)")
    p.set_defaults(func=serve_command)
