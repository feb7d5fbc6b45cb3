"""The options several commands share, written once: each flag's name, kind and checks live here, and commands
use them through typer's `Annotated` form, e.g.

    overwrite: Annotated[bool, overwrite_flag("Replace an earlier demo's output folder.")] = False
    skip: Skip = []

Most take the help text, because what a flag does is the same everywhere but what it replaces, trains or reads is
the command's own, and each command's `--help` says exactly that. Options whose help is the same everywhere are
whole `Annotated` types (KoreanModel, Skip, TokenMap, TemplateFrom, MaxShardSize, MergeOverwrite). Defaults stay
in the command's signature: with `Annotated`, typer reads them from there."""

from typing import Annotated, Optional

import typer

# --- outputs ---


def overwrite_flag(help: str):
    """--overwrite: replace an output this same command wrote earlier (the output guard refuses anything else)."""
    return typer.Option("--overwrite", help=help)


def output_dir_option(help: str):
    """--output-dir: the folder a run writes; optional, each command has its default folder."""
    return typer.Option(help=help)


def out_option(help: str):
    """--out / -o: the folder or file a retrieval command writes."""
    return typer.Option("--out", "-o", help=help)


# --- inputs ---


def config_argument(help: str):
    """A YAML file as the command's argument (train, sweep)."""
    return typer.Argument(exists=True, dir_okay=False, help=help)


def config_option(help: str):
    """--config: a YAML file whose settings the other flags override."""
    return typer.Option("--config", exists=True, dir_okay=False, help=help)


def model_option(help: str):
    """--model: a model folder, .gguf file, hub id or embedded name; None is the command's default model."""
    return typer.Option(help=help)


def adapter_option(help: str):
    """--adapter: an adapter folder (any method, peft layout) to attach to the model."""
    return typer.Option("--adapter", exists=True, file_okay=False, help=help)


def index_argument(help: str):
    """An index folder written by `groundtune index`, as the command's argument."""
    return typer.Argument(exists=True, file_okay=False, help=help)


def dtype_option(help: str):
    """--dtype of the weights; groundtune.models.check_dtype refuses an unknown one before the model loads."""
    return typer.Option(help=help)


# --- training and sampling ---


def overrides_option(help: str):
    """--set key=value, repeatable (read with common.parse_overrides)."""
    return typer.Option("--set", help=help)


def force_flag(help: str):
    """--force: accept a learning rate above the method's sane bound (train.check_learning_rate)."""
    return typer.Option("--force", help=help)


def seed_option(help: str):
    return typer.Option(help=help)


def limit_option(help: str, least: Optional[int] = None):
    """--limit N: only the first N records. With `least` typer refuses a smaller N; without it the command does
    (common.check_at_least), so that the message names the flag the way the command's other checks do."""
    return typer.Option(min=least, help=help)


# --- whole types ---

# The Korean task commands (classify, summarize-eval) default to the model that reads Korean.
KoreanModel = Annotated[Optional[str], model_option(
    "Model folder, .gguf file, hub id or smollm2-135m; default: gemma3-270m (Gemma 3 270M, which reads Korean).")]

# merge (chat vector)
Skip = Annotated[list[str], typer.Option("--skip", help="Glob pattern of tensors the target keeps unchanged, e.g. "
                                         "'*norm*'; repeat for several.")]
TokenMap = Annotated[Optional[str], typer.Option(
    "--token-map", help="Target token id -> chat token id, for embedding and LM-head rows when vocabularies differ: a "
    "JSON file ({\"32000\": 2}) or 32000:2,32001:32002. Only mapped rows get the vector.")]
TemplateFrom = Annotated[Optional[str], typer.Option(
    "--template-from", help="Where the chat template and eos token come from: a model folder, or 'target' to keep the "
    "target's. Default: the first chat model (or saved vector).")]
SHARD_HELP = "Largest output shard, e.g. 5GB or 500MB."
MaxShardSize = Annotated[str, typer.Option("--max-shard-size", help=SHARD_HELP)]
MergeOverwrite = Annotated[bool, overwrite_flag(
    "Replace an output folder an earlier merge wrote (the old one goes only once the new one is complete; a folder "
    "holding other files is refused).")]
