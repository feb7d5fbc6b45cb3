"""Prediction files: JSONL, one {"id": ..., "prediction": str, "reference": str | [str, ...]} per line.

`groundtune eval --predictions FILE` reads them; generation writes them with `write_predictions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from groundtune.fileio import jsonl_lines, text_lines
from groundtune.errors import DataError


@dataclass
class Predictions:
    predictions: list[str]
    references: list[list[str]]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.predictions)


def read_predictions(path: str | Path) -> Predictions:
    """Read a predictions JSONL file; any bad line is an error naming the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    predictions, references, ids, seen = [], [], [], {}
    with text_lines(path, what="predictions file") as f:
        for number, record in jsonl_lines(f, path, '{"prediction": …, "reference": …}'):
            where = f"{path}, line {number}"
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object with 'prediction' and 'reference'")
            prediction, reference = record.get("prediction"), record.get("reference", record.get("references"))
            if not isinstance(prediction, str):
                raise DataError(f"{where}: 'prediction' must be a string (use \"\" for an empty output), "
                                 f"got {type(prediction).__name__}")
            refs = [reference] if isinstance(reference, str) else reference
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise DataError(f"{where}: 'reference' must be a string or a non-empty list of strings")
            record_id = str(record.get("id", len(predictions)))
            if record_id in seen:
                raise DataError(f"{where}: id {record_id!r} repeats line {seen[record_id]}; ids must be unique")
            seen[record_id] = number
            predictions.append(prediction)
            references.append(refs)
            ids.append(record_id)
    if not predictions:
        raise DataError(f"{path}: no records; expected JSONL lines with 'prediction' and 'reference'")
    return Predictions(predictions, references, ids)


def write_predictions(path: str | Path, predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                      ids: Sequence[str] | None = None) -> Path:
    """Write a predictions JSONL file atomically (a reference list of one is written as a plain string)."""
    from groundtune.fileio import atomic_write

    if len(predictions) != len(references) or (ids is not None and len(ids) != len(predictions)):
        raise DataError("predictions, references and ids must have the same length")
    lines = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        ref = ref if isinstance(ref, str) else (ref[0] if len(ref) == 1 else list(ref))
        lines.append(json.dumps({"id": str(ids[i]) if ids is not None else str(i), "prediction": pred,
                                 "reference": ref}, ensure_ascii=False))
    return atomic_write(path, "\n".join(lines) + "\n")
