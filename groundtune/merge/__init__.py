"""Model arithmetic over safetensors checkpoints, streamed tensor by tensor in bounded memory (Chat Vector)."""

from groundtune.merge.chat_vector import (
    MergeReport,
    Vector,
    chat_vector,
    extract_vector,
    load_merge_config,
    load_token_map,
    merge,
)
from groundtune.merge.checkpoint import Checkpoint, MergeError

__all__ = ["Checkpoint", "MergeError", "MergeReport", "Vector", "chat_vector", "extract_vector",
           "load_merge_config", "load_token_map", "merge"]
