"""In-context classification: zero/one/few-shot, the answer chosen by the log-likelihood of each label word.

The seed study scores NSMC sentiment one-shot with

    문장의 긍정, 부정을 분류하세요. (문장) 정답: (감정)

k examples are written in that template with their answers, then the query without its answer; the label word
(긍정 / 부정) the model finds most likely after "정답:" wins. A label word that is several tokens scores the SUM of
its token log-probabilities (a total, not a mean: the question is which text the model would write).

Label tokens are those of the whole text (prompt + label) after the tokens it shares with the prompt, so a BPE
merge across the boundary cannot invent a token split the model never sees. The LM head runs where labels are
predicted only: one forward over the left-padded prompts keeps the last position's logits (the first label token)
and its KV cache; one more forward over all label continuations at once, on the cache repeated per label, scores
the remaining label tokens. Prompts and label continuations go through the model exactly as in generation (2D
masks, text positions, a cache), so every method (LLaMA-Adapter, LoRA, the prompt family) classifies unchanged.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from groundtune.data import DataError
from groundtune.errors import ConfigError, GroundtuneError
from groundtune.data.sample import DropReport
from groundtune.fileio import jsonl_lines, read_text
from groundtune.kvcache import cache_from, cache_kwargs

NSMC_TEMPLATE = "문장의 긍정, 부정을 분류하세요. {text} 정답: {label}"


@dataclass
class ClassifyTask:
    """How to ask. template: one example with {text} and, at its very end, {label}; labels: the value in the data
    file -> the label word the model should write (in order: index 0, 1, ...), or a list of words for files
    labelled 0, 1, ...; separator: between examples."""

    template: str = NSMC_TEMPLATE
    labels: dict[str, str] = field(default_factory=lambda: {"0": "부정", "1": "긍정"})
    separator: str = "\n"
    text_field: str = "document"
    label_field: str = "label"
    name: str = "nsmc"

    def __post_init__(self):
        if isinstance(self.labels, (list, tuple)):  # [부정, 긍정]: the file holds 0, 1, ... (or the words)
            self.labels = dict(enumerate(self.labels))
        if not isinstance(self.labels, dict):
            raise GroundtuneError(f"task {self.name!r}: labels must map file values to label words, got {self.labels!r}")
        self.labels = {str(k): str(v) for k, v in self.labels.items()}
        if not self.template.endswith("{label}") or "{text}" not in self.template:
            raise GroundtuneError(f"task {self.name!r}: the template must contain {{text}} and end with {{label}} (the "
                             f"answer is scored as the template's continuation), got {self.template!r}")
        try:
            self.template.format(text="", label="")
        except (KeyError, IndexError, ValueError) as err:
            raise GroundtuneError(f"task {self.name!r}: the template has a placeholder other than {{text}}/{{label}} "
                             f"({err}); write a literal brace as {{{{ or }}}}") from None
        words = list(self.labels.values())
        if len(words) < 2 or len(set(words)) != len(words) or not all(w.strip() for w in words):
            raise GroundtuneError(f"task {self.name!r}: labels need at least two distinct, non-empty words, got {self.labels}")

    @property
    def label_words(self) -> list[str]:
        return list(self.labels.values())

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ClassifyTask":
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(read_text(path, what="task file")) or {}
        except FileNotFoundError:
            raise ConfigError(f"task file {path} does not exist") from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f", line {where.line + 1}" if where is not None else ""
            problem = getattr(err, "problem", None) or "cannot be parsed"
            raise ConfigError(f"{path}{at}: not valid YAML ({problem}); fix the task file (template, labels, "
                              "separator, text_field, label_field)") from None
        known = set(cls.__dataclass_fields__)
        if not isinstance(values, dict) or set(values) - known:
            extra = sorted(set(values) - known) if isinstance(values, dict) else "not a mapping"
            raise ConfigError(f"{path}: unknown key(s) {extra}; a task has {sorted(known)}")
        try:
            return cls(**{"name": path.stem, **values})
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{path}: {err}") from None

    def head(self) -> tuple[str, str]:
        """(prompt head, whitespace before the label): "… 정답: {label}" -> ("… 정답:", " ")."""
        head = self.template[: -len("{label}")]
        stripped = head.rstrip()
        return stripped, head[len(stripped):]

    def prompt(self, text: str, shots: Sequence["LabelledText"] = ()) -> str:
        """The k examples with their answers, then `text` up to (not including) the space before its answer."""
        examples = [self.template.format(text=s.text, label=self.label_words[s.label]) for s in shots]
        head, _ = self.head()
        return "".join(e + self.separator for e in examples) + head.format(text=text)

    def continuations(self) -> list[str]:
        """What follows a prompt for each label, with the same spacing as in the examples: [" 부정", " 긍정"]."""
        _, space = self.head()
        return [space + word for word in self.label_words]


@dataclass(frozen=True)
class LabelledText:
    id: str
    text: str
    label: int  # index into the task's labels


def load_labelled(path: str | Path, task: ClassifyTask | None = None) -> tuple[list[LabelledText], DropReport]:
    """Rows of a TSV with a header (NSMC: id, document, label), a JSONL file or a JSON list of objects.

    Rows with an empty text or a missing label are dropped and counted; a label value the task does not know is an
    error (it means the task's `labels` do not fit the file)."""
    task = task or ClassifyTask()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    report = DropReport(str(path))
    index = {value: i for i, value in enumerate(task.labels)}
    index.update({word: i for i, word in enumerate(task.label_words)})  # files that hold the words themselves
    rows: list[LabelledText] = []
    for where, record in _records(path, task):
        text = record.get(task.text_field)
        label = record.get(task.label_field)
        if text is None or not str(text).strip():
            report.drop("empty_text", where)
            continue
        if label is None or str(label).strip() == "":
            report.drop("missing_label", where)
            continue
        label = str(label).strip()
        if label not in index:
            raise DataError(f"{where}: label {label!r} is not one of the task's labels {list(task.labels)}; set "
                            "`labels` in the task YAML to map this file's values to label words")
        rows.append(LabelledText(str(record.get("id", where)), str(text).strip(), index[label]))
        report.keep()
    return rows, report


def _records(path: Path, task: ClassifyTask):
    text = read_text(path, what="data file")
    if path.suffix in (".jsonl", ".json"):
        if text.lstrip().startswith("["):
            try:
                records = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
            yield from ((f"{path}:{i}", r if isinstance(r, dict) else {}) for i, r in enumerate(records))
            return
        for line_no, record in jsonl_lines(text.splitlines(), path, f"{{{task.text_field}, {task.label_field}}}",
                                           DataError):
            yield f"{path}:{line_no}", record if isinstance(record, dict) else {}
        return
    # NSMC-style TSV. QUOTE_NONE: reviews contain stray quotes that csv would otherwise treat as field quoting.
    reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if not header or task.text_field not in header or task.label_field not in header:
        raise DataError(f"{path}: the first line must be a tab-separated header naming the text column "
                        f"{task.text_field!r} and the label column {task.label_field!r}, got {header}; set "
                        "text_field / label_field in the task YAML")
    for line_no, cells in enumerate(reader, 2):
        if len(cells) != len(header):
            cells = cells[: len(header)] + [""] * (len(header) - len(cells))  # counted as empty text / missing label
        yield f"{path}:{line_no}", dict(zip(header, cells))


def select_shots(queries: Sequence[LabelledText], pool: Sequence[LabelledText], k: int, n_labels: int,
                 seed: int = 0) -> list[list[LabelledText]]:
    """k examples per query from `pool`: k // n_labels of each label, the remainder of labels drawn at random, in
    random order; never a pool row with the query's text. Seeded per query, so a query gets the same examples
    whatever the batch size or the subset evaluated."""
    if k == 0:
        return [[] for _ in queries]
    by_label: list[list[LabelledText]] = [[] for _ in range(n_labels)]
    for row in pool:
        by_label[row.label].append(row)
    texts = [{} for _ in range(n_labels)]
    for label, rows in enumerate(by_label):
        for row in rows:
            texts[label][row.text] = texts[label].get(row.text, 0) + 1
    out = []
    for i, query in enumerate(queries):
        rng = random.Random(f"{seed}:{i}")
        counts = [k // n_labels] * n_labels
        for label in rng.sample(range(n_labels), k % n_labels):
            counts[label] += 1
        shots: list[LabelledText] = []
        for label, count in enumerate(counts):
            if not count:
                continue
            same = texts[label].get(query.text, 0)  # rows to skip: the query itself (or a duplicate of it)
            if len(by_label[label]) - same < count:
                raise GroundtuneError(f"the example pool has {len(by_label[label]) - same} usable rows of label {label}, "
                                 f"{count} needed per query: give a larger --pool or fewer shots")
            picked = rng.sample(by_label[label], count + same)
            shots += [row for row in picked if row.text != query.text][:count]
        rng.shuffle(shots)
        out.append(shots)
    return out


def _split_ids(tokenizer, prompt: str, continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """(shared context ids, ids of each continuation): the continuation tokens of prompt+continuation, after the
    longest prefix every tokenization shares with the prompt's own."""
    from groundtune.data.sample import encode_prompt

    context = encode_prompt(tokenizer, prompt)  # exactly the prompt ids training and generation use
    fulls = [encode_prompt(tokenizer, prompt + c) for c in continuations]
    shared = len(context)
    for full in fulls:
        n = 0
        while n < min(shared, len(full)) and full[n] == context[n]:
            n += 1
        shared = n
    conts = [full[shared:] for full in fulls]
    if shared == 0 or any(not c for c in conts):
        raise GroundtuneError(f"cannot split {prompt[-40:]!r} + label continuations {list(continuations)} into a shared "
                         "context and non-empty label tokens: check that the label words differ and the prompt is "
                         "not empty")
    return context[:shared], conts


def label_samples(tokenizer, task: ClassifyTask, rows: Sequence[LabelledText]) -> list:
    """Label-word training samples: the prompt, and the label's continuation (" 긍정") as the answer. Training
    encodes an answer on its own, classify() scores the label's tokens after the prompt: Gemma splits Korean labels
    differently with and without a leading space (" 부정" -> ▁부정, "부정" -> 부 정), fine while both see the same
    text, but a tokenizer that prefixes every text (legacy SentencePiece "▁") would teach tokens never scored.
    Checked on every row: prompt ids + answer ids must be the ids of prompt + answer."""
    from groundtune.data.sample import Sample, encode_prompt

    words = task.continuations()
    samples = []
    for row in rows:
        prompt = task.prompt(row.text)
        context, conts = _split_ids(tokenizer, prompt, words)
        answer = words[row.label]
        taught = encode_prompt(tokenizer, prompt) + list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if taught != context + conts[row.label]:
            raise ConfigError(
                f"label {task.label_words[row.label]!r} (row {row.id}): encoded on its own it is the tokens "
                f"{tokenizer.convert_ids_to_tokens(taught[len(context):])}, after the prompt "
                f"{tokenizer.convert_ids_to_tokens(conts[row.label])}: training would teach tokens classify never "
                "scores. The tokenizer adds a prefix to every text (legacy SentencePiece): load it with "
                "add_prefix_space=False / legacy=False, or change the template's spacing before {label}")
        samples.append(Sample(f"{task.name}:{row.id}", prompt, answer))
    return samples


@torch.no_grad()
def score_labels(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 8,
                 max_prompt_tokens: int = 1024, progress: bool = True) -> tuple[torch.Tensor, int]:
    """Log-likelihood of each continuation after each prompt: a [len(prompts), len(continuations)] tensor of sums
    of token log-probabilities, and how many prompts lost tokens from their left to fit `max_prompt_tokens`."""
    from tqdm.auto import tqdm

    from groundtune.data.collate import pad_rows, pad_token_id

    n = len(continuations)
    pad = pad_token_id(tokenizer)
    bos = tokenizer.bos_token_id
    encoded, truncated = [], 0
    for prompt in prompts:
        context, conts = _split_ids(tokenizer, prompt, continuations)
        if len(context) > max_prompt_tokens:  # keep the end (the query); keep a leading BOS as training does
            keep_bos = bos is not None and context[0] == bos
            context = context[:1] + context[len(context) - max_prompt_tokens + 1:] if keep_bos \
                else context[-max_prompt_tokens:]
            truncated += 1
        encoded.append((context, conts))
    from groundtune.models import contiguous_lm_head

    contiguous_lm_head(model)  # logits_to_keep=1 slices a strided view: see contiguous_lm_head
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = torch.zeros(len(prompts), n, dtype=torch.float64)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]), reverse=True)  # less padding
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="classify", unit="batch"):
        idx = order[start:start + batch_size]
        B = len(idx)
        ids, mask = pad_rows([encoded[i][0] for i in idx], pad)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()  # predicts each label's first token
        for row, i in enumerate(idx):
            for j, cont in enumerate(encoded[i][1]):
                scores[i, j] += first[row, cont[0]].item()
        rest = max(len(c) for i in idx for c in encoded[i][1]) - 1
        if rest == 0:
            continue
        # Every label's remaining tokens at once: the prompt's cache repeated per label, continuations right-padded.
        cache = cache_from(out)
        cache.batch_repeat_interleave(n)
        conts = [cont for i in idx for cont in encoded[i][1]]  # row * n + j: prompt row, label j
        cont_ids, cont_mask = pad_rows([c[:-1] for c in conts], pad, side="right", width=rest)
        targets, _ = pad_rows([c[1:] for c in conts], -1, side="right", width=rest)
        # A right pad still needs one visible key; it sees the prompt (its own column is masked).
        full_mask = torch.cat([mask.repeat_interleave(n, dim=0), cont_mask], dim=1)
        cont_positions = mask.sum(-1).repeat_interleave(n)[:, None] + torch.arange(rest)[None, :]
        out = model(input_ids=cont_ids.to(device), attention_mask=full_mask.to(device),
                    position_ids=cont_positions.to(device), use_cache=True, **cache_kwargs(model, cache))
        logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
        valid = targets >= 0
        picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        sums = (picked * valid).sum(-1).view(B, n).double()
        scores[torch.tensor(idx)] += sums
    model.train(was_training)
    return scores, truncated


