"""`groundtune serve`: an OpenAI-compatible server over one loaded base model with adapters of every method
hot-swapped per request, grounded answers with citations, and a chat page.

    groundtune serve --adapter doc2dial=runs/grounded_llama_adapter/adapter --index my-index
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(model="doc2dial", ...)

app.py holds the routes and schemas, engine.py the worker that batches and swaps, citations.py retrieval and
prompts, static/ the page.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from groundtune.errors import GroundtuneError
from groundtune.serve.gate import MIN_KEY_LENGTH, ServeError, check_api_key  # noqa: F401 (the package's names)

LOOPBACK = ("127.0.0.1", "localhost", "::1")

def check_bind(host: str, api_key: str | None) -> None:
    check_api_key(api_key)
    if host not in LOOPBACK and not api_key:
        raise ServeError(f"binding {host} would open the server to other machines: give --api-key KEY "
                         "(clients then send 'Authorization: Bearer KEY'), or keep the default --host 127.0.0.1")


def parse_adapters(specs: list[str]) -> dict[str, Path]:
    """NAME=FOLDER options -> {name: folder}; a ServeError names the bad one."""
    from groundtune.serve.app import NAME

    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ServeError(f"--adapter {spec!r}: write NAME=FOLDER, e.g. --adapter doc2dial=runs/x/adapter")
        if not NAME.match(name):
            raise ServeError(f"--adapter {spec!r}: the name may hold letters, digits, '.', '_', ':' and '-' (64 at most)")
        if name in out:
            raise ServeError(f"--adapter {name!r} is given twice")
        if not Path(folder).is_dir():
            raise ServeError(f"--adapter {spec!r}: {folder} is not a folder (an adapter folder from training)")
        out[name] = Path(folder)
    return out


def build(model, tokenizer, adapters: dict[str, Path] | None = None, *, retriever=None, api_key: str | None = None,
          base_name: str | None = None, max_batch: int = 8, max_queue: int = 64, batch_wait_s: float = 0.1,
          adapter_dir: str | Path | None = None, max_upload_bytes: int | None = None, dtype=None):
    """(FastAPI app, engine) over a loaded model; adapters loaded and checked before it serves.

    dtype: what the engine serves in ("auto": bfloat16 where the hardware has it; None: as loaded).

    adapter_dir: uploads are kept there, and those kept by earlier runs are served again."""
    from groundtune.serve.app import MAX_UPLOAD_BYTES, create_app
    from groundtune.serve.citations import Grounding
    from groundtune.serve.engine import Engine
    from groundtune.serve.store import AdapterStore

    check_api_key(api_key)
    try:
        store = AdapterStore(adapter_dir)
    except OSError as err:
        raise ServeError(f"--adapter-dir {adapter_dir}: {err.strerror or err}; give a folder this user can write") from None
    saved = store.saved()
    clash = sorted(set(saved) & set(adapters or {}))
    if clash:
        raise ServeError(f"--adapter {clash[0]}=... and an upload kept in --adapter-dir {adapter_dir} have the same "
                         "name; give the --adapter another name")
    engine = Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue, batch_wait_s=batch_wait_s,
                    base_name=base_name, dtype=dtype)
    options = {**{name: (folder, f"--adapter {name}={folder}") for name, folder in (adapters or {}).items()},
               **{name: (folder, f"--adapter-dir {adapter_dir}: {name}") for name, folder in saved.items()}}
    for name, (folder, where) in options.items():
        try:
            engine.add_adapter(name, folder, source=str(folder)).result()
        except (ValueError, TypeError, OSError, KeyError, GroundtuneError) as err:
            engine.close()
            raise ServeError(f"{where}: {err}") from None
    app = create_app(engine, Grounding(retriever), api_key, store=store,
                     max_upload_bytes=max_upload_bytes or MAX_UPLOAD_BYTES)
    return app, engine


class BackgroundServer:
    """Run an app with uvicorn on a thread, bound to 127.0.0.1 on a free port (tests and benches).

        with BackgroundServer(app) as url: OpenAI(base_url=url + "/v1", api_key="-")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def serve(model: str | None = None, adapters: list[str] = (), *, index: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, api_key: str | None = None, max_batch: int = 8, max_queue: int = 64,
          adapter_dir: str | None = None, max_upload_mb: int = 256, dtype: str = "auto") -> None:
    """Load the model (the embedded default when None), the adapters and the index, and serve until stopped."""
    import uvicorn

    from groundtune.models import load_model

    check_bind(host, api_key)
    if not 0 < port < 65536:
        raise ServeError(f"--port {port}: give a port between 1 and 65535")
    if max_batch < 1 or max_queue < 1:
        raise ServeError(f"--max-batch and --max-queue must be >= 1 (got {max_batch}, {max_queue})")
    if not 1 <= max_upload_mb <= 2**20:
        raise ServeError(f"--max-upload-mb {max_upload_mb}: give a size in MiB between 1 and {2**20}")
    if adapter_dir is not None and Path(adapter_dir).exists() and not Path(adapter_dir).is_dir():
        raise ServeError(f"--adapter-dir {adapter_dir} is a file; give a folder (it is created if missing)")
    from groundtune.models import serving_dtype

    serving_dtype(dtype)  # a bad --dtype is refused before anything loads
    folders = parse_adapters(list(adapters))
    retriever = None
    if index is not None:
        from groundtune.retrieval.index import Retriever

        try:
            retriever = Retriever.load(index)
        except (FileNotFoundError, ValueError) as err:
            raise ServeError(f"--index {index}: {err}") from None
    base, tokenizer = load_model(model)
    app, engine = build(base, tokenizer, folders, retriever=retriever, api_key=api_key,
                        base_name=Path(str(model)).name if model else None, max_batch=max_batch, max_queue=max_queue,
                        adapter_dir=adapter_dir, max_upload_bytes=max_upload_mb * 2**20, dtype=dtype)
    print(f"groundtune serve: {engine.base_name} with {len(engine.adapters)} adapter(s) "
          f"({', '.join(engine.adapters) or 'none'}){', index ' + index if index else ''} on http://{host}:{port} "
          f"(chat page at /, OpenAI API at /v1); serving in {engine.dtype_note}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        engine.close()
