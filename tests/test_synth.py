"""groundtune synth: questions from passages by a teacher, filtered and counted; real endpoints, no mocks.

The teachers are real HTTP servers on 127.0.0.1: `groundtune serve` over a tiny random Qwen2, and a small
OpenAI-compatible server written here that answers from a script (so each filter meets the question it must
drop), plus endpoints that are down, never answer, or answer garbage.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from groundtune.cli import app
from groundtune.data.grounded import load_jsonl_samples
from groundtune.retrieval.index import Retriever, build_index
from groundtune.retrieval.passages import Passage
from groundtune.retrieval.queries import load_rc_queries
from groundtune.retrieval.synth import REASONS, EndpointTeacher, SynthConfig, synthesize

PASSAGES = [
    Passage("fees.md", "Fees // The licence renewal fee is sixty dollars, paid by card or cheque at any office.",
            "Fees", ("0",), headings=("Fees",)),
    Passage("plates.md", "Plates // Return your number plates to the motor office before you move abroad.",
            "Plates", ("0",), headings=("Plates",)),
    Passage("insurance.md", "Insurance // Every registered vehicle needs liability insurance on every single day.",
            "Insurance", ("0",), headings=("Insurance",)),
    Passage("address.md", "Address // Report a change of address within ten days of moving house.",
            "Address", ("0",), headings=("Address",)),
    Passage("ko.md", "갱신 // 운전면허는 만료일 전후 여섯 달 안에 갱신해야 하며 신분증과 사진이 필요합니다.",
            "갱신", ("0",), headings=("갱신",)),
]


class ScriptedTeacher(BaseHTTPRequestHandler):
    """/v1/completions and /v1/chat/completions answering `server.answer(prompt)`; records every prompt."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        self.server.prompts.append(prompt)
        text = self.server.answer(prompt)
        if text is None:
            payload = b"<html>bad gateway</html>"  # garbage: not JSON
        else:
            choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
            payload = json.dumps({"choices": [{"index": 0, **choice}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    servers = []

    def start(answer):
        server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedTeacher)
        server.answer, server.prompts = answer, []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "index"
    build_index(PASSAGES, folder, dense=False, show_progress=False)
    return Retriever.load(folder)


QUESTIONS = {  # passage keyword -> what the scripted teacher asks about it
    "sixty dollars": "Question: How much is the licence renewal fee?",  # kept (label stripped)
    "number plates": "Plates?",  # length
    "liability insurance": "Every registered vehicle needs liability insurance on every single day?",  # copies
    "change of address": "How much is the licence renewal fee?",  # duplicate of the first
    "운전면허": "운전면허를 갱신할 때 무엇이 필요한가요?",  # Korean, kept
}


def _script(prompt: str) -> str:
    if "Answer:" in prompt or "답:" in prompt:
        return "From the passage." if "Answer:" in prompt else "신분증과 사진이 필요합니다."
    return next(q for key, q in QUESTIONS.items() if key in prompt)


def test_each_filter_drops_its_question_and_counts_it(index, scripted, tmp_path):
    server, url = scripted(_script)
    out = tmp_path / "synth.jsonl"
    report = synthesize(index, EndpointTeacher(url, backoff_s=0), out, config=SynthConfig(answers=True),
                        show_progress=False)
    assert report.kept == 2 and report.generated == 5
    assert {r: n for r, n in report.dropped.items() if n} == {"length": 1, "copies_passage": 1, "duplicate": 1}
    # Korean passages get Korean prompts, English ones English prompts
    assert sum("한국어로" in p for p in server.prompts) == 1 and sum("Write only the question" in p for p in server.prompts) == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["How much is the licence renewal fee?", "운전면허를 갱신할 때 무엇이 필요한가요?"]
    # both trainers read the file: train-reranker as question rows naming the passage, train as grounded samples
    queries = load_rc_queries(out)
    assert [(q.doc_id, q.span_ids) for q in queries] == [("fees.md", ("0",)), ("ko.md", ("0",))]
    samples, _ = load_jsonl_samples(out)
    assert [s.answer for s in samples] == ["From the passage.", "신분증과 사진이 필요합니다."]
    assert rows[0]["source"] == "fees.md · Fees"


def test_round_trip_drops_a_question_that_finds_another_passage(index, scripted, tmp_path):
    _, url = scripted(lambda prompt: "When must I report a change of address after moving house?")
    report = synthesize(index, EndpointTeacher(url, backoff_s=0), tmp_path / "s.jsonl", passage_ids=[0],
                        config=SynthConfig(round_trip_k=1), show_progress=False)
    assert report.dropped["round_trip"] == 1 and report.kept == 0


def _listening_socket_that_never_answers():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


@pytest.mark.parametrize("kind", ["down", "slow", "garbage"])
def test_a_bad_teacher_is_retried_then_counted_and_nothing_is_lost(index, scripted, tmp_path, kind):
    out = tmp_path / "synth.jsonl"
    good = synthesize(index, EndpointTeacher(scripted(_script)[1], backoff_s=0), out, passage_ids=[0],
                      show_progress=False)
    assert good.kept == 1
    if kind == "down":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions"  # bound, not listening: refused
    elif kind == "slow":
        sock = _listening_socket_that_never_answers()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions"
    else:
        server, url = scripted(lambda prompt: None)
    teacher = EndpointTeacher(url, timeout=0.2, retries=2, backoff_s=0)
    report = synthesize(index, teacher, out, passage_ids=[0, 1, 2], show_progress=False)
    assert report.dropped["teacher_error"] == 2 and report.kept == 1  # the earlier question is still there
    assert len(out.read_text().splitlines()) == 1
    if kind == "garbage":
        assert len(server.prompts) == 2 * 3  # each prompt tried 1 + retries times
    if kind != "garbage":
        sock.close()


def test_resume_skips_decided_passages_and_survives_a_cut_last_line(index, scripted, tmp_path):
    server, url = scripted(_script)
    out = tmp_path / "synth.jsonl"
    first = synthesize(index, EndpointTeacher(url), out, passage_ids=[0, 1], show_progress=False)
    assert (first.generated, first.kept) == (2, 1)
    with open(out, "a") as f:
        f.write('{"id": "synth-9_1", "quest')  # a crash in the middle of a line
    asked = len(server.prompts)
    second = synthesize(index, EndpointTeacher(url), out, show_progress=False)
    assert len(server.prompts) - asked == 3  # only the three passages not decided before
    assert (second.generated, second.kept) == (5, 2)
    assert sum(second.dropped.values()) + second.kept == second.generated and set(second.dropped) <= set(REASONS)
    assert [json.loads(line)["passage_id"] for line in out.read_text().splitlines()] == [0, 4]


def test_synth_command_against_a_real_groundtune_serve(tmp_path):
    """The CLI with --teacher-url pointing at `groundtune serve` (a tiny random model on 127.0.0.1)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_serve import base_model  # noqa: E402
    from tiny import tiny_tokenizer  # noqa: E402

    from groundtune.serve import BackgroundServer, build

    words = [Passage(f"d{i}.txt", " ".join(f"w{j}" for j in range(2 + 5 * i, 12 + 5 * i)), span_ids=("0",))
             for i in range(6)]
    build_index(words, tmp_path / "index", dense=False, show_progress=False)
    served, engine = build(base_model(), tiny_tokenizer(), base_name="tiny-base")
    try:
        with BackgroundServer(served) as url:
            for endpoint in ("/v1/completions", "/v1/chat/completions"):
                out = tmp_path / f"{endpoint.rsplit('/', 1)[1]}.jsonl"
                result = CliRunner().invoke(app, ["synth", str(tmp_path / "index"), "--out", str(out),
                                                  "--teacher-url", url + endpoint, "--max-new-tokens", "6",
                                                  "--round-trip-k", "6"])
                assert result.exit_code == 0, result.output
                report = json.loads(next(line for line in result.output.splitlines() if line.startswith("{")))
                assert report["generated"] == 6 and report["dropped"]["teacher_error"] == 0, result.output
                assert report["kept"] + sum(report["dropped"].values()) == 6
                assert len(load_rc_queries(out)) == report["kept"]
    finally:
        engine.close()


def test_korean_copies_and_cut_off_questions():
    from groundtune.retrieval.synth import copies_passage, length_ok

    passage = "운전면허 안내 / 수수료 // 갱신 수수료는 일반 면허 기준으로 만 원이며 온라인으로 신청할 수 있습니다."
    assert copies_passage("갱신 수수료는 일반 면허 기준으로 얼마인가요?", passage, 8, "ko")
    assert not copies_passage("운전면허를 갱신하려면 얼마를 내야 하나요?", passage, 8, "ko")
    assert not length_ok("운전면허 안내 / 수수료는 일반 면\ufffd", "ko", SynthConfig())  # ran out of tokens
    assert length_ok("운전면허 갱신 수수료는 얼마인가요?", "ko", SynthConfig())


def test_clean_question_drops_labels_and_list_numbering():
    from groundtune.retrieval.synth import clean_question

    # Gemma 3 270M, asked in Korean for one question, often numbers it as a list
    assert clean_question("1. 나노로봇은 어떻게 종양을 찾나요?\n2. 다음") == "나노로봇은 어떻게 종양을 찾나요?"
    assert clean_question("질문: \"What does it cost?\"") == "What does it cost?"
    assert clean_question("- 2016년에 무엇이 발표됐나요?") == "2016년에 무엇이 발표됐나요?"
    assert clean_question("2016년 10월 10일") == "2016년 10월 10일"  # a number that opens the text stays
