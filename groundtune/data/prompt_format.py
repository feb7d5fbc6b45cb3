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
trained with ("chat": the tokenizer's chat template). A folder without the file gets `DEFAULT` (grounded, as
`groundtune train` builds doc2dial prompts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PROMPT_FORMAT_NAME = "groundtune_prompt.json"
KINDS = ("grounded", "instruct")
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


def check(fmt: dict, where: str = "prompt format") -> dict:
    """`fmt` with defaults filled in; ValueError naming the key when it cannot be used."""
    if not isinstance(fmt, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(fmt).__name__}")
    kind = fmt.get("kind", "grounded")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind is {kind!r}; use one of {', '.join(KINDS)}")
    out = {**DEFAULT, **fmt} if kind == "grounded" else {"max_prompt_tokens": DEFAULT["max_prompt_tokens"], **fmt}
    for key in ("history_turns", "k", "max_prompt_tokens"):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0):
            raise ValueError(f"{where}: {key} is {out[key]!r}; it must be a whole number >= 0")
    if kind == "instruct":
        template = out.get("template")
        if template != "chat" and not (isinstance(template, dict)
                                       and all(isinstance(template.get(k), str) for k in
                                               ("prompt_input", "prompt_no_input", "response_split"))):
            raise ValueError(f"{where}: an instruct format needs template 'chat' or an object with prompt_input, "
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
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to use the default grounded format") from None
