"""groundtune: adapt a frozen LLM to grounded dialogue and Korean instructions, cheaply, and measure it honestly."""

from importlib import import_module

__version__ = "0.1.0"

# Public names -> module that defines them. Imported lazily so `groundtune --help` stays fast.
_EXPORTS = {
    "load_model": "groundtune.models",
    "attach": "groundtune.methods",
    "detach": "groundtune.methods",
    "LlamaAdapterConfig": "groundtune.methods.llama_adapter",
    "LoraConfig": "groundtune.methods.lora",
    "PromptTuningConfig": "groundtune.methods.prompts",
    "DeptConfig": "groundtune.methods.prompts",
    "AcceptConfig": "groundtune.methods.prompts",
    "BitFitConfig": "groundtune.methods.bitfit",
    "save_adapter": "groundtune.methods.io",
    "load_adapter": "groundtune.methods.io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'groundtune' has no attribute {name!r}")
