"""Synthetic questions (and answers) from an index's passages, so documents alone can train a reranker or an
adapter (InPars, Bonifacio et al. 2022; Promptagator, Dai et al. 2022: questions generated from passages and
kept only when they retrieve their own passage).

A teacher writes one question per passage (and, with `answers`, an answer from the passage): a local model
(`LocalTeacher`: the embedded SmolLM2-135M-Instruct or any `groundtune.load_model` model) or any OpenAI-compatible
endpoint (`EndpointTeacher`: /v1/completions or /v1/chat/completions, which `groundtune serve` provides). Korean
passages get Korean prompts. Each question then passes the filters below, in order, and every drop is counted
by its reason:

    teacher_error   the teacher failed or timed out after its retries, or answered with no text
    length          too short or too long (words; characters for Korean)
    copies_passage  the question repeats a run of the passage verbatim (nothing to learn: BM25 finds it)
    duplicate       the same question (case and punctuation aside) was kept before
    round_trip      the question does not retrieve its own passage in the index's top `round_trip_k`

Output: one jsonl record per kept question, readable both by `groundtune train-reranker` (a reading-comprehension
question row: id, doc_id, question, answer_span_ids naming the passage) and by `groundtune train` (document,
history, question, answer). The run is resumable: every passage's outcome is appended to `<out>.done.jsonl` as it
is decided, and a rerun skips the passages listed there.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from groundtune.errors import GroundtuneError

REASONS = ("teacher_error", "length", "copies_passage", "duplicate", "round_trip")

PROMPTS = {
    "en": {
        "question": "Read the passage and write one question that a user could ask and that the passage answers. "
                    "Write only the question.\n\nPassage: {passage}\n\nQuestion:",
        "answer": "Answer the question from the passage, in one or two sentences.\n\nPassage: {passage}\n\n"
                  "Question: {question}\n\nAnswer:",
    },
    "ko": {
        "question": "다음 글을 읽고, 사용자가 물어볼 만하고 이 글로 답할 수 있는 질문 하나를 한국어로 쓰세요. "
                    "질문만 쓰세요.\n\n글: {passage}\n\n질문:",
        "answer": "다음 글을 바탕으로 질문에 한두 문장으로 답하세요.\n\n글: {passage}\n\n질문: {question}\n\n답:",
    },
}
MAX_PASSAGE_WORDS = 180  # what the teacher reads of a passage: a small model loses the thread beyond it


class TeacherError(GroundtuneError):
    """The teacher gave no usable text (down, too slow, or garbage) after its retries."""


@dataclass
class SynthConfig:
    round_trip_k: int = 5  # the question must retrieve its own passage among the index's top k
    min_words: int = 3
    max_words: int = 40
    min_chars_ko: int = 5  # Korean is counted in characters: a few words carry a whole question
    max_chars_ko: int = 120
    copy_words: int = 8  # a question sharing this many consecutive words with the passage copies it
    answers: bool = False
    batch_size: int = 8
    max_new_tokens: int = 48


@dataclass
class SynthReport:
    generated: int = 0  # passages the teacher was asked about (this run and the ones resumed)
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0  # this run's
    kept_this_run: int = 0

    def to_dict(self) -> dict:
        return {"generated": self.generated, "kept": self.kept, "dropped": {r: self.dropped[r] for r in REASONS},
                "kept_per_min": round(60 * self.kept_this_run / self.seconds, 1) if self.seconds else None}

    def summary(self) -> str:
        return (f"kept {self.kept} of {self.generated}; dropped: "
                + ", ".join(f"{r} {self.dropped[r]}" for r in REASONS))


# ------------------------------------------------------------------------------------------------ teachers


def language_of(text: str) -> str:
    from groundtune.korean import is_korean

    return "ko" if is_korean(text) else "en"


class LocalTeacher:
    """A causal LM loaded in this process; greedy decoding, through its chat template when it has one."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 48, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @classmethod
    def load(cls, model: str | None = None, **kwargs) -> "LocalTeacher":
        from groundtune.models import load_model

        lm, tokenizer = load_model(model)
        return cls(lm, tokenizer, **kwargs)

    def complete(self, prompts: Sequence[str]) -> list[str | Exception]:
        from groundtune.config import GenerationConfig
        from groundtune.generate import generate

        if getattr(self.tokenizer, "chat_template", None):
            prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                          add_generation_prompt=True) for p in prompts]
        gen = GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        return list(generate(self.model, self.tokenizer, list(prompts), gen, progress=False))


