"""A Polyglot-Ko-like tokenizer and tiny random models sized for it (unit tests only).

Polyglot-Ko's tokenizer cannot be downloaded offline, so we train a small byte-level BPE with the same conventions
on the shipped Korean fixtures: eos "<|endoftext|>", no pad token, no BOS added. The tiny models come from
tests/tiny.py's configs, with this vocabulary and room for Korean prompts (byte-level Hangul is long).
"""

from functools import lru_cache

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from tiny import TINY

EOS = "<|endoftext|>"


def _corpus() -> list[str]:
    from groundtune.tasks.classify import NSMC_TEMPLATE
    from groundtune.data import asset_path, load_instructions
    from groundtune.data.instruct import KOALPACA

    texts = [KOALPACA.prompt_input, KOALPACA.prompt_no_input, NSMC_TEMPLATE, "주어진 기사를 요약하세요 기사:"]
    for r in load_instructions(asset_path("koalpaca/ko_alpaca_data_first100.json")):
        texts += [r["instruction"], r.get("input") or "", r["output"]]
    texts += asset_path("nsmc/ratings_train.txt").read_text(encoding="utf-8").splitlines()
    return texts


@lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok.to_str()


def polyglot_tokenizer(vocab_size: int = 1200) -> PreTrainedTokenizerFast:
    """A fresh tokenizer each call (tests change pad_token / padding_side); the BPE training is cached."""
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)), eos_token=EOS)


def tiny_for(family: str, tokenizer, seed: int = 0, attn_implementation: str = "sdpa"):
    """tests/tiny.py's `family` config with the tokenizer's vocabulary, 1024 positions and no pad id (Polyglot)."""
    torch.manual_seed(seed)
    kwargs = {**TINY[family], "vocab_size": len(tokenizer)}
    kwargs["n_positions" if family == "gpt2" else "max_position_embeddings"] = 1024
    # Wider than the default 0.02 init: sharper next-token distributions that react to every position and token,
    # so that a test comparing two computations fails when they differ.
    config = AutoConfig.for_model(family, **kwargs, initializer_range=0.2)
    config.pad_token_id = None
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation).eval()
