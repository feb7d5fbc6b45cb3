"""`groundtune serve`: an OpenAI-compatible server over one loaded base model with adapters of every method
hot-swapped per request, grounded answers with citations, and a chat page.

    groundtune serve --adapter doc2dial=runs/grounded_llama_adapter/adapter --index my-index
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(model="doc2dial", ...)

app.py builds the app over what the routes share; openai_routes.py, admin.py and page.py are its routers,
schemas.py the request schemas and limits, generation.py a request's generation as the routes see it (local or at
a backend), backend.py the client of an OpenAI-compatible backend (`serve --backend URL`), engine.py the worker
that batches and swaps, citations.py retrieval and prompts, static/ the page.
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
    from groundtune.serve.schemas import NAME

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
          adapter_dir: str | Path | None = None, max_upload_bytes: int | None = None, backend=None,
          context_length: int | None = None, dtype=None):
    """(FastAPI app, engine) over a loaded model; adapters loaded and checked before it serves.

    adapter_dir: uploads are kept there, and those kept by earlier runs are served again.
    backend: a `groundtune.serve.backend.Backend` that generates for the names it lists. model None: no local
    engine (the engine returned is None); the adapters are then read for their method and prompt format only,
    and `context_length` is the backend model's, for the front's own checks.
    dtype: what the engine serves in ("auto": bfloat16 where the hardware has it; None: as loaded)."""
    from groundtune.serve.app import create_app
    from groundtune.serve.schemas import MAX_UPLOAD_BYTES
    from groundtune.serve.citations import Grounding
    from groundtune.serve.engine import Engine
    from groundtune.serve.store import AdapterStore

    check_api_key(api_key)
    upload = max_upload_bytes or MAX_UPLOAD_BYTES
    if model is None:
        if backend is None:
            raise ServeError("no model to serve: give a model, or a backend to pass generation to")
        if adapter_dir is not None:
            raise ServeError("--adapter-dir keeps uploads for a local engine; this server has none (add "
                             "--local-engine, or load adapters on the backend)")
        app = create_app(None, Grounding(retriever), api_key, max_upload_bytes=upload, backend=backend,
                         tokenizer=tokenizer, known=_front_adapters(adapters or {}), context_length=context_length,
                         max_in_flight=max_queue)
        return app, None
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
    app = create_app(engine, Grounding(retriever), api_key, store=store, max_upload_bytes=upload, backend=backend,
                     max_in_flight=max_queue)
    return app, engine


def _front_adapters(adapters: dict[str, Path]) -> dict:
    """The adapters a front without an engine knows: method and prompt format, read from each folder."""
    from groundtune.data.prompt_format import read as read_prompt_format
    from groundtune.methods.io import adapter_method
    from groundtune.serve.app import FrontAdapter

    known = {}
    for name, folder in adapters.items():
        try:
            known[name] = FrontAdapter(name, adapter_method(folder), read_prompt_format(folder))
        except (ValueError, TypeError, OSError, GroundtuneError) as err:
            raise ServeError(f"--adapter {name}={folder}: {err}") from None
    return known


def _tokenizer_and_context(model: str | None):
    """A front's tokenizer (prompt formats and token counts) and context length, without loading the weights."""
    from transformers import AutoConfig, AutoTokenizer

    from groundtune.models import resolve

    source = resolve(model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = AutoConfig.from_pretrained(source)
    return tokenizer, int(getattr(config, "max_position_embeddings", 0) or 0) or None


def _probe(backend_url: str, api_key: str | None, timeout_s: float) -> str:
    """One line on the backend's state at start-up (the front starts either way: backends may come later)."""
    import asyncio

    from groundtune.serve.backend import Backend

    async def check():
        probe = Backend(backend_url, api_key=api_key, timeout_s=timeout_s)
        try:
            return await probe.check()
        finally:
            await probe.aclose()

    state = asyncio.run(check())
    if state.state == "ok":
        return f"backend {backend_url} lists {', '.join(state.models)}"
    return f"backend {backend_url}: {state.error} (requests routed there fail with 502/504 until it answers)"


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
        # log_config=None: a server inside another program leaves that program's logging alone (uvicorn's own
        # config would bind handlers to whatever sys.stderr is now, which a caller may close: a CLI runner does).
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30,
                                                    log_config=None))
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
          adapter_dir: str | None = None, max_upload_mb: int = 256, backend: str | None = None,
          backend_key: str | None = None, backend_timeout: float = 60.0, local_engine: bool = False,
          dtype: str = "auto") -> None:
    """Load the model (the embedded default when None), the adapters and the index, and serve until stopped.

    backend: an OpenAI-compatible server's address; names it lists are generated there, and `model` then only
    gives the tokenizer (prompt formats, token counts) unless local_engine also loads it here, for the kinds
    only groundtune runs."""
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
    if local_engine and backend is None:
        raise ServeError("--local-engine goes with --backend URL (without a backend the engine is always local)")
    front = None
    if backend is not None:
        from groundtune.serve.backend import Backend

        try:
            front = Backend(backend, api_key=backend_key, timeout_s=backend_timeout)
        except GroundtuneError as err:
            raise ServeError(str(err)) from None
    if front is not None and not local_engine:
        tokenizer, context = _tokenizer_and_context(model)
        app, engine = build(None, tokenizer, folders, retriever=retriever, api_key=api_key, max_queue=max_queue,
                            max_upload_bytes=max_upload_mb * 2**20, backend=front, context_length=context)
        what = f"a front with {len(folders)} adapter(s) known ({', '.join(folders) or 'none'})"
    else:
        base, tokenizer = load_model(model)
        app, engine = build(base, tokenizer, folders, retriever=retriever, api_key=api_key,
                            base_name=Path(str(model)).name if model else None, max_batch=max_batch,
                            max_queue=max_queue, adapter_dir=adapter_dir, max_upload_bytes=max_upload_mb * 2**20,
                            backend=front, dtype=dtype)
        what = (f"{engine.base_name} with {len(engine.adapters)} adapter(s) ({', '.join(engine.adapters) or 'none'}), "
                f"serving in {engine.dtype_note}")
    print(f"groundtune serve: {what}{', index ' + index if index else ''} on http://{host}:{port} "
          f"(chat page at /, OpenAI API at /v1)", flush=True)
    if front is not None:
        print(f"groundtune serve: {_probe(front.url, backend_key, backend_timeout)}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if engine is not None:
            engine.close()
