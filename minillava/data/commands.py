"""The ``minillava data`` command line: generate instruction data, serve the rule teacher.

    minillava data generate --teacher rule --seeds 0:1000 --out data/toy
    minillava data generate --teacher openai --model gpt-4o-mini --seeds 0:1000 --out data/gpt --dry-run
    minillava data generate --teacher openai --model gpt-4o-mini --seeds 0:1000 --out data/gpt --concurrency 8
    minillava data generate ... --batch-requests requests.jsonl      (write a Batch API file, send nothing)
    minillava data generate ... --batch-results results.jsonl        (ingest a batch's answers, then run)
    minillava data serve --port 0                                    (prints its URL; Ctrl-C stops it)

The OpenAI teacher reads its key from OPENAI_API_KEY (or --api-key-env); there is no
option to pass a key, so it never lands in shell history, logs or notebooks.
"""

import argparse
import sys
import threading
from pathlib import Path

from minillava.data import engine
from minillava.data.batch_api import ingest_batch_results, write_batch_requests
from minillava.data.cache import Cache
from minillava.data.prompts import KINDS
from minillava.data.server import Faults, TeacherServer
from minillava.data.teachers import OpenAITeacher, RuleTeacher


def parse_seeds(text: str) -> range | list[int]:
    """'0:1000' -> range(0, 1000); '3,5,8' -> [3, 5, 8]; '7' -> [7]."""
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            if start >= stop:
                raise ValueError
            return range(start, stop)
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --seeds {text!r}: use START:STOP (e.g. 0:1000) or a list "
                                         f"like 3,5,8") from None


def _params(args) -> dict:
    """Sampling parameters sent with every request (they are part of the cache key)."""
    params = {}
    if args.teacher == "openai":
        params["max_tokens"] = args.max_tokens
        if args.temperature is not None:
            params["temperature"] = args.temperature
    if args.json_mode:
        params["response_format"] = {"type": "json_object"}
    return params


def generate_command(args) -> None:
    if args.teacher == "openai" and not args.model:
        sys.exit("--teacher openai needs --model (e.g. gpt-4o-mini, or the name a local server serves)")
    model = args.model if args.teacher == "openai" else RuleTeacher.model
    prices = (args.price_in, args.price_out) if args.price_in is not None and args.price_out is not None else None
    seeds = list(args.seeds)
    items = [engine.toy_item(seed, args.variant) for seed in seeds]
    requests = engine.make_requests(items, args.kinds, model, _params(args))
    cache = Cache(Path(args.out) / "cache.jsonl")

    if args.dry_run:
        p = engine.plan(requests, cache, prices)
        cost = "unknown (pass --price-in/--price-out)" if p["cost_usd"] is None else f"~${p['cost_usd']:.4f}"
        bound = "" if p["max_cost_usd"] is None else f", at most ${p['max_cost_usd']:.4f} (max_tokens)"
        print(f"dry run, nothing sent: {p['requests']} requests, {p['cached']} cached, {p['to_send']} to send; "
              f"~{p['prompt_tokens']} prompt + ~{p['completion_tokens']} completion tokens; "
              f"estimated cost {cost}{bound}")
        return
    if args.batch_requests:
        n = write_batch_requests(requests, args.batch_requests, cache)
        print(f"wrote {n} Batch API requests to {args.batch_requests} (nothing sent)")
        return
    if args.batch_results:
        outcome = ingest_batch_results(args.batch_results, requests, cache)
        print(f"batch results: {dict(outcome)}")

    teacher = RuleTeacher() if args.teacher == "rule" else OpenAITeacher(
        model, args.base_url, api_key_env=args.api_key_env, timeout=args.timeout,
        max_attempts=args.max_attempts, prices=prices)
    report = engine.generate(seeds, args.out, teacher, kinds=args.kinds, variant=args.variant,
                             params=_params(args), concurrency=args.concurrency, progress=True)
    print(report.summary())
    print(f"wrote {args.out}/llava_instruct.json, llava_captions.json, report.json, images/")


def serve_command(args) -> None:
    faults = Faults(rate_limit=args.fail_429, server_error=args.fail_500, stall=args.stall,
                    malformed=args.malformed, stall_seconds=args.stall_seconds, latency=args.latency,
                    seed=args.seed)
    judge = args.make_judge() if args.make_judge else None
    with TeacherServer(args.port, faults, judge) as server:
        print(f"serving the rule teacher at {server.url} (model {server.model!r}); "
              f"OPENAI_BASE_URL={server.url} OPENAI_API_KEY=local", flush=True)
        try:
            threading.Event().wait(args.seconds or None)   # None: until Ctrl-C
        except KeyboardInterrupt:
            pass
        print(f"served: {dict(server.stats)}", flush=True)


def add_parser(sub, make_judge=None) -> None:
    """Register `minillava data ...` on the main parser's subcommands.

    make_judge: None, or a function returning the judge that `data serve` also answers judge
    prompts with (``minillava.cli`` passes ``eval.judges.RuleJudge``: data does not import eval).
    """
    data = sub.add_parser("data", help="generate instruction data with a teacher; serve the rule teacher")
    commands = data.add_subparsers(dest="data_command", required=True)

    g = commands.add_parser("generate", help="toy scenes -> images, LLaVA JSON and a report")
    g.add_argument("--teacher", choices=("rule", "openai"), default="rule")
    g.add_argument("--seeds", type=parse_seeds, default=range(0, 100), help="START:STOP or a,b,c (default 0:100)")
    g.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    g.add_argument("--variant", choices=("base", "fine"), default="base")
    g.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS),
                   help=f"comma-separated, from {','.join(KINDS)}")
    g.add_argument("--model", help="model name for --teacher openai")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL or OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    g.add_argument("--max-attempts", type=int, default=5, help="attempts per request (429/5xx/timeouts retried)")
    g.add_argument("--max-tokens", type=int, default=1024, help="completion limit per request")
    g.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    g.add_argument("--json-mode", action="store_true", help='ask for JSON replies (response_format json_object)')
    g.add_argument("--price-in", type=float, help="USD per million prompt tokens (for the cost estimate)")
    g.add_argument("--price-out", type=float, help="USD per million completion tokens")
    g.add_argument("--dry-run", action="store_true", help="print request count and estimated cost; send nothing")
    g.add_argument("--batch-requests", help="write the Batch API requests JSONL here and stop")
    g.add_argument("--batch-results", help="ingest a Batch API results file into the cache first")
    g.set_defaults(func=generate_command)

    s = commands.add_parser("serve", help="an OpenAI-compatible endpoint on 127.0.0.1 serving the rule teacher")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port")
    s.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    s.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    s.add_argument("--fail-429", type=float, default=0.0, help="probability of a 429 per attempt")
    s.add_argument("--fail-500", type=float, default=0.0, help="probability of a 500 per attempt")
    s.add_argument("--stall", type=float, default=0.0, help="probability of holding an answer back")
    s.add_argument("--stall-seconds", type=float, default=30.0, help="how long a stalled answer is held")
    s.add_argument("--malformed", type=float, default=0.0, help="probability of a cut-off reply")
    s.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    s.set_defaults(func=serve_command, make_judge=make_judge)
