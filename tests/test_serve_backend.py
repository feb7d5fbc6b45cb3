"""`groundtune serve --backend URL`: a front that keeps retrieval, citations and prompt formats and passes generation
to an OpenAI-compatible server. The backend here is a real second `groundtune serve` process on 127.0.0.1 (a tiny
Qwen2 saved to a folder), started and stopped by the tests; the front runs in this process. Faults are real too:
a plain HTTP file server stands for a URL that is not OpenAI-compatible, a one-route HTTP server for an empty model
list, and the backend process is paused (SIGSTOP), killed mid-stream, and stopped under 32 clients."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("httpx2")

import groundtune as gt  # noqa: E402
from groundtune.serve import BackgroundServer, build  # noqa: E402
from groundtune.serve.backend import Backend  # noqa: E402
from test_serve import CONTEXT, PROMPT, one_thread  # noqa: E402,F401  (fixture: one torch thread)
from tiny import TINY, random_adapters, tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = [{"text": "w20 w21 w22 w23 w24", "title": "Renewing"}, {"text": "w30 w31 w32", "title": "Fees"}]
QUESTION = [{"role": "user", "content": "w50 w51 w52"}]


def base_model():
    """A tiny random Llama (a Llama folder's tokenizer loads back as the word-level one it was saved as; a Qwen2
    folder's would load as Qwen2's byte-level tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", vocab_size=97, max_position_embeddings=CONTEXT, **TINY["llama"])
    config.pad_token_id = 0
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny base saved as a model folder, a LoRA (the backend serves it) and a prompt-tuning adapter (only
    groundtune runs that kind)."""
    root = tmp_path_factory.mktemp("backend")
    base = base_model()
    base.save_pretrained(root / "tiny-model")
    tiny_tokenizer().save_pretrained(root / "tiny-model")
    out = {"model": root / "tiny-model"}
    out.update(random_adapters(root, {"lora": gt.LoraConfig(r=2, alpha=4),
                                      "prompt_tuning": gt.PromptTuningConfig(length=4)}, base_model))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackendProcess:
    """`groundtune serve` in a process of its own, serving the tiny model and its LoRA."""

    def __init__(self, folders, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "groundtune.cli", "serve", "--model", str(folders["model"]),
                                      "--adapter", f"lora={folders['lora']}", "--port", str(self.port)],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the backend did not start: {Path(log).read_text()[-2000:]}")
                time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process must run to handle its signal
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def backend(folders, tmp_path_factory):
    process = BackendProcess(folders, tmp_path_factory.mktemp("logs") / "backend.log")
    yield process
    process.stop()


def front(url: str, folders, timeout_s: float = 30.0, **kwargs):
    """The front over `url`, knowing the LoRA and the prompt-tuning adapter from their folders."""
    adapters = {"lora": folders["lora"], "prompt_tuning": folders["prompt_tuning"]}
    return build(kwargs.pop("model", None), tiny_tokenizer(), adapters,
                 backend=Backend(url, timeout_s=timeout_s, connect_timeout_s=2), context_length=CONTEXT, **kwargs)


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def get(url, path):
    try:
        with urllib.request.urlopen(url + path, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_front_passes_generation_through_with_citations_first_and_equal_answers(backend, folders):
    app, _ = front(backend.url, folders)
    direct = client(backend.url)
    with BackgroundServer(app) as url:
        c = client(url)
        assert {m.id for m in c.models.list().data} == {"tiny-model", "lora"}
        # Completions pass through unchanged: the same greedy text as the backend's own.
        for model in ("tiny-model", "lora"):
            mine = c.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
            theirs = direct.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
            assert mine.choices[0].text == theirs.choices[0].text and mine.choices[0].text.strip()
            assert mine.usage.prompt_tokens == theirs.usage.prompt_tokens
            assert mine.usage.completion_tokens == theirs.usage.completion_tokens
        # A grounded chat: the front builds the prompt in the adapter's format; the backend, a groundtune serve
        # given the same documents, builds the same one, so the greedy answers agree token for token.
        chunks = list(c.chat.completions.create(model="lora", messages=QUESTION, max_tokens=10, temperature=0,
                                                stream=True, extra_body={"documents": DOCS}))
        first = chunks[0].model_dump()
        assert [x["title"] for x in first["citations"]] == ["Renewing", "Fees"]
        assert first["choices"][0]["delta"].get("content") in ("", None)
        deltas = [ch.choices[0].delta.content for ch in chunks[1:] if ch.choices and ch.choices[0].delta.content]
        assert len(deltas) >= 2  # token by token, not one block
        theirs = direct.chat.completions.create(model="lora", messages=QUESTION, max_tokens=10, temperature=0,
                                                extra_body={"documents": DOCS})
        assert "".join(deltas) == theirs.choices[0].message.content
        status, body = get(url, "/health")
        health = json.loads(body)
        assert status == 200 and health["backend"]["state"] == "ok" and health["in_flight"] == 0


def test_a_kind_only_groundtune_runs_is_refused_without_a_local_engine_and_served_with_one(backend, folders):
    key = "k" * 16
    app, _ = front(backend.url, folders, api_key=key)
    with BackgroundServer(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as err:
            c.completions.create(model="prompt_tuning", prompt=PROMPT, max_tokens=4)
        message = err.value.body["message"]
        assert "prompt_tuning adapter" in message and "--local-engine" in message and "merged" in message
        with pytest.raises(openai.NotFoundError, match="not served here"):
            c.completions.create(model="nobody", prompt=PROMPT, max_tokens=4)
        request = urllib.request.Request(url + "/admin/adapters", headers={"Authorization": f"Bearer {key}"})
        with pytest.raises(urllib.error.HTTPError) as err:  # no engine to upload to: said so, not a crash
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 400 and b"no engine of its own" in err.value.read()
    # With the local engine loaded, the same name is generated here; the LoRA still goes to the backend.
    app, engine = front(backend.url, folders, model=base_model(), base_name="local-base")
    try:
        with BackgroundServer(app) as url:
            c = client(url)
            out = c.completions.create(model="prompt_tuning", prompt=PROMPT, max_tokens=6, temperature=0)
            assert out.choices[0].text.strip() and engine.stats["completed"] == 1
            c.completions.create(model="lora", prompt=PROMPT, max_tokens=3, temperature=0)
            assert engine.stats["completed"] == 1  # the backend answered that one
    finally:
        engine.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _NoModels(_Quiet):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("handler, state, words", [(_Quiet, "not_openai_compatible", "not OpenAI-compatible"),
                                                   (_NoModels, "no_models", "lists no models")])
def test_a_backend_that_is_no_openai_server_or_lists_no_models_gives_a_502_and_the_front_serves_on(
        folders, tmp_path, handler, state, words):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app, _ = front(f"http://127.0.0.1:{server.server_address[1]}", folders)
        with BackgroundServer(app) as url:
            for _ in range(2):
                with pytest.raises(openai.APIStatusError) as err:
                    client(url).chat.completions.create(model="lora", messages=QUESTION, max_tokens=4)
                assert err.value.status_code == 502 and words in err.value.body["message"]
            status, body = get(url, "/health")
            assert status == 503 and json.loads(body)["backend"]["state"] == state
            assert get(url, "/")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_backend_gives_504_and_the_front_serves_on(backend, folders):
    app, _ = front(backend.url, folders, timeout_s=1.0)
    with BackgroundServer(app) as url:
        c = client(url)
        c.models.list()  # the model list is known before the backend falls silent
        backend.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as err:
                c.completions.create(model="lora", prompt=PROMPT, max_tokens=4)
            assert err.value.status_code == 504 and "sent nothing for 1 s" in err.value.body["message"]
            assert time.monotonic() - started < 10
        finally:
            backend.proc.send_signal(signal.SIGCONT)
        assert c.completions.create(model="lora", prompt=PROMPT, max_tokens=4, temperature=0).choices[0].text


def test_32_clients_and_a_long_stream_with_the_backend_killed_halfway_each_get_an_answer_or_a_clear_error(
        backend, folders):
    """The last test of the module: it kills the module's backend."""
    app, _ = front(backend.url, folders, timeout_s=10.0)
    with BackgroundServer(app) as url:
        answered, streaming, killed = threading.Event(), threading.Event(), threading.Event()

        def run_client(i):
            c, outcomes = client(url), []
            while not killed.is_set() or len(outcomes) < 2:  # at least one request after the kill
                try:
                    stream = c.completions.create(model="lora", prompt=PROMPT, max_tokens=24, temperature=0,
                                                  stream=True)
                    outcomes.append(("ok", "".join(ch.choices[0].text for ch in stream if ch.choices)))
                    answered.set()
                except openai.APIStatusError as err:
                    outcomes.append((err.status_code, str(err.body.get("message", ""))))
                except openai.APIError as err:  # an error event in a stream that had started
                    outcomes.append(("stream", err.message))
                if killed.is_set() and outcomes[-1][0] != "ok":
                    break
            return outcomes

        def long_stream():
            got = []
            stream = client(url).completions.create(model="lora", prompt=PROMPT, max_tokens=200, temperature=0,
                                                    stream=True)
            try:
                for chunk in stream:
                    got.append(chunk.choices[0].text)
                    if len(got) >= 2:
                        streaming.set()
            except openai.APIError as err:
                return got, err.message
            return got, None

        with ThreadPoolExecutor(33) as pool:
            futures = [pool.submit(run_client, i) for i in range(32)]
            long = pool.submit(long_stream)
            assert answered.wait(60) and streaming.wait(60)
            backend.stop(signal.SIGKILL)
            killed.set()
            outcomes = [o for f in futures for o in f.result()]
            got, error = long.result()
        assert len(got) >= 2 and error and "backend" in error  # died mid-stream: a clear error after its tokens
        ok = [o for o in outcomes if o[0] == "ok"]
        failed = [o for o in outcomes if o[0] != "ok"]
        assert ok and len(failed) >= 32, outcomes[:5]
        for kind, message in failed:  # every failure is a 502 or an error event naming the backend
            assert kind in (502, "stream"), (kind, message)
            assert "backend" in message, message
        status, body = get(url, "/health")
        assert status == 503 and json.loads(body)["backend"]["state"] == "unreachable"
        assert json.loads(body)["in_flight"] == 0
        assert get(url, "/")[0] == 200