# Zhao et al. (2021), "Calibrate Before Use": inputs that carry no content, whose label probabilities measure the
# prompt's (and the model's) bias towards each label.
CONTENT_FREE = ("N/A", "", "[MASK]")


def calibrate_scores(scores: torch.Tensor, content_free: torch.Tensor) -> torch.Tensor:
    """Contextual calibration. `scores` [n, labels] are summed label log-likelihoods of the queries;
    `content_free` [n, c, labels] those of the c content-free inputs written with each query's own examples. The
    label probabilities (renormalised over the labels) are divided by the mean content-free probabilities, i.e.
    W = diag(p_cf)^-1 with b = 0, as the paper does for classification; returned as log-probabilities."""
    p_cf = torch.softmax(content_free, dim=-1).mean(dim=1)
    calibrated = torch.log_softmax(scores, dim=-1) - torch.log(p_cf)
    return torch.log_softmax(calibrated, dim=-1)


def batch_calibrate(scores: torch.Tensor) -> torch.Tensor:
    """Batch calibration (Zhou et al., 2024, "Batch Calibration"): the prompt's bias is estimated as the mean label
    probability over the queries being classified themselves (no labels, no extra forward pass) and divided out
    like contextual calibration's. It needs a batch that is not tiny; on NSMC one-shot/few-shot with a small model
    it corrects the bias that content-free inputs over- or under-estimate. Returned as log-probabilities."""
    logp = torch.log_softmax(scores, dim=-1)
    return torch.log_softmax(logp - torch.log(torch.exp(logp).mean(dim=0)), dim=-1)


