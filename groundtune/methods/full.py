"""Full fine-tuning, the reference every parameter-efficient method is measured against: every weight trains.

A method like the others, so that GLUE runs and sweeps need no special case. attach keeps a copy of every
weight (twice the model's memory: meant for the small encoders of the GLUE comparison) so that detach gives
the base model back exactly, as for every other method.
"""

from __future__ import annotations

from dataclasses import dataclass

from groundtune.methods import Method, register
from groundtune.methods._in_place import restore_in_place, train_in_place


@dataclass
class FullConfig:
    """No options: every parameter of the model trains."""

    method = "full"


def attach(model, config: FullConfig):
    train_in_place(model, [name for name, _ in model.named_parameters()])
    return model


def detach(model):
    restore_in_place(model)
    return model


register(Method(FullConfig, attach, detach, describe=lambda config: {"layer": "all", "length": "all"},
                parameter_count=lambda model, config: sum(p.numel() for p in model.parameters()),
                prefix_safe=True, mergeable=True))
