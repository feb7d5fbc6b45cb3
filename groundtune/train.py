"""Training: a frozen base, one method, AdamW with warm-up, clipping, accumulation, mixed precision.

`fit` is the one loop every trainer in groundtune runs (decoder adapters here, encoder classifiers in
groundtune.tasks.glue): a task supplies its batches and its loss, fit does the rest. It runs through accelerate, so
the same code runs on one CPU, one GPU, DDP, DeepSpeed ZeRO-3 or FSDP
(`accelerate launch --config_file examples/accelerate/... -m groundtune train run.yaml`).

Two choices matter for speed:
- Loss on answer tokens only, with the LM head computed only at the supervised positions (their hidden states
  are gathered before the head), which skips nearly all of the vocabulary projection on long grounded inputs.
- With bf16 mixed precision, the frozen linear weights are cast to bf16 once for the run instead of by autocast
  in every forward (models.frozen_weights_in): the same numbers, without the casts.
- Nothing below the lowest adapted layer needs a backward pass; we never make embeddings require grad, so
  autograd skips those layers.

Checkpoints hold only the trainable parameters plus optimizer, scheduler, data position and RNG state, and are
written atomically; `resume=True` continues bit-for-bit where a run stopped (even after SIGKILL).

The loop sits below the config layer: it imports nothing above the data and methods layers, and reads a run
config (groundtune.config.TrainConfig) only through its attributes, so that trainers anywhere (the rerankers
in groundtune.retrieval) can use it without an import circle.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from groundtune.errors import ConfigError, GroundtuneError, OutputError, ResumeError, TrainingDiverged
from groundtune.fileio import atomic_folder, atomic_write, guard_output
from groundtune.methods import attach, config_from_dict, count_trainable, optimizer_groups, trainable_state_dict
from groundtune.methods.io import save_adapter
from groundtune.models import frozen_weights_in
from groundtune.plots import plot_losses

CHECKPOINT = "checkpoint"
ADAPTER = "adapter"


def answer_loss_sum(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number of supervised tokens), with the LM head run only at supervised positions.

    The hidden states of the positions whose next token is supervised are gathered before the head
    (models.supervised_head), so the vocabulary projection, its fp32 copy and the softmax cover the answer
    tokens alone, not every row from the earliest answer on: with Gemma 3's 262k vocabulary that was a large
    share of a step. Positions are counted from the end, which holds for every method (see supervised_head)."""
    from accelerate.utils import extract_model_from_parallel

    from groundtune.models import supervised_head

    labels = batch["labels"]
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)  # the logit at col predicts the token at col + 1
    targets = labels[rows, cols + 1]
    with supervised_head(extract_model_from_parallel(model), rows, labels.shape[1] - cols):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch.get("position_ids"), use_cache=False).logits
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum")
    return total, torch.tensor(targets.numel(), device=labels.device)


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Token-mean cross-entropy on supervised positions, computing logits only from the first answer onward."""
    total, count = answer_loss_sum(model, batch)
    return total / count.clamp(min=1)


@dataclass
class TrainResult:
    adapter_dir: Path
    losses: list[dict] = field(default_factory=list)
    model: object = None
    trainable_params: int = 0
    main_process: bool = True  # False on the other processes of a multi-process run: they wrote nothing


def _save_checkpoint(out: Path, model, optimizer, scheduler, state: dict) -> None:
    with atomic_folder(out / CHECKPOINT) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in trainable_state_dict(model).items()}
        save_file(tensors, tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))


def _load_checkpoint(out: Path, model, optimizer, scheduler) -> dict:
    folder = out / CHECKPOINT
    state = _read_state(folder)
    try:
        saved = load_file(folder / "trainable.safetensors")
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
    except Exception as err:  # safetensors' and torch's own errors for truncated or corrupt files
        raise OutputError(f"{folder} is truncated or corrupt ({type(err).__name__}: {err}); start afresh with "
                          "--overwrite, or in a new output_dir") from None
    params = trainable_state_dict(model)
    if set(saved) != set(params):
        raise ResumeError(f"{folder} was written for another method or model; start a new output_dir or drop --resume")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    return state


def _resolved_precision(schedule: Schedule, out: Path | None, resume: bool) -> tuple[str, str]:
    """The precision this run trains in: "auto" resolved for this process's device, except that a resumed run
    keeps the precision its checkpoint was written in, so that it continues as it started."""
    from groundtune.models import training_precision

    if schedule.precision == "auto" and resume and out is not None and (out / CHECKPOINT / "state.json").exists():
        state = _read_state(out / CHECKPOINT)
        started = state.get("precision") or state.get("config", {}).get("precision")  # older checkpoints: as asked
        if started and started != "auto":
            return started, "as the resumed run started"
    # The device accelerate will pick, read before the Accelerator exists: creating accelerate's PartialState here
    # would fix the process group before the Accelerator passes its own settings (a 2-process CPU run became 1).
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return training_precision(schedule.precision, "cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


def _read_state(folder: Path) -> dict:
    try:
        state = json.loads((folder / "state.json").read_text())
        if not isinstance(state, dict) or "step" not in state:
            raise GroundtuneError("no step")
        return state
    except (OSError, ValueError) as err:
        raise OutputError(f"{folder / 'state.json'} is missing or corrupt ({err}); start afresh with --overwrite, "
                          "or in a new output_dir") from None


# Settings a resume may change: they cannot change the adapter or the scores. A longer schedule (max_steps or
# epochs raised) is allowed too, as an explicit continuation.
RESUMABLE = {"save_every", "trust_remote_code", "output_dir"}
LONGER = {"max_steps", "epochs"}
ADDED = {"group_by_length": False}  # settings added since, with the value runs saved before them had


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "method":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resume_differences(saved: dict, cfg) -> list[str]:
    """The settings of `cfg` (a TrainConfig) that differ from `saved` (the resumed run's) in a way that changes
    the result."""
    from dataclasses import asdict

    before, now = _flat(saved), _flat(asdict(cfg))
    out = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if a == b or key in RESUMABLE or (key not in before and ADDED.get(key, a) == b):
            continue
        if key == "precision" and b == "auto":  # a resumed "auto" run continues in the precision it started in
            continue
        if key in LONGER and a is not None and b is not None and b > a:
            continue
        out.append(f"{key}: {a!r} -> {b!r}")
    return out


def prepare_output(cfg, *, resume: bool = False, overwrite: bool = False, command: str = "train") -> None:
    """Check cfg.output_dir before any model loads (through the one output guard, fileio.guard_output). Without
    resume: it must be new or empty, or an earlier output of `command` with `overwrite`; it must not be one of the
    run's inputs. With resume: a checkpoint must be there, and its run must have had the same settings, except
    logging ones or a longer schedule; every difference is listed."""
    import yaml

    out = Path(cfg.output_dir)
    inputs = [p for p in (cfg.data.train, cfg.data.eval, cfg.data.documents, cfg.model) if p]
    folder = out / CHECKPOINT
    if resume and not folder.exists():
        raise ResumeError(f"--resume: there is no checkpoint in {out} to continue ({folder} does not exist); drop "
                          "--resume to start afresh, or pass --resume-if-possible to continue only when there is one")
    if not resume and folder.exists() and not overwrite:
        raise OutputError(f"{out} already holds a checkpoint: pass --resume to continue it, --overwrite to start "
                          "afresh, or choose another output_dir")
    guard_output(out, command=command, inputs=inputs, overwrite=overwrite, resume=resume)
    if resume:
        saved = _read_state(folder).get("config")
        if saved is None and (out / "config.yaml").exists():  # checkpoints written before configs were kept
            saved = yaml.safe_load((out / "config.yaml").read_text())
        if saved is not None:
            differ = resume_differences(saved, cfg)
            if differ:
                raise ResumeError(f"{folder} was written with other settings, so --resume would mix two runs: "
                                  + "; ".join(differ) + ". Resume with the checkpoint's settings (only logging "
                                  "settings or a longer max_steps / epochs may change), or start afresh with "
                                  "--overwrite or a new output_dir")


@dataclass
class Schedule:
    """How every trainer here steps, whatever it trains: a run config's settings, or a task runner's own."""

    lr: float
    batch_size: int  # per process
    epochs: float = 1.0
    max_steps: int | None = None  # wins over epochs
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (mixed precision through accelerate) | auto (models.training_precision)
    seed: int = 0
    save_every: int = 50  # optimizer steps between checkpoints (when fit() is given an output folder)
    decay: str = "cosine"  # cosine | linear, after the warm-up
    frozen_bf16: bool = True  # bf16 precision: frozen linear weights cast once, not in every forward (same numbers)

    @classmethod
    def of(cls, cfg) -> "Schedule":
        """The schedule a run config (a TrainConfig) asks for."""
        return cls(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, max_steps=cfg.max_steps,
                   warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                   grad_accum=cfg.grad_accum, precision=cfg.precision, seed=cfg.seed, save_every=cfg.save_every)


class AnswerTask:
    """What fit() needs from a task, for decoders: prompt/answer samples, left-padded batches, answer-only loss.

    A task supplies `size`, `batches(epoch, size)` (the epoch's global batches of example indices),
    `collate(indices)` (a batch of tensors) and `loss_sum(model, batch)` ((summed loss, count): fit() takes the
    mean over the whole global batch); optionally `parameter_groups(model, lr)`. Encoder classification
    (groundtune.tasks.glue) supplies its own.
    """

    def __init__(self, tokenizer, samples: list, max_prompt_tokens: int | None, max_answer_tokens: int | None,
                 seed: int, group_by_length: bool = False):
        from groundtune.data.collate import Collator, encode

        self.encoded = [encode(tokenizer, s, max_prompt_tokens, max_answer_tokens) for s in samples]
        self.collator = Collator(tokenizer, padding_side="left")
        self.seed = seed
        self.size = len(self.encoded)
        self.group_by_length = group_by_length

    def batches(self, epoch: int, size: int) -> list[list[int]]:
        from groundtune.data.order import batches

        return batches([len(e["input_ids"]) for e in self.encoded], size, self.seed, epoch, self.group_by_length)

    def collate(self, rows: list[int]) -> dict:
        return self.collator([self.encoded[j] for j in rows])

    def loss_sum(self, model, batch: dict):
        return answer_loss_sum(model, batch)


@dataclass
class FitResult:
    model: object
    losses: list[dict]
    trainable_params: int
    main_process: bool
    finished: bool  # False when stop_after ended the run early


def _scheduler(optimizer, schedule: Schedule, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup}.get(schedule.decay)
    if make is None:
        raise GroundtuneError(f"decay must be 'cosine' or 'linear', not {schedule.decay!r}")
    return make(optimizer, int(schedule.warmup_ratio * total_steps), total_steps)


def fit(model, task, schedule: Schedule, *, out: Path | None = None, config=None,
        resume: bool = False, overwrite: bool = False, progress: bool = True, stop_after: int | None = None,
        desc: str = "train") -> FitResult:
    """The one training loop: AdamW over the trainable parameters, warm-up then cosine or linear decay,
    clipping, accumulation and mixed precision through accelerate, so the same code runs on one CPU, a GPU, or
    under `accelerate launch` with N processes.

    There, `schedule.batch_size` is per process: each optimizer step sees one global batch of N x batch_size
    examples, cut in N consecutive shards, the same examples in the same order a single process with batch size
    N x batch_size sees, with the same mean loss. With `out`, the main process writes checkpoints there (and
    `config` as config.yaml) and `resume` continues from one bit for bit; without it nothing is written.
    `stop_after` ends the run after that many optimizer steps, as an interruption would (for tests).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from tqdm.auto import tqdm

    # accelerate keeps one state per process; reset it (not the distributed set-up) so runs in one process,
    # such as a sweep, can each choose their precision. accelerate has no public way to do this (transformers'
    # Trainer calls the same).
    AcceleratorState._reset_state()
    precision, why = _resolved_precision(schedule, out, resume)
    accelerator = Accelerator(mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(precision, "no"),
                              gradient_accumulation_steps=schedule.grad_accum)
    world, rank = accelerator.num_processes, accelerator.process_index
    launched = int(os.environ.get("WORLD_SIZE", world))  # set by torchrun, so by `accelerate launch`
    if launched != world:
        # e.g. `accelerate launch --multi_gpu` on a machine without GPUs: every process would train on its own
        # and all of them would write the same output folder.
        raise RuntimeError(f"launched as {launched} processes, but accelerate set up {world}: on CPUs launch with "
                           "ACCELERATE_USE_CPU=1 (see the README, 'Past one machine')")

    global_batch = schedule.batch_size * world
    batches_per_epoch = len(task.batches(0, global_batch))
    steps_per_epoch = max(1, batches_per_epoch // schedule.grad_accum)
    total_steps = schedule.max_steps or max(1, math.ceil(schedule.epochs * steps_per_epoch))

    groups = task.parameter_groups(model, schedule.lr) if hasattr(task, "parameter_groups") else \
        optimizer_groups(model, schedule.lr)
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = _scheduler(optimizer, schedule, total_steps)
    # The schedule counts optimizer steps, so it is stepped here, not by accelerate: a prepared scheduler steps
    # once per process on each optimizer step, as if every process had a data loader of its own.
    model, optimizer = accelerator.prepare(model, optimizer)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "losses": [], "num_processes": world, "precision": precision}
    if out is not None and resume and (out / CHECKPOINT).exists():
        state = _load_checkpoint(out, accelerator.unwrap_model(model), optimizer, scheduler)
        state.setdefault("precision", precision)  # a checkpoint from before precisions were recorded
        if state.setdefault("num_processes", 1) != world:
            raise GroundtuneError(f"{out / CHECKPOINT} was written by a run of {state['num_processes']} process(es); "
                             f"resume it with as many (this one has {world}), or start a new output_dir")
    elif out is not None and (out / CHECKPOINT).exists():
        if not overwrite:
            raise OutputError(f"{out} already holds a checkpoint: pass --resume to continue it, --overwrite to "
                              "start afresh, or choose another output_dir")
        if accelerator.is_main_process:
            import shutil

            shutil.rmtree(out / CHECKPOINT)
    if config is not None:
        from dataclasses import asdict

        state["config"] = asdict(config)  # what a resume is checked against (and config.yaml below)
    accelerator.wait_for_everyone()  # every process has looked for a checkpoint before the main one writes
    if out is not None and accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if config is not None:
            import yaml

            atomic_write(out / "config.yaml", yaml.safe_dump(state["config"], sort_keys=False, allow_unicode=True))

    n_trainable = count_trainable(model)
    bar = tqdm(total=total_steps, initial=state["step"], disable=not progress or not accelerator.is_main_process,
               desc=f"{desc} ({n_trainable:,} params)", unit="step")
    # bf16 autocast recasts a frozen fp32 weight in every forward; cast once here instead (the same numbers).
    # One process only: sharded or replicated parameters (DDP, FSDP, ZeRO-3) must stay the ones prepared.
    if progress and accelerator.is_main_process and schedule.precision != precision:
        print(f"precision {schedule.precision}: {precision} ({why})", flush=True)
    cast = precision == "bf16" and schedule.frozen_bf16 and world == 1
    with frozen_weights_in(accelerator.unwrap_model(model), torch.bfloat16) if cast else contextlib.nullcontext():
        model.train()
        running, micro = 0.0, 0
        finished = True
        while state["step"] < total_steps:
            batches = task.batches(state["epoch"], global_batch)
            while state["batch_in_epoch"] < len(batches) and state["step"] < total_steps:
                rows = batches[state["batch_in_epoch"]]
                shard = rows[rank * schedule.batch_size:(rank + 1) * schedule.batch_size]
                # The last global batch can leave a process without examples; it still joins the gradient
                # all-reduce, with one example weighted zero.
                weight = 1.0 if shard else 0.0
                batch = task.collate(shard or rows[:1])
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with accelerator.accumulate(model), accelerator.autocast():
                    total, count = task.loss_sum(model, batch)
                    # Mean over the global batch: this process's sum over all processes' count. The gradient
                    # all-reduce averages over processes, so the backward loss is scaled by their number.
                    count = torch.as_tensor(count, device=accelerator.device)
                    tokens = accelerator.reduce(count * weight, reduction="sum") if world > 1 else count
                    loss = total * weight / tokens.clamp(min=1)
                    accelerator.backward(loss * world)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                    schedule.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients and not optimizer.step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                state["batch_in_epoch"] += 1
                running += loss.item()
                micro += 1
                if not accelerator.sync_gradients:
                    continue
                if world > 1:
                    running = accelerator.reduce(torch.tensor(running, device=accelerator.device), reduction="sum").item()
                _stop_if_diverged(model, running / micro, state["step"] + 1, out, schedule.lr)  # the same on every process
                state["step"] += 1
                state["losses"].append({"step": state["step"], "loss": running / micro, "lr": scheduler.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(loss=f"{running / micro:.3f}")
                running, micro = 0.0, 0
                if out is not None and (state["step"] % schedule.save_every == 0 or state["step"] == total_steps):
                    if accelerator.is_main_process:
                        _save_checkpoint(out, accelerator.unwrap_model(model), optimizer, scheduler, state)
                if stop_after is not None and state["step"] >= stop_after:
                    finished = False
                    break
            if not finished:
                break
            if state["batch_in_epoch"] >= len(batches):
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
    bar.close()
    accelerator.wait_for_everyone()
    # keep_fp32_wrapper=False: take back the autocast wrapper accelerate put on forward(), so the caller's model
    # runs in its own precision again.
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    model.eval()
    return FitResult(model, state["losses"], n_trainable, accelerator.is_main_process, finished)


def _stop_if_diverged(model, loss: float, step: int, out: Path | None, lr: float) -> None:
    """Raise TrainingDiverged when the loss or a trainable parameter is inf or nan after an optimizer step,
    before the broken weights can reach a checkpoint: the last one saved stays the last good one."""
    bad = None if math.isfinite(loss) else f"the loss is {loss}"
    if bad is None:
        for name, param in model.named_parameters():
            if param.requires_grad and not bool(torch.isfinite(param).all()):
                bad = f"the trainable parameter {name} holds inf or nan"
                break
    if bad is None:
        return
    kept = ""
    if out is not None and (out / CHECKPOINT / "state.json").exists():
        kept = f"; the last good checkpoint (step {_read_state(out / CHECKPOINT).get('step', '?')}) is kept in {out / CHECKPOINT}"
    raise TrainingDiverged(f"training diverged at step {step}: {bad}{kept}. Lower lr (it is {lr:g}) and start "
                           "afresh (--overwrite), or check the data")


# The highest learning rate each method is trained with in its paper (or the common practice), times a margin
# of ten or more: above it a run only diverges or blows its weights up (lr=1e8 took an adapter's weights to 1e14).
# Prompt-style methods train a few embeddings from scratch and take large rates; weight-space methods do not.
LR_BOUNDS = {
    "prompt_tuning": 1.0,   # Lester et al. 2021: 0.3 (Adafactor)
    "dept": 1.0,            # Shi & Lipani 2024: 3e-1 for the prompt, 1e-4 for the low-rank pair
    "accept": 1.0,          # builds on DePT's prompt + low-rank update
    "llama_adapter": 0.1,   # Zhang et al. 2023: 9e-3
    "lora": 5e-2,           # Hu et al. 2021: 2e-4 .. 5e-4; QLoRA: 1e-4 .. 2e-4
    "bitfit": 5e-2,         # Ben Zaken et al. 2022: 1e-4 .. 1e-3
    "full": 1e-3,           # full fine-tuning: 1e-5 .. 5e-5 (Devlin et al. 2019)
}


def check_learning_rate(method: str, lr: float, *, force: bool = False, source: str = "the config") -> None:
    """Refuse an lr above the method's sane bound (LR_BOUNDS) unless `force`."""
    bound = LR_BOUNDS.get(method, 1.0)
    if not force and lr > bound:
        raise ConfigError(f"{source}: lr is {lr:g}, above {bound:g}, the most that is sane for {method} (its papers "
                          f"use at most about a tenth of that); lower it, or pass --force to train with it anyway")


def train(cfg, train_samples: list, *, model=None, tokenizer=None, resume: bool = False,
          overwrite: bool = False, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train `cfg.method` (cfg: a TrainConfig) on `train_samples` (objects with .prompt and .answer): fit() with
    the answer-only loss, then the adapter, losses and loss plot in cfg.output_dir. Returns where the adapter is.

    `model`/`tokenizer` default to `load_model(cfg.model)`; a model passed in must not have an adapter yet.
    Under `accelerate launch`, `cfg.batch_size` is per process (see fit); only the main process writes files,
    and every process returns the trained model.
    """
    from accelerate import PartialState

    if not train_samples:
        raise GroundtuneError("no training samples: check the data paths and the drop report above")
    out = Path(cfg.output_dir)
    prepare_output(cfg, resume=resume, overwrite=overwrite)  # the output, and a checkpoint's settings (before the model loads)
    if model is None:
        from groundtune.models import load_model

        model, tokenizer = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # adapter initialisation depends on it
    model = attach(model, config_from_dict(cfg.method))
    task = AnswerTask(tokenizer, train_samples, cfg.data.max_prompt_tokens, cfg.data.max_answer_tokens, cfg.seed,
                      group_by_length=cfg.group_by_length)
    result = fit(model, task, Schedule.of(cfg), out=out, config=cfg, resume=resume, overwrite=overwrite,
                 progress=progress, stop_after=stop_after, desc=f"train {cfg.method['method']}")
    model = result.model
    if result.finished and result.main_process:
        from groundtune.data.prompt_format import from_data_config

        save_adapter(model, out / ADAPTER, prompt_format=from_data_config(cfg.data))  # how serving builds prompts
        atomic_write(out / "losses.jsonl", "".join(json.dumps(r) + "\n" for r in result.losses))
        plot_losses(result.losses, out / "loss.png", f"{cfg.method['method']} · {Path(cfg.output_dir).name}")
    PartialState().wait_for_everyone()  # no process goes on (say, to read the adapter) before it is written
    return TrainResult(out / ADAPTER, result.losses, model, result.trainable_params, result.main_process)