CALIBRATIONS = ("contextual", "batch")


@dataclass
class ClassifyResult:
    task: str
    shots: int
    seed: int
    n: int
    accuracy: float
    macro_f1: float
    labels: list[str]
    confusion: list[list[int]]  # rows: gold label, columns: predicted label
    predicted_counts: dict[str, int]
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # rows not classified, by reason (empty_text, too_long)
    calibration: str | None = None  # "contextual" or "batch", or None
    content_free: list[str] | None = None  # contextual calibration's inputs
    predictions: list[dict] = field(default_factory=list, repr=False)

    @property
    def signature(self) -> str:
        """The settings that make two accuracies comparable, in sacrebleu's style."""
        calib = self.calibration or "none"
        if self.calibration == "contextual":
            calib += "(" + ",".join(map(repr, self.content_free)) + ")"
        return f"task:{self.task}|shots:{self.shots}|seed:{self.seed}|score:sum-logprob|calibration:{calib}|n:{self.n}"

    def as_dict(self, predictions: bool = False) -> dict:
        out = {**asdict(self), "signature": self.signature}
        if not predictions:
            out.pop("predictions")
        return out

    def table(self) -> str:
        width = max(map(len, self.labels)) + 2
        lines = [f"{self.task}: {self.shots}-shot on {self.n} rows (seed {self.seed})",
                 f"accuracy {100 * self.accuracy:.2f}   macro-F1 {100 * self.macro_f1:.2f}",
                 "confusion (rows gold, columns predicted):",
                 " " * width + "".join(f"{w:>{width}}" for w in self.labels)]
        lines += [f"{w:>{width}}" + "".join(f"{c:>{width}}" for c in row) for w, row in zip(self.labels, self.confusion)]
        if self.dropped:
            lines.append("dropped (not in n): " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        if self.truncated:
            lines.append(f"note: {self.truncated} prompts lost tokens from their left to fit max_prompt_tokens")
        lines.append(f"signature: {self.signature}")
        return "\n".join(lines) + "\n"


def context_length(model) -> int:
    """The most positions the model takes (max_position_embeddings / n_positions; huge when the config has none)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def fit_queries(tokenizer, queries: Sequence[LabelledText], task: ClassifyTask,
                max_tokens: int) -> tuple[list[LabelledText], dict[str, int], int]:
    """(queries that can be classified, drops by reason, the most label tokens seen). "empty_text": nothing to
    classify; "too_long": the query's own prompt (no examples) and its longest label pass `max_tokens`, and cutting
    it would cut its instruction or review (or run past the model's positions). Overflowing examples are still cut
    from the left by score_labels."""
    kept, dropped, longest = [], {}, 1
    for query in queries:
        reason = None
        if not str(query.text).strip():
            reason = "empty_text"
        else:
            context, conts = _split_ids(tokenizer, task.prompt(query.text), task.continuations())
            longest = max(longest, *map(len, conts))
            if len(context) + max(map(len, conts)) > max_tokens:
                reason = "too_long"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            kept.append(query)
    return kept, dropped, longest


def classify(model, tokenizer, queries: Sequence[LabelledText], task: ClassifyTask | None = None, *, shots: int = 0,
             pool: Sequence[LabelledText] | None = None, seed: int = 0, batch_size: int = 8,
             max_prompt_tokens: int = 1024, progress: bool = True,
             calibration: str | None = None, content_free: Sequence[str] = CONTENT_FREE) -> ClassifyResult:
    """Classify `queries` k-shot with examples from `pool` (needed when shots > 0); accuracy and macro-F1.
    `calibration`: None (the likelier label word wins), "contextual" (against `content_free` inputs, each written
    with the query's own examples) or "batch" (against the mean over `queries`)."""
    from sklearn.metrics import confusion_matrix, f1_score

    task = task or ClassifyTask()
    limit = min(max_prompt_tokens, context_length(model))
    queries, dropped, longest = fit_queries(tokenizer, queries, task, limit)
    max_prompt_tokens = limit - longest  # k-shot prompts cut from the left leave room for the labels' tokens
    if not queries:
        raise GroundtuneError(f"no rows to classify (dropped: {dropped or 'none given'}): check the data file and the "
                         "drop report")
    if shots > 0 and not pool:
        raise GroundtuneError(f"{shots}-shot classification needs a pool of labelled examples (--pool)")
    words = task.label_words
    examples = select_shots(queries, pool or [], shots, len(words), seed)
    prompts = [task.prompt(q.text, ex) for q, ex in zip(queries, examples)]
    scores, truncated = score_labels(model, tokenizer, prompts, task.continuations(), batch_size=batch_size,
                                     max_prompt_tokens=max_prompt_tokens, progress=progress)
    raw = scores
    if calibration == "contextual":
        content_free = list(content_free)
        if not content_free:
            raise GroundtuneError("contextual calibration needs at least one content-free input, e.g. 'N/A'")
        # Queries that drew the same examples share their content-free prompts: score each distinct prompt once.
        cf_prompts = [task.prompt(c, ex) for ex in examples for c in content_free]
        distinct = list(dict.fromkeys(cf_prompts))
        cf_scores, _ = score_labels(model, tokenizer, distinct, task.continuations(), batch_size=batch_size,
                                    max_prompt_tokens=max_prompt_tokens, progress=False)
        where = {p: i for i, p in enumerate(distinct)}
        cf = cf_scores[[where[p] for p in cf_prompts]].view(len(queries), len(content_free), len(words))
        scores = calibrate_scores(scores, cf)
    elif calibration == "batch":
        scores = batch_calibrate(scores)
    elif calibration is not None:
        raise GroundtuneError(f"unknown calibration {calibration!r}: use one of {list(CALIBRATIONS)}, or none")
    predicted = scores.argmax(-1).tolist()
    gold = [q.label for q in queries]
    labels = list(range(len(words)))
    return ClassifyResult(
        task=task.name, shots=shots, seed=seed, n=len(queries),
        accuracy=sum(p == g for p, g in zip(predicted, gold)) / len(gold),
        macro_f1=float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        labels=words,
        confusion=confusion_matrix(gold, predicted, labels=labels).tolist(),
        predicted_counts={w: predicted.count(i) for i, w in enumerate(words)},
        truncated=truncated, dropped=dropped, calibration=calibration,
        content_free=list(content_free) if calibration == "contextual" else None,
        predictions=[{"id": q.id, "label": words[q.label], "predicted": words[p],
                      "scores": dict(zip(words, r)), "shots": [e.id for e in ex],
                      **({"calibrated": dict(zip(words, c))} if calibration is not None else {})}
                     for q, p, r, c, ex in zip(queries, predicted, raw.tolist(), scores.tolist(), examples)],
    )