class EndpointTeacher:
    """An OpenAI-compatible server: `url` is its /v1/completions or /v1/chat/completions address (a bare .../v1
    means chat); `model` defaults to the first one the server lists at /v1/models. Each prompt is retried `retries` times (timeouts, connection errors, 5xx, unreadable replies),
    then returned as the exception, for the caller to count."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 2, max_new_tokens: int = 48, backoff_s: float = 0.5):
        url = url.rstrip("/")
        if url.endswith("/v1"):
            url += "/chat/completions"
        if not url.endswith(("/completions",)):
            raise GroundtuneError(f"--teacher-url {url}: give an OpenAI-compatible /v1/completions or "
                                  "/v1/chat/completions address (e.g. http://127.0.0.1:8000/v1/chat/completions)")
        self.url, self.chat = url, url.endswith("/chat/completions")
        self.model, self.api_key, self.timeout, self.retries = model, api_key, timeout, retries
        self.max_new_tokens, self.backoff_s = max_new_tokens, backoff_s

    def _once(self, prompt: str) -> str:
        import urllib.request

        body = {"max_tokens": self.max_new_tokens, "temperature": 0}
        model = self.model
        if model is None:
            try:
                model = self.model = self._first_model()
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                model = ""  # a server without /v1/models may not need a name; asked again next time
        if model:
            body["model"] = model
        if self.chat:
            # groundtune serve would otherwise ground the request in its own index
            body.update(messages=[{"role": "user", "content": prompt}], retrieval=False)
        else:
            body["prompt"] = prompt
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.loads(response.read())
        choice = reply["choices"][0]
        text = choice["message"]["content"] if self.chat else choice["text"]
        if not isinstance(text, str):
            raise GroundtuneError("the reply's text is not a string")
        return text

    def _first_model(self) -> str:
        """The first model the server lists at /v1/models (the OpenAI API requires a model name); "" if none."""
        import urllib.request

        base = self.url.rsplit("/chat/completions", 1)[0].rsplit("/completions", 1)[0]
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with urllib.request.urlopen(urllib.request.Request(base + "/models", headers=headers),
                                    timeout=self.timeout) as response:
            listed = json.loads(response.read()).get("data") or []
        return str(listed[0]["id"]) if listed else ""

    def complete(self, prompts: Sequence[str]) -> list[str | Exception]:
        return [self._with_retries(p) for p in prompts]

    def _with_retries(self, prompt: str) -> str | Exception:
        import urllib.error

        error: Exception = TeacherError(f"{self.url}: no attempt made")
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._once(prompt)
            except urllib.error.HTTPError as err:
                error = TeacherError(f"{self.url}: HTTP {err.code}")
                if err.code < 500 and err.code != 429:  # a request the server refuses will not pass on a retry
                    return error
            except (OSError, ValueError, KeyError, IndexError, TypeError) as err:  # down, timeout, garbage
                error = TeacherError(f"{self.url}: {type(err).__name__}: {err}")
        return error


# ------------------------------------------------------------------------------------------------ filters

_LABEL = re.compile(r"^\s*(question|q|질문)\s*[:：]\s*", re.I)
_NUMBERING = re.compile(r"^\s*(\d{1,2}[.)]|[-*•])\s+")  # "1. …", "- …": small models (Gemma 3 270M on Korean) number their one question


def clean_question(text: str) -> str:
    """The teacher's first non-empty line, without a "Question:" label or quotes."""
    for line in text.strip().splitlines():
        line = _LABEL.sub("", _NUMBERING.sub("", line)).strip().strip('"“”\'').strip()
        if line:
            return line
    return ""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _normal(text: str) -> str:
    return " ".join(_words(text))


def length_ok(question: str, language: str, cfg: SynthConfig) -> bool:
    if question.endswith("\ufffd"):
        return False  # cut off inside a character: the teacher ran out of tokens mid-question
    if language == "ko":
        chars = len(question.replace(" ", ""))
        return cfg.min_chars_ko <= chars <= cfg.max_chars_ko
    return cfg.min_words <= len(_words(question)) <= cfg.max_words


def copies_passage(question: str, passage: str, n: int, language: str = "en") -> bool:
    """Whether the question shares `n` consecutive words with the passage (or is, all of it, in the passage).
    Korean words carry particles and are few per sentence: there it is `n` + 4 consecutive letters, spaces aside."""
    if language == "ko":
        q, p = "".join(_words(question)), "".join(_words(passage))
        size = min(n + 4, len(q))
        return bool(q) and any(q[i : i + size] in p for i in range(len(q) - size + 1))
    q, p = _words(question), _words(passage)
    if not q:
        return False
    body = " " + " ".join(p) + " "
    if len(q) < n:
        return f" {' '.join(q)} " in body
    return any(f" {' '.join(q[i:i + n])} " in body for i in range(len(q) - n + 1))


# ------------------------------------------------------------------------------------------------ the run


def record(pid: int, passage, question: str, answer: str) -> dict:
    """One kept question, in the formats `train-reranker` (rc row) and `train` (grounded sample) read."""
    return {"id": f"synth-{pid}_1", "doc_id": passage.doc_id, "question": question,
            "answer_span_ids": list(passage.span_ids), "document": passage.text, "history": [], "answer": answer,
            "passage_id": pid, "source": passage.citation}


def done_path(out: Path) -> Path:
    """The file beside `out` that records which passages are done (kept or dropped), so a rerun goes on."""
    return out.with_name(out.name + ".done.jsonl")


