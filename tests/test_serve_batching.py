"""The engine's continuous batching on a tiny random Qwen2: requests that arrive while a batch decodes join it at a
step boundary (shorter and longer prompts than the running rows, so both sides get left-padded), finished rows
leave, and every greedy answer still equals offline `groundtune.generate` with its adapter."""

from __future__ import annotations

import queue
import time

import pytest
import torch

import groundtune as gt
from groundtune.config import GenerationConfig
from groundtune.generate import generate
from groundtune.serve.engine import Engine, GenRequest
from tiny import random_adapters, serving_model, tiny_tokenizer

METHODS = {
    "lora": gt.LoraConfig(r=2, alpha=4),
    "llama_adapter": gt.LlamaAdapterConfig(layers=2, length=3),
    "accept": gt.AcceptConfig(length=4, codewords=3, scap_codewords=3, max_length=64),
    "lora_b": gt.LoraConfig(r=1, alpha=2, target_modules=["q_proj", "v_proj", "o_proj"]),
    "llama_adapter_b": gt.LlamaAdapterConfig(layers=3, length=2),
    "bitfit": gt.BitFitConfig(),
}
LONG = "w10 w11 w12 w13 w14 w15 w16 w17"
JOINERS = ["w30 w31 w32 w33 w34 w35 w36 w37 w38 w39 w40 w41 w42", "w50 w51 w52"]  # longer, shorter than LONG


def base_model():
    return serving_model(256)


def offline(folder, prompt: str, max_new_tokens: int) -> str:
    model = base_model() if folder is None else gt.load_adapter(base_model(), folder)
    return generate(model, tiny_tokenizer(), [prompt], GenerationConfig(max_new_tokens=max_new_tokens, batch_size=1),
                    progress=False)[0]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return random_adapters(tmp_path_factory.mktemp("adapters"), METHODS, base_model)


@pytest.fixture(scope="module")
def engine(adapters):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = Engine(base_model(), tiny_tokenizer(), batch_wait_s=0)
    for name, folder in adapters.items():
        engine.add_adapter(name, folder).result()
    yield engine
    engine.close()
    torch.set_num_threads(before)


def submit(engine, adapter, prompt: str, max_tokens: int) -> tuple[GenRequest, queue.Queue]:
    events: queue.Queue = queue.Queue()
    tok = engine.tokenizer
    request = GenRequest(tok(prompt)["input_ids"], adapter, max_tokens, events.put)
    engine.submit(request)
    return request, events


