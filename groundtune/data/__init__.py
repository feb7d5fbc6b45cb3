"""Data: doc2dial / MultiDoc2Dial readers, grounded samples, instruction data, collation, shipped fixtures."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from groundtune._lazy import lazy_getattr
from groundtune.errors import DataError  # noqa: F401  (defined with the other errors; exported here)


def asset_path(name: str = "") -> Path:
    """Path of a fixture shipped in `groundtune/assets/` (e.g. ``asset_path("doc2dial")``)."""
    root = Path(str(resources.files("groundtune") / "assets"))
    path = root / name
    if not path.exists():
        available = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise FileNotFoundError(f"no shipped asset {name!r} in {root}; available: {', '.join(available) or 'none'}")
    return path


# Public names -> module that defines them. Lazy so that `import groundtune.data` never pulls in torch.
_EXPORTS = {
    "Span": "groundtune.data.doc2dial",
    "Document": "groundtune.data.doc2dial",
    "Reference": "groundtune.data.doc2dial",
    "Turn": "groundtune.data.doc2dial",
    "Dialogue": "groundtune.data.doc2dial",
    "load_documents": "groundtune.data.doc2dial",
    "load_dialogues": "groundtune.data.doc2dial",
    "Sample": "groundtune.data.sample",
    "DropReport": "groundtune.data.sample",
    "encode_prompt": "groundtune.data.sample",
    "GroundedConfig": "groundtune.data.grounded",
    "build_prompt": "groundtune.data.grounded",
    "highlight": "groundtune.data.grounded",
    "grounded_samples": "groundtune.data.grounded",
    "TurnContext": "groundtune.data.grounded",
    "turn_contexts": "groundtune.data.grounded",
    "samples_from_passages": "groundtune.data.grounded",
    "load_jsonl_samples": "groundtune.data.grounded",
    "split_by_dialogue": "groundtune.data.grounded",
    "InstructTemplate": "groundtune.data.instruct",
    "load_instructions": "groundtune.data.instruct",
    "instruction_samples": "groundtune.data.instruct",
    "get_template": "groundtune.data.instruct",
    "split_response": "groundtune.data.instruct",
    "encode": "groundtune.data.collate",
    "Collator": "groundtune.data.collate",
    "pad_token_id": "groundtune.data.collate",
    "IGNORE_INDEX": "groundtune.data.collate",
}

__all__ = sorted([*_EXPORTS, "DataError", "asset_path"])


__getattr__ = lazy_getattr(__name__, _EXPORTS)
