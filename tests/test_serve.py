"""groundtune serve on a tiny random Qwen2 (it has biases, so BitFit applies) with a tiny word-level tokenizer:
the official openai client against a real server on 127.0.0.1, adapters of every method hot-swapped, citations,
bad input, the bounded queue, batching, cancellation and the admin endpoints."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import groundtune as gt  # noqa: E402
from groundtune.config import GenerationConfig  # noqa: E402
from groundtune.data.grounded import build_prompt  # noqa: E402
from groundtune.generate import generate  # noqa: E402
from groundtune.serve import BackgroundServer, build, check_bind, ServeError  # noqa: E402
from tiny import random_adapters, serving_model, tiny_tokenizer  # noqa: E402

CONTEXT = 256
METHODS = {
    "llama_adapter": gt.LlamaAdapterConfig(layers=2, length=3),
    "prompt_tuning": gt.PromptTuningConfig(length=4),
    "dept": gt.DeptConfig(length=4, rank=2, max_length=64),
    "accept": gt.AcceptConfig(length=4, codewords=3, scap_codewords=3, max_length=64),
    "lora": gt.LoraConfig(r=2, alpha=4),
    "bitfit": gt.BitFitConfig(),
}
PROMPT = "w10 w11 w12 w13 w14 w15 w16 w17"


def base_model():
    return serving_model(CONTEXT)


def offline(folder, prompt: str, max_new_tokens: int) -> str:
    model = base_model() if folder is None else gt.load_adapter(base_model(), folder)
    return generate(model, tiny_tokenizer(), [prompt], GenerationConfig(max_new_tokens=max_new_tokens, batch_size=1),
                    progress=False)[0]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: a tiny model gains nothing from two, and on a loaded machine OpenMP's barriers between
    two threads make each of its small matmuls wait milliseconds (15x slower generation here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return random_adapters(tmp_path_factory.mktemp("adapters"), METHODS, base_model)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from groundtune.retrieval.index import build_index
    from groundtune.retrieval.passages import Passage

    passages = [Passage("doc-a", "w20 w21 w22 w23 renew licence w24", "Renewing"),
                Passage("doc-b", "w30 w31 w32 w33 w34 fees", "Fees"),
                Passage("doc-c", "w40 w41 w42 w43 w44 w45 w46", "Other")]
    folder = tmp_path_factory.mktemp("index") / "idx"
    build_index(passages, folder, dense=False, show_progress=False)
    from groundtune.retrieval.index import Retriever

    return Retriever.load(folder)


@pytest.fixture(scope="module")
def served(adapters, index):
    app, engine = build(base_model(), tiny_tokenizer(), adapters, retriever=index, base_name="tiny-base")
    with BackgroundServer(app) as url:
        yield url, engine, app
    engine.close()


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def post(url, path, body, key=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": "application/json",
                                                                                 **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_models_lists_the_base_and_every_adapter(served):
    url, engine, _ = served
    ids = {m.id: getattr(m, "method", None) for m in client(url).models.list().data}
    assert ids == {"tiny-base": None, **{name: name for name in METHODS}}


def test_concurrent_requests_for_different_adapters_each_equal_offline_generate(served, adapters):
    url, engine, _ = served
    names = [None, *METHODS]
    expected = {name: offline(adapters.get(name), PROMPT, 10) for name in names}
    assert len(set(expected.values())) >= 4  # the adapters really change the answer
    c = client(url)

    def ask(name):
        out = c.completions.create(model=name or "tiny-base", prompt=PROMPT, max_tokens=10, temperature=0)
        return name, out.choices[0].text, out.usage

    with ThreadPoolExecutor(len(names) * 2) as pool:
        results = list(pool.map(ask, names * 2))
    for name, text, usage in results:
        assert text.strip() == expected[name], name
        assert usage.prompt_tokens == 8 and usage.completion_tokens <= 10
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert engine.stats["swaps"] >= len(METHODS)


def test_a_batch_sharing_a_prompt_prefix_prefills_it_once_and_still_equals_offline_generate(served, adapters):
    url, engine, _ = served
    shared = " ".join(f"w{20 + j}" for j in range(20))
    prompts = [f"{shared} {' '.join(f'w{60 + (i * 3 + j) % 30}' for j in range(1 + 2 * i))}" for i in range(4)]
    for name in (None, "lora", "accept"):  # accept puts virtual tokens first: it does not share
        expected = [offline(adapters.get(name), p, 6) for p in prompts]
        before = engine.stats["prefix_tokens_shared"]
        engine.pause()
        try:
            with ThreadPoolExecutor(len(prompts)) as pool:
                futures = [pool.submit(post, url, "/v1/completions", {"model": name or "tiny-base", "prompt": p,
                                                                      "max_tokens": 6, "temperature": 0})
                           for p in prompts]
                deadline = time.monotonic() + 20
                while engine.queued() < len(prompts) and time.monotonic() < deadline:
                    time.sleep(0.02)
                engine.resume()
                results = [f.result() for f in futures]
        finally:
            engine.resume()
        assert [r[0] for r in results] == [200] * len(prompts)
        assert [r[1]["choices"][0]["text"].strip() for r in results] == expected, name
        shared_now = engine.stats["prefix_tokens_shared"] - before
        assert (shared_now == 0) if name == "accept" else (shared_now >= 20 * (len(prompts) - 1)), name


def test_bitfit_biases_and_the_base_are_restored_exactly(served):
    url, engine, _ = served
    client(url).completions.create(model="bitfit", prompt=PROMPT, max_tokens=3, temperature=0)
    model = engine.call(engine._use, None).result()
    reference = base_model().state_dict()
    state = model.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_streaming_chat_sends_citations_first_and_matches_offline(served, adapters):
    url, engine, _ = served
    messages = [{"role": "user", "content": "w50 w51"}, {"role": "assistant", "content": "w52 w53"},
                {"role": "user", "content": "how do I renew licence"}]
    stream = client(url).chat.completions.create(model="llama_adapter", messages=messages, max_tokens=8,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True})
    chunks = list(stream)
    first = chunks[0].model_dump()
    assert first["citations"] and first["citations"][0]["doc_id"] == "doc-a"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens >= 1
    # the prompt training builds: passages joined by "\n", the last two turns, the question
    document = "\n".join(c["text"] for c in first["citations"])
    prompt = build_prompt(document, ["user: w50 w51", "agent: w52 w53"], "how do I renew licence")
    assert text.strip() == offline(adapters["llama_adapter"], prompt, 8)


def test_retrieval_off_and_own_documents(served):
    url, engine, _ = served
    c = client(url)
    msg = [{"role": "user", "content": "renew licence"}]
    off = c.chat.completions.create(model="lora", messages=msg, max_tokens=4, temperature=0,
                                    extra_body={"retrieval": False})
    assert off.model_dump()["citations"] == []
    own = c.chat.completions.create(model="lora", messages=msg, max_tokens=4, temperature=0,
                                    extra_body={"documents": [{"text": "w60 w61", "title": "Mine"}]})
    cited = own.model_dump()["citations"]
    assert [(x["id"], x["title"], x["text"]) for x in cited] == [("request:0", "Mine", "w60 w61")]
    assert own.choices[0].finish_reason in ("stop", "length")


def test_sampling_with_a_seed_repeats(served):
    url, engine, _ = served
    c = client(url)
    a, b = (c.completions.create(model="dept", prompt=PROMPT, max_tokens=8, temperature=1.0, top_p=0.9, seed=7)
            .choices[0].text for _ in range(2))
    assert a == b


def test_bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_serving(served):
    url, engine, _ = served
    cases = [
        (post(url, "/v1/completions", None, raw=b"{not json"), 400, "not valid JSON"),
        (post(url, "/v1/completions", {"model": "nope", "prompt": "w2"}), 404, "not served"),
        (post(url, "/v1/completions", {"model": "lora", "prompt": " ".join(["w9"] * (CONTEXT + 5))}), 400, "context"),
        (post(url, "/v1/completions", {"model": "lora", "prompt": "w2", "max_tokens": CONTEXT}), 400, "context"),
        (post(url, "/v1/completions", {"model": "lora", "prompt": "w2", "max_tokens": -3}), 400, "max_tokens"),
        (post(url, "/v1/chat/completions", {"model": "lora", "messages": [{"role": "user", "content": "w2"}],
                                            "n": 10**9}), 400, "n=1"),
        (post(url, "/v1/chat/completions", {"model": "lora", "messages": []}), 400, "messages"),
        (post(url, "/v1/chat/completions", {"model": "lora", "messages": [{"role": "assistant", "content": "w2"}]}),
         400, "end with a user message"),
        (post(url, "/v1/completions", {"model": "lora", "prompt": "w2", "temperature": -1}), 400, "temperature"),
    ]
    for (status, body, _), want_status, want in cases:
        assert status == want_status, body
        assert want in body["error"]["message"], body
    out = client(url).completions.create(model="lora", prompt=PROMPT, max_tokens=2, temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")


def test_a_full_queue_answers_503_with_retry_after_and_waiting_requests_are_batched(served):
    url, engine, _ = served
    old = engine.max_queue
    engine.pause()
    engine.max_queue = 3
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(post, url, "/v1/completions", {"model": "accept", "prompt": PROMPT, "max_tokens": 4,
                                                                  "temperature": 0}) for _ in range(3)]
            deadline = time.monotonic() + 20
            while engine.queued() < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            status, body, headers = post(url, "/v1/completions", {"model": "accept", "prompt": PROMPT})
            assert status == 503 and headers.get("retry-after", headers.get("Retry-After")) == "1"
            assert "busy" in body["error"]["message"]
            engine.resume()
            results = [f.result() for f in futures]
    finally:
        engine.resume()
        engine.max_queue = old
    assert [r[0] for r in results] == [200] * 3
    assert len({r[1]["choices"][0]["text"] for r in results}) == 1  # one batch, same prompt, same answer
    assert max(engine.stats["batch_sizes"]) >= 3


def test_a_client_that_disconnects_cancels_its_generation(served):
    url, engine, _ = served
    before = engine.stats["cancelled"]
    engine.pause()  # queued while the client leaves: it must never run
    try:
        stream = client(url).completions.create(model="prompt_tuning", prompt=PROMPT, max_tokens=200, temperature=0,
                                                stream=True)
        deadline = time.monotonic() + 10
        while engine.queued() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stream.close()
        time.sleep(0.8)  # the server looks for a disconnect every 0.2 s
    finally:
        engine.resume()
    deadline = time.monotonic() + 10
    while engine.stats["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats["cancelled"] == before + 1


def test_cancel_stops_a_running_generation(served):
    url, engine, _ = served
    from groundtune.serve.engine import GenRequest

    events, got_first = [], threading.Event()

    def emit(event):
        events.append(event)
        if event[0] == "delta":
            got_first.set()

    tok = tiny_tokenizer()
    req = GenRequest(tok(PROMPT)["input_ids"], engine.adapters["lora"], CONTEXT - 20, emit, temperature=1.0, seed=1)
    engine.submit(req)
    assert got_first.wait(30)
    req.cancel()
    deadline = time.monotonic() + 10
    while not req.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert req.finish_reason in ("cancelled", "stop")  # "stop": the model ended it first (an EOS)
    if req.finish_reason == "cancelled":
        assert len(req.tokens) < CONTEXT - 20


def test_admin_adds_and_removes_adapters_live_behind_the_api_key(served, adapters):
    url, engine, _ = served
    from groundtune.serve.app import create_app

    files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in adapters["prompt_tuning"].iterdir()}
    status, body, _ = post(url, "/admin/adapters", {"name": "x", "files": files})
    assert status == 403 and "--api-key" in body["error"]["message"]
    with BackgroundServer(create_app(engine, api_key="s3cret-0123456789abcdef")) as keyed:
        status, body, _ = post(keyed, "/admin/adapters", {"name": "pt2", "files": files})
        assert status == 401
        with pytest.raises(openai.AuthenticationError):
            client(keyed, "wrong").models.list()
        status, body, _ = post(keyed, "/admin/adapters", {"name": "pt2", "files": {"../../etc/passwd": "AA=="}},
                               key="s3cret-0123456789abcdef")
        assert status == 400 and "files must be" in body["error"]["message"]
        status, body, _ = post(keyed, "/admin/adapters", {"name": "pt2", "files": files}, key="s3cret-0123456789abcdef")
        assert status == 201, body
        c = client(keyed, "s3cret-0123456789abcdef")
        out = c.completions.create(model="pt2", prompt=PROMPT, max_tokens=6, temperature=0)
        assert out.choices[0].text.strip() == offline(adapters["prompt_tuning"], PROMPT, 6)
        req = urllib.request.Request(keyed + "/admin/adapters/pt2", method="DELETE",
                                     headers={"Authorization": "Bearer s3cret-0123456789abcdef"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["deleted"] is True
        with pytest.raises(openai.NotFoundError):
            c.completions.create(model="pt2", prompt=PROMPT, max_tokens=2)


def test_page_and_its_files_are_served(served):
    url, *_ = served
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        html = r.read().decode()
    assert '<label for="question">' in html and "/static/app.js" in html
    for path in ("/static/app.js", "/static/style.css"):
        with urllib.request.urlopen(url + path, timeout=10) as r:
            assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "/static/..%2f__init__.py", timeout=10)
    assert err.value.code == 404


def test_binding_beyond_loopback_needs_an_api_key():
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "a-key-of-16-chars")
    with pytest.raises(ServeError, match="--api-key"):
        check_bind("0.0.0.0", None)


def test_cli_refuses_a_public_bind_without_a_key():
    from typer.testing import CliRunner

    from groundtune.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "error:" in result.output and "--api-key" in result.output


def test_prompt_format_is_written_by_training_and_read_back(tmp_path):
    from groundtune.config import DataConfig
    from groundtune.data import prompt_format

    fmt = prompt_format.from_data_config(DataConfig(format="jsonl", history_turns=1))
    model = gt.attach(base_model(), gt.LoraConfig())
    folder = gt.save_adapter(model, tmp_path / "a", prompt_format=fmt)
    assert prompt_format.read(folder)["history_turns"] == 1
    assert prompt_format.read(tmp_path)["kind"] == "grounded"  # absent: the default
    alpaca = prompt_format.from_data_config(DataConfig(format="alpaca", template="alpaca"))
    assert alpaca["kind"] == "instruct" and "{instruction}" in alpaca["template"]["prompt_no_input"]
