"""A method is one file that registers itself: a toy method defined here, with no line anywhere else in
groundtune, must attach, train, save, load, swap, check its YAML block (its declared ranges included) and
describe itself like the real ones."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import groundtune as gt
from groundtune import methods
from groundtune.config import ConfigError, check_method, load_config
from groundtune.methods import Method, register, trainable_state_dict
from groundtune.ranges import Range, ranged
from tiny import VOCAB, tiny_model

_MODULE = "groundtune_toy_shift"


@dataclass
class ToyShiftConfig:
    """A learned vector added to every input embedding, starting at zero."""

    method = "toy_shift"
    scale: float = ranged(1.0, Range(0, 4, lo_closed=False))  # declared here, and nowhere else


class _Shift(nn.Module):
    def __init__(self, hidden: int, scale: float):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(hidden))
        self.scale = scale

    def hook(self, module, args, output):
        return output + self.scale * self.vector


def _attach(model, config):
    embedding = model.get_input_embeddings()
    shift = _Shift(embedding.weight.shape[1], config.scale)
    setattr(model, _MODULE, shift)
    shift.handle = embedding.register_forward_hook(shift.hook)
    return model


def _detach(model):
    getattr(model, _MODULE).handle.remove()
    delattr(model, _MODULE)
    return model


register(Method(ToyShiftConfig, _attach, _detach))


def _inputs():
    return torch.randint(2, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0))


def test_the_registry_knows_the_real_methods_and_the_toy():
    assert {"llama_adapter", "lora", "prompt_tuning", "dept", "accept", "bitfit", "full", "toy_shift"} <= set(
        methods.names())
    assert gt.ToyShiftConfig is ToyShiftConfig  # exported from the package root with no line there
    assert gt.AcceptConfig is methods.config_class("accept")


def test_toy_method_attaches_trains_saves_loads_and_swaps(tmp_path):
    x = _inputs()
    base_model = tiny_model("llama")
    base = base_model(x).logits
    model = gt.attach(base_model, ToyShiftConfig(scale=0.5))
    assert torch.equal(model(x).logits, base)  # zero init
    assert list(trainable_state_dict(model)) == [f"{_MODULE}.vector"]
    model(x).logits.sum().backward()
    with torch.no_grad():
        getattr(model, _MODULE).vector.add_(1.0)
    trained = model(x).logits
    assert not torch.allclose(trained, base)
    gt.save_adapter(model, tmp_path / "toy")
    model = gt.detach(model)
    assert torch.equal(model(x).logits, base)
    model = gt.load_adapter(model, tmp_path / "toy")
    torch.testing.assert_close(model(x).logits, trained)
    assert methods.attached_config(model) == ToyShiftConfig(scale=0.5)
    model = gt.load_adapter(model, tmp_path / "toy")  # swap onto itself: the first one is removed
    torch.testing.assert_close(model(x).logits, trained)
    assert methods.describe(ToyShiftConfig()) == {"layer": "-", "length": "-"}


def test_toy_method_blocks_are_checked_when_the_yaml_is_read():
    check_method({"method": "toy_shift", "scale": 2.0})
    with pytest.raises(ConfigError, match="scale"):
        check_method({"method": "toy_shift", "scael": 2.0})
    with pytest.raises(ConfigError, match="toy_shift"):
        check_method({"method": "toy_shfit"})


@pytest.mark.parametrize("bad", [0, -1.5, 4.5, "5e0"])
def test_toy_method_ranges_are_declared_on_its_config(bad, tmp_path):
    """The range lives on the toy config's field; the checker reads it there, for a block and for a YAML file."""
    check_method({"method": "toy_shift", "scale": 4})  # the closed end
    with pytest.raises(ConfigError, match=r"method\.scale is .*; it must be in \(0, 4\]"):
        check_method({"method": "toy_shift", "scale": bad})
    path = tmp_path / "run.yaml"
    path.write_text(f"method: {{method: toy_shift, scale: {bad}}}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: method\.scale is .*\(0, 4\]"):
        load_config(path)


def test_a_name_cannot_be_taken_twice():
    @dataclass
    class Other:
        method = "toy_shift"

    with pytest.raises(ValueError, match="toy_shift"):
        register(Method(Other, _attach, _detach))


def test_capabilities_are_declared_on_the_registry_entry():
    """The server and exporters read what a method can do from its registry entry, never from name lists."""
    caps = {name: (m.prefix_safe, m.mixable, m.mergeable) for name, m in methods.registry().items()}
    assert caps["lora"] == (True, True, True)
    assert caps["bitfit"] == (True, False, True) and caps["full"] == (True, False, True)
    assert caps["llama_adapter"] == (False, True, False)
    for name in ("prompt_tuning", "dept", "accept"):
        assert caps[name] == (False, False, False)  # per-row prompts of different lengths: not yet
        assert methods.virtual_tokens(methods.config_from_dict({"method": name, "length": 7})) == 7
    assert caps["toy_shift"] == (False, False, False)  # what a method declares nothing about gets: the safe side
    assert methods.virtual_tokens(ToyShiftConfig()) == 0
