"""The cost of a groundtune front: `groundtune serve --backend URL` with a second `groundtune serve` on loopback as
the backend, against the same requests sent straight to that backend, in one run.

Both servers are processes of their own (as deployed); the front loads only the tokenizer. 8 streaming clients
(the official openai client) send grounded prompts from the shipped doc2dial validation dialogues to
/v1/completions, greedy, `--max-tokens` new tokens each. The runs alternate direct, front, direct, front ...
(`--rounds` each), so a change of the machine's load falls on both; tokens are the usage counts the servers
report. overhead = 1 - front tokens/s / direct tokens/s. Target: <= 5%. The load average is printed beside the
figures: on a shared machine the rounds' spread is the noise to judge the overhead against.

    python bench/serve_backend.py [--model FOLDER] [--requests 32] [--max-tokens 64] [--rounds 2]
    python bench/serve_backend.py --smoke   # seconds: a tiny random Llama and tokenizer

JSON keys: model, clients, requests, max_tokens, rounds, direct_tokens_per_s, front_tokens_per_s, direct_rounds, front_rounds, overhead, p50_ttft_s_direct, p50_ttft_s_front, errors, load_average, smoke, skipped
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log: Path, port: int) -> subprocess.Popen:
    """`groundtune serve ARGS` in a process of its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "groundtune.cli", "serve", *args, "--port", str(port)], env=env,
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout_s: float = 600) -> str:
    """The server's address once its /health answers 200 (a front's does once its backend answers)."""
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return url
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"groundtune serve did not start: {log.read_text()[-1500:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or name (default: the embedded SmolLM2-135M)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="requests per run, spread over the clients")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="direct and front runs each, alternating")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if min(args.clients, args.requests, args.max_tokens, args.rounds) < 1:
        parser.error("--clients, --requests, --max-tokens and --rounds must be >= 1")
    try:
        import httpx2  # noqa: F401
        import openai  # noqa: F401
    except ImportError as err:
        print(json.dumps({"smoke": args.smoke, "skipped": {"serve_backend": f"not installed: {err.name}"}}))
        return
    from groundtune.serve.loadgen import drive

    work = Path(tempfile.mkdtemp(prefix="groundtune-bench-backend-"))
    if args.smoke:
        from _smoke import tiny_llama, tiny_tokenizer

        prompts = [f"question {i}: how do I renew my licence online?" for i in range(4)]
        tokenizer = tiny_tokenizer(prompts * 4)
        tiny_llama(vocab_size=len(tokenizer)).save_pretrained(work / "tiny-llama")
        tokenizer.save_pretrained(work / "tiny-llama")
        model, name = str(work / "tiny-llama"), "tiny-llama"
        n_requests, max_tokens, rounds, clients = 4, 4, 1, 2
    else:
        from serve import grounded_prompts

        model, name = args.model, Path(args.model).name if args.model else "smollm2-135m-instruct"
        n_requests, max_tokens, rounds, clients = args.requests, args.max_tokens, args.rounds, args.clients
        prompts = grounded_prompts(n_requests)
    model_args = ["--model", model] if model else []
    # Both start at once (a front does not wait for its backend; its /health is 200 once the backend answers).
    backend_port, front_port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    backend = start_server([*model_args, "--max-batch", str(clients)], work / "backend.log", backend_port)
    # The front waits as long as the clients do (a loaded CPU backend may be silent for minutes before its first
    # token; the 60 s default would turn that into 504s and measure the timeout, not the front).
    front = start_server([*model_args, "--backend", backend_url, "--backend-timeout", "300"], work / "front.log",
                         front_port)
    try:
        wait_ready(backend, backend_port, work / "backend.log")
        front_url = wait_ready(front, front_port, work / "front.log")
        served = json.loads(urllib.request.urlopen(backend_url + "/v1/models", timeout=30).read())["data"][0]["id"]
        per_client = -(-n_requests // clients)
        for url in (backend_url, front_url):  # warm-up
            drive(url, served, prompts[:1], clients=1, max_tokens=2, requests_per_client=1)
        runs = {"direct": [], "front": []}
        for _ in range(rounds):
            for kind, url in (("direct", backend_url), ("front", front_url)):
                r = drive(url, served, prompts, clients=clients, max_tokens=max_tokens, requests_per_client=per_client)
                runs[kind].append(r)
                print(f"{kind}: {r['requests']} requests, {r['completion_tokens']} tokens in {r['wall_s']} s = "
                      f"{r['tokens_per_s']} tokens/s, TTFT p50 {r['ttft_p50_s']} s, errors {r['errors']}, "
                      f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    finally:
        stop(front)
        stop(backend)
        shutil.rmtree(work, ignore_errors=True)

    def mean(kind: str, key: str):
        values = [r[key] for r in runs[kind] if r[key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    direct, through = mean("direct", "tokens_per_s"), mean("front", "tokens_per_s")
    result = {
        "model": name, "clients": clients, "requests": n_requests, "max_tokens": max_tokens, "rounds": rounds,
        "direct_tokens_per_s": direct, "front_tokens_per_s": through,
        "direct_rounds": [r["tokens_per_s"] for r in runs["direct"]],
        "front_rounds": [r["tokens_per_s"] for r in runs["front"]],
        "overhead": round(1 - through / direct, 4) if direct and through else None,
        "p50_ttft_s_direct": mean("direct", "ttft_p50_s"), "p50_ttft_s_front": mean("front", "ttft_p50_s"),
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
        "load_average": [round(x, 2) for x in os.getloadavg()], "smoke": args.smoke, "skipped": {},
    }
    if result["errors"]:
        result["error_messages"] = [m for rs in runs.values() for r in rs for m in r["error_messages"]][:5]
    print(f"direct {direct} tokens/s, through the front {through} tokens/s: overhead {result['overhead']} "
          f"(target <= 0.05), load average {result['load_average']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