def _read_jsonl_tolerant(path: Path) -> list[dict]:
    """Records of a file this module appends to; a last line cut short by a crash is dropped (and rewritten away)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows, good = [], []
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
            good.append(line)
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise GroundtuneError(f"{path}: line {n + 1} is not JSON; it was not written by `groundtune synth` "
                                      "(remove it, or write to a new --out)") from None
    if len(good) != len(lines) or (good and not good[-1].endswith("\n")):
        from groundtune.fileio import atomic_write

        atomic_write(path, "".join(line if line.endswith("\n") else line + "\n" for line in good))
    return rows


def synthesize(retriever, teacher, out: str | os.PathLike, *, passage_ids: Sequence[int] | None = None,
               config: SynthConfig | None = None, max_seconds: float | None = None,
               show_progress: bool = True) -> SynthReport:
    """Ask `teacher` for a question about each passage of `retriever` (or those in `passage_ids`, in that
    order), filter, and append the kept ones to `out` (jsonl). Passages already decided in an earlier run on
    `out` are skipped; `max_seconds` stops after the batch that passes it (a rerun goes on from there)."""
    from tqdm.auto import tqdm

    from groundtune.retrieval.queries import build_query

    cfg = config or SynthConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    passages = retriever.passages
    ids = list(range(len(passages))) if passage_ids is None else list(passage_ids)
    bad = [i for i in ids if not 0 <= i < len(passages)]
    if bad:
        raise GroundtuneError(f"passage id {bad[0]} is not in the index ({len(passages)} passages)")
    report = SynthReport()
    done = _read_jsonl_tolerant(done_path(out))
    kept_rows = _read_jsonl_tolerant(out)
    seen = {_normal(r["question"]) for r in kept_rows}
    finished = {int(r["passage_id"]) for r in done}
    for r in done:
        report.generated += 1
        if r["outcome"] == "kept":
            report.kept += 1
        else:
            report.dropped[r["outcome"]] += 1
    todo = [i for i in ids if i not in finished]
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="synth", unit="passage", disable=not show_progress)
    with open(out, "a", encoding="utf-8") as kept_file, open(done_path(out), "a", encoding="utf-8") as done_file:
        for at in range(0, len(todo), cfg.batch_size):
            batch = todo[at : at + cfg.batch_size]
            texts = [" ".join(passages[i].text.split()[:MAX_PASSAGE_WORDS]) for i in batch]
            languages = [language_of(t) for t in texts]
            replies = teacher.complete([PROMPTS[lang]["question"].format(passage=t) for t, lang in zip(texts, languages)])
            outcomes: dict[int, str] = {}
            questions: dict[int, str] = {}
            for pid, text, lang, reply in zip(batch, texts, languages, replies):
                question = "" if isinstance(reply, Exception) else clean_question(reply)
                if not question:
                    outcomes[pid] = "teacher_error"
                elif not length_ok(question, lang, cfg):
                    outcomes[pid] = "length"
                elif copies_passage(question, passages[pid].text, cfg.copy_words, lang):
                    outcomes[pid] = "copies_passage"
                elif _normal(question) in seen:
                    outcomes[pid] = "duplicate"
                else:
                    questions[pid] = question
                    seen.add(_normal(question))
            if questions:
                ranked = retriever.rank([build_query(q) for q in questions.values()], cfg.round_trip_k, rerank=False)
                for (pid, question), ranking in zip(list(questions.items()), ranked):
                    if pid not in {i for i, _ in ranking}:
                        outcomes[pid] = "round_trip"
                        seen.discard(_normal(question))
                        del questions[pid]
            answers = {}
            if cfg.answers and questions:
                pids = list(questions)
                replies = teacher.complete([PROMPTS[language_of(texts[batch.index(p)])]["answer"].format(
                    passage=texts[batch.index(p)], question=questions[p]) for p in pids])
                for pid, reply in zip(pids, replies):
                    answer = "" if isinstance(reply, Exception) else reply.strip()
                    if answer:
                        answers[pid] = answer
                    else:
                        outcomes[pid] = "teacher_error"
                        seen.discard(_normal(questions.pop(pid)))
            for pid in batch:
                outcome = "kept" if pid in questions else outcomes[pid]
                if outcome == "kept":
                    kept_file.write(json.dumps(record(pid, passages[pid], questions[pid], answers.get(pid, "")),
                                               ensure_ascii=False) + "\n")
                    report.kept += 1
                    report.kept_this_run += 1
                else:
                    report.dropped[outcome] += 1
                report.generated += 1
            # the kept questions reach the disk before their passages are marked done: a crash in between
            # only asks the teacher again
            kept_file.flush()
            os.fsync(kept_file.fileno())
            for pid in batch:
                done_file.write(json.dumps({"passage_id": pid, "outcome": "kept" if pid in questions else outcomes[pid]})
                                + "\n")
            done_file.flush()
            bar.update(len(batch))
            bar.set_postfix(kept=report.kept, generated=report.generated)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    bar.close()
    report.seconds = time.perf_counter() - start
    return report
