"""A bounded load test: 32 concurrent streaming clients (the openai client) on 127.0.0.1 for about 3 seconds
against a tiny model; no request may fail. Prints p50/p95 time to first token and aggregate tokens per second."""

from __future__ import annotations

import pytest

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from test_serve import adapters, one_thread  # noqa: E402,F401  (fixtures: tiny adapters, one torch thread)


def test_32_streaming_clients_get_no_errors(adapters):
    from test_serve import base_model

    from groundtune.serve import BackgroundServer, build
    from groundtune.serve.loadgen import drive
    from tiny import tiny_tokenizer

    app, engine = build(base_model(), tiny_tokenizer(), {"lora": adapters["lora"], "bitfit": adapters["bitfit"]},
                        base_name="tiny-base", max_batch=16, max_queue=64)
    prompts = [" ".join(f"w{10 + (i * 7 + j) % 80}" for j in range(6 + i % 5)) for i in range(16)]
    try:
        with BackgroundServer(app) as url:
            report = drive(url, "lora", prompts, clients=32, max_tokens=8, duration_s=3.0, requests_per_client=6)
    finally:
        engine.close()
    print(f"\nload: {report['requests']} requests from 32 clients in {report['wall_s']} s, errors {report['errors']}, "
          f"TTFT p50 {report['ttft_p50_s']} s p95 {report['ttft_p95_s']} s, {report['tokens_per_s']} tokens/s, "
          f"batches {engine.stats['batch_sizes']}")
    assert report["errors"] == 0, report["error_messages"]
    assert report["requests"] >= 32 and report["completion_tokens"] > 0
    assert engine.stats["max_batch_seen"] > 1  # concurrent requests were batched
