"""Chat vector commands (`groundtune merge chat-vector | extract | apply`, a sub-group of the app) and
`groundtune export`, which folds or reshapes an adapter for another engine."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from groundtune.cli.options import SHARD_HELP, MaxShardSize, MergeOverwrite, Skip, TemplateFrom, TokenMap, \
    config_option, model_option, out_option, overwrite_flag

merge_app = typer.Typer(
    help="Chat Vector: give a continually pre-trained model chat ability without training, "
    "θ_target + Σ w (θ_chat − θ_base), streamed over safetensors in bounded memory.",
    no_args_is_help=True,
)


def _merge_report(step, *args, **kwargs):
    """Run a merge step and print its summary (bad input ends in the app's one error handler)."""
    typer.echo(step(*args, **kwargs).summary())


def _merge_recipe(config, chat, base, ratio) -> dict:
    """Keyword arguments for merge() from --config and the vector flags (--chat replaces the config's vectors,
    --ratio alone re-weights them)."""
    from groundtune.merge import Vector, load_merge_config

    recipe = load_merge_config(config) if config else {}
    if chat:
        if base is None:
            raise typer.BadParameter("--chat needs --base (the model the chat model was tuned from)")
        recipe["vectors"] = [Vector(r, chat=c, base=base) for c, r in zip(chat, _pair_ratios(chat, ratio, "--chat"))]
    elif base is not None:
        raise typer.BadParameter("--base goes with --chat")
    elif ratio:
        vectors = recipe.get("vectors") or []
        for vector, r in zip(vectors, _pair_ratios(vectors, ratio, "config vector")):
            vector.ratio = r
    return recipe


def _pair_ratios(paths: list, ratios: list[float], what: str) -> list[float]:
    if not ratios:
        return [1.0] * len(paths)
    if len(ratios) != len(paths):
        raise typer.BadParameter(f"give one --ratio per {what}: {len(paths)} {what}, {len(ratios)} --ratio")
    return ratios


@merge_app.command("chat-vector")
def merge_chat_vector(
    target: Annotated[Optional[Path], typer.Option(
        "--target", help="The continually pre-trained model (e.g. a Korean CP) that receives the vector(s); its config "
        "and tokenizer are kept.")] = None,
    chat: Annotated[list[Path], typer.Option(
        "--chat", help="Chat / instruction-tuned model; repeat for several vectors.")] = [],
    base: Annotated[Optional[Path], typer.Option(
        "--base", help="The base model the chat model(s) were tuned from.")] = None,
    ratio: Annotated[list[float], typer.Option(
        "--ratio", help="Weight w of each chat vector, one per --chat (default 1.0).")] = [],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder; written to a temporary sibling and renamed into place only when complete.")]
    = None,
    config: Annotated[Optional[Path], config_option(
        "YAML recipe: target, out, base, vectors ([{chat, ratio} or {vector, ratio}]), skip, token_map, "
        "template_from, max_shard_size. Flags given on the command line win over it.")] = None,
    skip: Skip = [],
    token_map: TokenMap = None,
    template_from: TemplateFrom = None,
    max_shard_size: Annotated[Optional[str], typer.Option("--max-shard-size", help=SHARD_HELP + " Default 5GB.")]
    = None,
    overwrite: MergeOverwrite = False,
):
    """Merge in one pass: out = target + Σ ratio_i (chat_i − base). Tensors stream a chunk at a time, so memory
    stays flat whatever the model size. Embeddings and LM head stay the target's when vocabularies differ (or
    get only --token-map rows); the chat template and eos come from the chat model."""
    from groundtune.merge import merge

    recipe = _merge_recipe(config, chat, base, ratio)
    flags = {"target": target, "out": out, "token_map": token_map, "template_from": template_from,
             "max_shard_size": max_shard_size}
    recipe.update({k: v for k, v in flags.items() if v is not None})
    if skip:
        recipe["skip"] = skip
    recipe["overwrite"] = overwrite or recipe.get("overwrite", False)
    for key, flag in (("target", "--target"), ("out", "--out"), ("vectors", "--chat")):
        if not recipe.get(key):
            raise typer.BadParameter(f"{flag} is required (or give it in --config)")
    _merge_report(merge, recipe.pop("target"), recipe.pop("vectors"), recipe.pop("out"), **recipe)


@merge_app.command("extract")
def merge_extract(
    base: Annotated[Path, typer.Option("--base", help="The base model the chat model was tuned from.")],
    chat: Annotated[Path, typer.Option("--chat", help="The chat / instruction-tuned model.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the vector (vector*.safetensors, chat_vector.json and "
                                      "the chat model's tokenizer files).")],
    skip: Annotated[list[str], typer.Option(
        "--skip", help="Glob pattern of tensors to leave out of the vector; repeatable.")] = [],
    dtype: Annotated[str, typer.Option("--dtype", help="float32 (applying it equals the one-shot merge bit for bit), "
                                       "or bfloat16 / float16 for half the size.")] = "float32",
    max_shard_size: MaxShardSize = "5GB",
    overwrite: MergeOverwrite = False,
):
    """Save the chat vector θ_chat − θ_base, to add to one or more targets later with `groundtune merge apply`."""
    from groundtune.merge import extract_vector

    _merge_report(extract_vector, base, chat, out, skip=skip, dtype=dtype, max_shard_size=max_shard_size,
                  overwrite=overwrite)


@merge_app.command("apply")
def merge_apply(
    target: Annotated[Path, typer.Option("--target", help="The model that receives the vector(s).")],
    vector: Annotated[list[Path], typer.Option(
        "--vector", help="A folder written by `groundtune merge extract`; repeat for several.")],
    ratio: Annotated[list[float], typer.Option(
        "--ratio", help="Weight of each vector, one per --vector (default 1.0).")] = [],
    out: Annotated[Path, typer.Option("--out", help="Output folder (renamed into place only when complete).")] = ...,
    skip: Skip = [],
    token_map: TokenMap = None,
    template_from: TemplateFrom = None,
    max_shard_size: MaxShardSize = "5GB",
    overwrite: MergeOverwrite = False,
):
    """Add saved vectors to a target: out = target + Σ ratio_i vector_i, with the same rules as chat-vector."""
    from groundtune.merge import Vector, merge

    ratios = _pair_ratios(vector, ratio, "--vector")
    _merge_report(lambda: merge(target, [Vector(r, saved=v) for v, r in zip(vector, ratios)], out, skip=skip,
                                token_map=token_map, template_from=template_from, max_shard_size=max_shard_size,
                                overwrite=overwrite))


def export(
    adapter: Annotated[Path, typer.Argument(
        help="Adapter folder from training (or, for merged, a chat-vector model folder).")],
    to: Annotated[str, typer.Option(
        "--for", help="vllm: a LoRA folder for `vllm serve BASE --enable-lora --lora-modules NAME=OUT`; merged: the "
        "adapter folded into plain safetensors shards with the tokenizer.")],
    out: Annotated[Path, out_option("Output folder (written whole, then renamed into place).")],
    model: Annotated[Optional[str], model_option(
        "Base model the adapter was trained on (merged only; default: the one its adapter_config.json names).")]
    = None,
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard (merged).")] = "5GB",
    overwrite: Annotated[bool, overwrite_flag("Replace an earlier export in --out.")] = False,
):
    """Export an adapter for another engine: LoRA for vLLM as it is, or LoRA / BitFit / full fine-tuning merged into
    the weights. Prompt methods and LLaMA-Adapter cannot be merged and are refused with the reason."""
    from groundtune.merge.export import export as run_export

    typer.echo(f"exported: {run_export(adapter, out, to=to, model=model, max_shard_size=max_shard_size, overwrite=overwrite)}")
