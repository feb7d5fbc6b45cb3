"""How an adapter's prompts were built in training, recorded next to its weights so that serving builds them the
same way with no guessing.

An adapter folder may hold ``groundtune_prompt.json`` (written by training; a separate file, so that peft's
``adapter_config.json`` stays exactly peft's and older folders stay valid):

    {"kind": "grounded", "history_turns": 2, "separator": "\\n", "k": 3, "max_prompt_tokens": 1024, "retrieval": true}
    {"kind": "instruct", "template": {"name": "alpaca", "prompt_input": ..., "prompt_no_input": ...,
                                      "response_split": ...}, "max_prompt_tokens": 1024}
    {"kind": "instruct", "template": "chat", "max_prompt_tokens": 1024}

kind "grounded": `groundtune.data.grounded.build_prompt` over the document part (retrieved passages joined by
`separator`, or the request's own documents), the last `history_turns` earlier turns and the question.
kind "instruct": the question is the instruction, the documents its input, through the template it was
trained with ("chat": the tokenizer's chat template). kind "chat": the bare base model of an instruct family
(`base_format`), the tokenizer's chat template over the whole conversation with the documents in a system
message. A folder without the file gets `DEFAULT` (grounded, as `groundtune train` builds doc2dial prompts).

`render` builds a prompt in any of these kinds; the server calls it once per request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from groundtune.errors import DataError, GroundtuneError

PROMPT_FORMAT_NAME = "groundtune_prompt.json"
KINDS = ("grounded", "instruct", "chat")
DEFAULT = {"kind": "grounded", "history_turns": 2, "separator": "\n", "k": 3, "max_prompt_tokens": 1024,
           "retrieval": False}


def from_data_config(data) -> dict:
    """The prompt format of a run's `DataConfig` (what `groundtune train` writes into the adapter folder)."""
    max_prompt = int(getattr(data, "max_prompt_tokens", DEFAULT["max_prompt_tokens"]))
    if data.format == "alpaca":
        from groundtune.data.instruct import CHAT, get_template

        template = get_template(data.template)
        record = CHAT if template == CHAT else {"name": template.name, "prompt_input": template.prompt_input,
                                                "prompt_no_input": template.prompt_no_input,
                                                "response_split": template.response_split}
        return {"kind": "instruct", "template": record, "max_prompt_tokens": max_prompt}
    retrieval = getattr(data, "retrieval", None)
    return {"kind": "grounded", "history_turns": int(data.history_turns), "separator": "\n",
            "k": int(retrieval["k"]) if retrieval else DEFAULT["k"], "max_prompt_tokens": max_prompt,
            "retrieval": bool(retrieval)}


class NoChatTemplate(GroundtuneError):
    """A chat-template prompt was asked of a tokenizer that has no chat template."""


def base_format(tokenizer) -> dict:
    """How the bare base model is prompted: its chat template when it has one, else the default grounded format."""
    if getattr(tokenizer, "chat_template", None):
        return {"kind": "chat", "k": DEFAULT["k"], "max_prompt_tokens": DEFAULT["max_prompt_tokens"]}
    return dict(DEFAULT)


def render(fmt: dict, tokenizer, *, question: str, history: list[str], documents: list[tuple[str, str]],
           system: str | None = None, turns: list[dict] | None = None) -> str:
    """The prompt for `question` in format `fmt`.

    history: earlier turns oldest first, each "user: ..." or "agent: ..."; documents: (title, text) pairs;
    system and turns (the conversation's {"role", "content"} messages, user and assistant only) are read by the
    chat-template kinds only."""
    texts = [text for _, text in documents]
    kind = fmt.get("kind", "grounded")
    if kind == "grounded":
        from groundtune.data.grounded import build_prompt

        n = int(fmt.get("history_turns", 2))
        return build_prompt(str(fmt.get("separator", "\n")).join(t.strip() for t in texts),
                            history[-n:] if n > 0 else [], question)
    template = fmt.get("template")
    if kind == "chat" or template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise NoChatTemplate("this model's tokenizer has no chat template; serve an adapter trained with "
                                 "another one")
        chat = []
        if system or documents:
            chat.append({"role": "system", "content": "\n\n".join(
                x for x in (system, _documents_system(documents) if documents else None) if x)})
        chat += turns if turns is not None else [{"role": "user", "content": question}]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    from groundtune.data.instruct import InstructTemplate

    t = InstructTemplate(template["prompt_input"], template["prompt_no_input"], template["response_split"],
                         template.get("name", "custom"))
    return t.prompt(question, "\n".join(texts))


def _documents_system(documents: list[tuple[str, str]]) -> str:
    lines = ["Answer the user's question from these documents."]
    for n, (title, text) in enumerate(documents, 1):
        lines.append(f"[{n}] {title + ': ' if title else ''}{text}")
    return "\n".join(lines)


def check(fmt: dict, where: str = "prompt format") -> dict:
    """`fmt` with defaults filled in; ValueError naming the key when it cannot be used."""
    if not isinstance(fmt, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(fmt).__name__}")
    kind = fmt.get("kind", "grounded")
    if kind not in KINDS:
        raise DataError(f"{where}: kind is {kind!r}; use one of {', '.join(KINDS)}")
    out = {**DEFAULT, **fmt} if kind == "grounded" else {"max_prompt_tokens": DEFAULT["max_prompt_tokens"], **fmt}
    if kind == "chat":
        out = {"k": DEFAULT["k"], **out}
    for key in ("history_turns", "k", "max_prompt_tokens"):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0):
            raise DataError(f"{where}: {key} is {out[key]!r}; it must be a whole number >= 0")
    if kind == "instruct":
        template = out.get("template")
        if template != "chat" and not (isinstance(template, dict)
                                       and all(isinstance(template.get(k), str) for k in
                                               ("prompt_input", "prompt_no_input", "response_split"))):
            raise DataError(f"{where}: an instruct format needs template 'chat' or an object with prompt_input, "
                             "prompt_no_input and response_split")
    return out


def write(folder: str | os.PathLike, fmt: dict) -> Path:
    path = Path(folder) / PROMPT_FORMAT_NAME
    path.write_text(json.dumps(check(fmt), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read(folder: str | os.PathLike) -> dict:
    """The folder's recorded prompt format, or `DEFAULT` for a folder that has none (older adapters, peft's)."""
    path = Path(folder) / PROMPT_FORMAT_NAME
    if not path.is_file():
        return dict(DEFAULT)
    try:
        return check(json.loads(path.read_text(encoding="utf-8")), str(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete it to use the default grounded format") from None
