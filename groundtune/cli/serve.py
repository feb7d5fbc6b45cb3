"""`groundtune serve`: the OpenAI-compatible server, started from groundtune.serve."""

from typing import Annotated, Optional

import typer

from groundtune.cli.options import model_option


def serve(
    model: Annotated[Optional[str], model_option(
        "Base model: folder, .gguf, hub id; default the embedded SmolLM2-135M-Instruct.")] = None,
    adapter: Annotated[list[str], typer.Option(
        "--adapter", help="NAME=FOLDER of an adapter to serve as model NAME (repeatable).")] = [],
    index: Annotated[Optional[str], typer.Option(
        help="Index folder (`groundtune index`): chat answers retrieve and cite passages.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="GROUNDTUNE_API_KEY",
        help="Clients must send 'Authorization: Bearer KEY' (16 characters at least); enables /admin.")] = None,
    max_batch: Annotated[int, typer.Option(help="Most requests of one adapter generated together.")] = 8,
    max_queue: Annotated[int, typer.Option(
        help="Most waiting requests; beyond it the server answers 503 + Retry-After.")] = 64,
    adapter_dir: Annotated[Optional[str], typer.Option(
        help="Folder where adapters uploaded to /admin are kept; a restart serves them again.")] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest adapter upload accepted, in MiB.")] = 256,
    dtype: Annotated[str, typer.Option(
        help="auto (bfloat16 where the CPU has AVX512-BF16/AMX or the GPU supports it, else float32), float32 or "
        "bfloat16.")] = "auto",
    backend: Annotated[Optional[str], typer.Option(
        help="Generate at this OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, another groundtune serve), "
        "e.g. http://10.0.0.5:8000; this server keeps retrieval, citations, prompt formats, the key and the queue "
        "bound. --model then gives only the tokenizer.")] = None,
    backend_key: Annotated[Optional[str], typer.Option(
        envvar="GROUNDTUNE_BACKEND_KEY", help="Bearer key for --backend.")] = None,
    backend_timeout: Annotated[float, typer.Option(
        help="Seconds the backend may stay silent before a request gets 504.")] = 60.0,
    local_engine: Annotated[bool, typer.Option(
        "--local-engine", help="With --backend: also load --model here and serve the adapters the backend does not "
        "list (prompt methods, LLaMA-Adapter).")] = False,
):
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) and a chat page at /,
    each request's `model` picking one of the adapters, hot-swapped on one loaded base (or generated at --backend)."""
    from groundtune.serve import serve as run_server

    run_server(model, adapter, index=index, host=host, port=port, api_key=api_key, max_batch=max_batch,
               max_queue=max_queue, adapter_dir=adapter_dir, max_upload_mb=max_upload_mb, backend=backend,
               backend_key=backend_key, backend_timeout=backend_timeout, local_engine=local_engine, dtype=dtype)