def wait(request: GenRequest, events: queue.Queue, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not request.done:
        assert time.monotonic() < deadline, "the request did not finish"
        time.sleep(0.005)
    return request.text


@pytest.mark.parametrize("name", [None, "lora", "llama_adapter", "accept", "bitfit"])
def test_requests_that_arrive_mid_batch_join_it_and_each_equals_offline_generate(engine, adapters, name):
    adapter = engine.adapters[name] if name else None
    joined, steps = engine.stats["joined"], engine.stats["steps"]
    long, long_events = submit(engine, adapter, LONG, 40)
    deadline = time.monotonic() + 30
    while len(long.tokens) < 3 and not long.done and time.monotonic() < deadline:
        time.sleep(0.002)
    assert not long.done, "the long request ended before the others could join: pick another prompt"
    others = [submit(engine, adapter, p, 6) for p in JOINERS]
    texts = [wait(r, e) for r, e in others]
    assert not long.done or long.finish_reason == "length"  # the short ones left while the long one decoded on
    long_text = wait(long, long_events)
    assert engine.stats["joined"] - joined == len(JOINERS)
    assert engine.stats["steps"] - steps < 40 + 2 * 6  # they decoded together, not one after the other
    folder = adapters.get(name)
    assert long_text == offline(folder, LONG, 40)
    assert texts == [offline(folder, p, 6) for p in JOINERS]


def test_dtype_auto_follows_the_hardware_and_bfloat16_serves_every_kind(adapters):
    from groundtune.errors import ConfigError
    from groundtune.models import bf16_supported, serving_dtype

    assert serving_dtype("auto")[0] == (torch.bfloat16 if bf16_supported() else torch.float32)
    assert serving_dtype("float32") == (torch.float32, "as asked")
    with pytest.raises(ConfigError, match="--dtype"):
        serving_dtype("float8")
    engine = Engine(base_model(), tiny_tokenizer(), batch_wait_s=0, dtype="bfloat16")
    try:
        assert engine.dtype == torch.bfloat16 and engine.dtype_note.startswith("bfloat16")
        for name, folder in list(adapters.items())[:3]:
            engine.add_adapter(name, folder).result()
        requests = [submit(engine, engine.adapters.get(name), LONG, 5) for name in [None, "lora", "llama_adapter",
                                                                                     "accept"]]
        for r, events in requests:
            wait(r, events)
            assert r.finish_reason in ("length", "stop") and r.tokens, r.finish_reason
    finally:
        engine.close()


def test_one_batch_mixes_base_lora_and_llama_adapter_rows_and_each_equals_offline_generate(engine, adapters):
    """LoRA rows through peft's adapter_names, LLaMA-Adapter rows through their own prompts and gates, base rows
    through neither; BitFit changes shared weights, so its request waits for a batch of its own."""
    names = [None, "lora", "llama_adapter", "lora_b", "llama_adapter_b", "lora", "bitfit"]
    prompts = [" ".join(f"w{10 + (3 * i + j) % 80}" for j in range(4 + 3 * i)) for i in range(len(names))]
    batches, swaps = engine.stats["batches"], engine.stats["swaps"]
    engine.pause()
    try:
        submitted = [submit(engine, engine.adapters.get(n) if n else None, p, 8) for n, p in zip(names, prompts)]
    finally:
        engine.resume()
    texts = [wait(r, e) for r, e in submitted]
    assert engine.stats["batches"] - batches == 2  # the mixable six together, then BitFit
    assert engine.stats["max_batch_seen"] >= 6
    expected = [offline(adapters.get(n), p, 8) for n, p in zip(names, prompts)]
    assert texts == expected
    assert len(set(expected)) >= 5  # the adapters really change the answers


@pytest.mark.parametrize("model", [None, "gemma3-270m"], ids=["smollm2-bpe", "gemma-sentencepiece"])
def test_streamed_text_decodes_only_new_tokens_and_equals_the_full_decode(model):
    """Streaming decodes each row incrementally (not the whole answer at every step); what it streams, joined,
    is exactly the full decode, for a byte-level BPE and a SentencePiece tokenizer, over Korean, emoji and spaces."""
    from transformers import AutoTokenizer

    from groundtune.models import resolve
    from groundtune.serve.batch import Rows

    tok = AutoTokenizer.from_pretrained(resolve(model))
    text = "The answer:  see §3.2 (page 7). 서울의 날씨는 맑습니다 🙂 — done,   twice!\nNew line 한국어."
    tokens = tok(text, add_special_tokens=False).input_ids
    events = []
    r = GenRequest(prompt_ids=[1], adapter=None, max_tokens=len(tokens), emit=events.append)
    rows = Rows(tok, {"tokens": 0, "completed": 0, "cancelled": 0})
    calls = []
    real_decode = tok.decode
    tok.decode = lambda ids, **kw: calls.append(len(ids)) or real_decode(ids, **kw)
    for t in tokens:
        rows.take(r, t)
    tok.decode = real_decode
    streamed = "".join(e[1] for e in events if e[0] == "delta")
    assert streamed == real_decode(tokens, skip_special_tokens=True).lstrip() == r.text
    assert r.finish_reason == "length"
    assert max(calls[:-1]) <= 8, calls  # a few tokens per step, not the whole answer (the last call is the full one)
