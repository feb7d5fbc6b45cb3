"""The files around the weights: config and tokenizer from the target, chat template and eos from the chat model.

The merged model keeps the target's tokenizer (a Korean continual-pretraining model often has a larger
vocabulary than the chat model, and its token ids are the ones the merged weights understand); only the chat
template and the end-of-sequence token come from the chat model, since that is the format the chat vector taught.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                   "*.gguf", "*.h5", "*.msgpack", "*.ckpt", "*.pkl")
NOT_COPIED = {"README.md", ".gitattributes"}  # the target's model card does not describe the merge
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
TEMPLATE_DIR = "additional_chat_templates"


def copy_model_files(src: Path, dst: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Copy the top-level non-weight files (config, generation config, tokenizer) of `src` into `dst`."""
    copied = []
    for path in sorted(src.iterdir()):
        if not path.is_file() or path.name in NOT_COPIED or path.name in exclude:
            continue
        if any(fnmatch.fnmatch(path.name, p) for p in WEIGHT_PATTERNS):
            continue
        shutil.copy2(path, dst / path.name)
        copied.append(path.name)
    if (src / TEMPLATE_DIR).is_dir() and TEMPLATE_DIR not in exclude:
        shutil.copytree(src / TEMPLATE_DIR, dst / TEMPLATE_DIR)
    return copied


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def _vocab(folder: Path) -> dict[str, int] | None:
    """token text -> id from tokenizer.json (None when the folder has no tokenizer.json)."""
    data = _json(folder / "tokenizer.json")
    if not data:
        return None
    vocab = data.get("model", {}).get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
    vocab = dict(vocab)
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    return vocab


def eos_ids(folder: Path) -> list[int]:
    """The ids generation stops at: generation_config.json, else config.json."""
    for name in ("generation_config.json", "config.json"):
        value = _json(folder / name).get("eos_token_id")
        if value is not None:
            return value if isinstance(value, list) else [value]
    return []


def adopt_chat_format(out: Path, chat: Path, *, same_vocab: bool, token_map: dict[int, int] | None) -> list[str]:
    """Give `out` (a copy of the target's files) the chat template and eos token of `chat`. Returns warnings.

    With different vocabularies a chat token id means nothing to the target: eos ids are translated through the
    token map (chat id -> target id) or by the token's text in the target's tokenizer.json, and dropped with a
    warning when neither knows them.
    """
    warnings = []
    chat_tok, out_tok = _json(chat / "tokenizer_config.json"), _json(out / "tokenizer_config.json")
    has_template = any((chat / f).is_file() for f in TEMPLATE_FILES) or (chat / TEMPLATE_DIR).is_dir() or (
        "chat_template" in chat_tok)
    if has_template:
        for name in TEMPLATE_FILES:
            (out / name).unlink(missing_ok=True)
            if (chat / name).is_file():
                shutil.copy2(chat / name, out / name)
        shutil.rmtree(out / TEMPLATE_DIR, ignore_errors=True)
        if (chat / TEMPLATE_DIR).is_dir():
            shutil.copytree(chat / TEMPLATE_DIR, out / TEMPLATE_DIR)
        out_tok.pop("chat_template", None)
        if "chat_template" in chat_tok:
            out_tok["chat_template"] = chat_tok["chat_template"]
    else:
        warnings.append(f"{chat} has no chat template: the merged model keeps the target's")

    out_vocab = None if same_vocab else _vocab(out)
    eos = _token_text(chat_tok.get("eos_token"))
    if eos is not None:
        if same_vocab or (out_vocab is not None and eos in out_vocab):
            out_tok["eos_token"] = chat_tok["eos_token"]
            special = _json(out / "special_tokens_map.json")
            if special:
                special["eos_token"] = chat_tok["eos_token"]
                _write_json(out / "special_tokens_map.json", special)
        else:
            warnings.append(f"the chat eos token {eos!r} is not in the target's vocabulary: the merged model keeps "
                            f"the target's eos token {_token_text(out_tok.get('eos_token'))!r}")
    if out_tok:
        _write_json(out / "tokenizer_config.json", out_tok)

    ids = eos_ids(chat)
    if ids and not same_vocab:
        inverse = {chat_id: target_id for target_id, chat_id in (token_map or {}).items()}
        chat_vocab = {i: text for text, i in (_vocab(chat) or {}).items()}
        translated = []
        for i in ids:
            target_id = inverse.get(i, (out_vocab or {}).get(chat_vocab.get(i)))
            if target_id is None:
                warnings.append(f"chat eos id {i} has no counterpart in the target's vocabulary: map it with the "
                                "token map to have generation stop there")
            else:
                translated.append(target_id)
        ids = translated
    if ids:
        generation = _json(out / "generation_config.json")
        if not generation:  # the target had none: keep its own special ids next to the chat's eos
            target_config = _json(out / "config.json")
            generation = {k: target_config[k] for k in ("bos_token_id", "pad_token_id") if k in target_config}
        generation["eos_token_id"] = ids[0] if len(ids) == 1 else ids
        _write_json(out / "generation_config.json", generation)
    return warnings
