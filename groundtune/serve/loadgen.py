"""Concurrent streaming clients (the official openai client, one thread each) against a server on loopback:
errors, time to first token and aggregate tokens per second, from the usage counts the server reports.

Bounded both ways: each client sends at most `requests_per_client` requests and starts none after `duration_s`.
Used by tests/test_serve_load.py and bench/serve.py.
"""

from __future__ import annotations

import statistics
import threading
import time
from urllib.parse import urlparse
from groundtune.errors import GroundtuneError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def drive(url: str, model: str | list[str], prompts: list[str], *, clients: int, max_tokens: int,
          duration_s: float | None = None, requests_per_client: int | None = None, api_key: str = "-",
          timeout_s: float = 300, spread_s: float = 0.0, chat: bool = False) -> dict:
    """Run `clients` streaming clients; client i sends prompts[(i + j * clients) % len(prompts)] for j = 0, 1, ...
    to model[i % len(model)] (a list: clients on different adapters). Client i starts at i * spread_s / clients
    (arrivals spread over spread_s). chat: each prompt is the user message of /v1/chat/completions (the server
    retrieves and builds the prompt), else the prompt of /v1/completions."""
    import openai

    if urlparse(url).hostname not in LOOPBACK_HOSTS:
        raise GroundtuneError(f"{url}: load runs target loopback only")
    if duration_s is None and requests_per_client is None:
        raise GroundtuneError("give duration_s or requests_per_client (a load run is bounded)")
    models = [model] if isinstance(model, str) else list(model)
    lock = threading.Lock()
    ttft, tokens, errors, messages, done, prompt_tokens = [], [0], [0], [], [0], [0]
    start = time.perf_counter()
    deadline = start + duration_s if duration_s is not None else None

    def client(i: int) -> None:
        c = openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=timeout_s)
        time.sleep(i * spread_s / clients)
        j = 0
        while (requests_per_client is None or j < requests_per_client) and (deadline is None or time.perf_counter() < deadline):
            prompt = prompts[(i + j * clients) % len(prompts)]
            j += 1
            t0 = time.perf_counter()
            first, used = None, 0
            try:
                common = dict(model=models[i % len(models)], max_tokens=max_tokens, temperature=0, stream=True,
                              stream_options={"include_usage": True})
                if chat:
                    stream = c.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
                else:
                    stream = c.completions.create(prompt=prompt, **common)
                given = 0
                for chunk in stream:
                    if first is None and chunk.choices and _text(chunk.choices[0]):
                        first = time.perf_counter() - t0
                    if chunk.usage is not None:
                        used, given = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
                with lock:
                    tokens[0] += used
                    prompt_tokens[0] += given
                    done[0] += 1
                    if first is not None:
                        ttft.append(first)
            except Exception as err:  # counted, and the run goes on
                with lock:
                    errors[0] += 1
                    messages.append(f"{type(err).__name__}: {err}"[:300])
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": done[0], "errors": errors[0], "error_messages": messages[:5],
            "completion_tokens": tokens[0], "prompt_tokens": prompt_tokens[0], "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens[0] / wall, 2) if wall > 0 else None,
            "ttft_p50_s": _round(percentile(ttft, 50)), "ttft_p95_s": _round(percentile(ttft, 95))}


def _text(choice) -> str:
    delta = getattr(choice, "delta", None)  # a chat chunk; a completion chunk has text
    return (delta.content or "") if delta is not None else (choice.text or "")


def _round(x):
    return None if x is None else round(x, 4)
