"""groundtune: adapt a frozen LLM to grounded dialogue and Korean instructions, cheaply, and measure it honestly."""

from groundtune._lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
