"""BitFit (Ben Zaken et al., 2022): train only the bias terms of the frozen model.

Every bias is trained: attention, feed-forward and layer-norm biases, as in the paper. Families without biases
have nothing to train: Llama, Mistral and Gemma have none at all (attach raises), Qwen2 has them on the query,
key and value projections only (BitFit trains those), GPT-2 and GPT-NeoX have them everywhere.

BitFit changes base parameters in place; attach keeps their values and detach puts them back (_in_place).
"""

from __future__ import annotations

from dataclasses import dataclass

from groundtune.methods import Method, register
from groundtune.methods._in_place import head_parameters, is_head, restore_in_place, task_head, train_in_place
from groundtune.errors import ConfigError


@dataclass
class BitFitConfig:
    """No options: every bias term trains, plus the task head of a sequence classifier."""

    method = "bitfit"


def attach(model, config: BitFitConfig):
    head = set(task_head(model))
    biases = [name for name, _ in model.named_parameters() if name.endswith("bias") and name not in head]
    if not biases:
        raise ConfigError(
            f"{type(model).__name__} ({model.config.model_type}) has no bias terms, so BitFit has nothing to train "
            "(Llama, Mistral and Gemma models have none). Use lora, llama_adapter or a prompt method instead."
        )
    train_in_place(model, biases + sorted(head))
    return model


def detach(model):
    restore_in_place(model)
    return model


def parameter_count(model, config: BitFitConfig) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias") and not is_head(name)) \
        + head_parameters(model)


register(Method(BitFitConfig, attach, detach, describe=lambda config: {"layer": "all", "length": "biases"},
                parameter_count=parameter_count,
                prefix_safe=True, mergeable=True))
