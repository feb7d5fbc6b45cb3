"""Instruction data: Alpaca / KoAlpaca records ({instruction, input, output}) turned into Samples.

Templates follow the alpaca-lora layout (`prompt_input`, `prompt_no_input`, `response_split`), chosen per record
by whether it has an input. Built in: the seed study's Korean KoAlpaca template and the original English Alpaca
one; custom templates come from YAML; ``"chat"`` uses the tokenizer's own chat template instead (instruct models).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from groundtune.data import DataError
from groundtune.errors import ConfigError
from groundtune.data.sample import DropReport, Sample
from groundtune.fileio import jsonl_lines


@dataclass(frozen=True)
class InstructTemplate:
    prompt_input: str  # with {instruction} and {input}
    prompt_no_input: str  # with {instruction}
    response_split: str  # the text after which the response starts (to cut a generation)
    name: str = "custom"

    def prompt(self, instruction: str, input: str = "") -> str:
        template = self.prompt_input if input else self.prompt_no_input
        return template.format_map({"instruction": instruction, "input": input})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "InstructTemplate":
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from e
        keys = ("prompt_input", "prompt_no_input", "response_split")
        if not isinstance(data, dict) or (missing := [k for k in keys if not isinstance(data.get(k), str)]):
            raise DataError(f"{path}: a template needs string fields {', '.join(keys)}; missing or not text: "
                            f"{', '.join(missing) if isinstance(data, dict) else 'all'}")
        template = cls(data["prompt_input"], data["prompt_no_input"], data["response_split"], data.get("name", path.stem))
        for field_name, needs in (("prompt_input", ("{instruction}", "{input}")), ("prompt_no_input", ("{instruction}",))):
            text = getattr(template, field_name)
            if any(n not in text for n in needs):
                raise DataError(f"{path}: {field_name} must contain {' and '.join(needs)}")
            try:
                text.format_map({"instruction": "", "input": ""})
            except (KeyError, IndexError, ValueError) as e:
                raise DataError(f"{path}: {field_name} has a placeholder other than {{instruction}}/{{input}} ({e}); "
                                "write a literal brace as {{ or }}") from e
        return template


# The seed study's templates (KoAlpaca's Korean wording), in the alpaca-lora layout.
KOALPACA = InstructTemplate(
    prompt_input="아래는 작업을 설명하는 명령어와 추가적 맥락을 제공하는 입력이 짝을 이루는 예제입니다. "
    "요청을 적절히 완료하는 응답을 작성하세요.\n\n### 명령어:\n{instruction}\n\n### 입력:\n{input}\n\n### 응답:\n",
    prompt_no_input="아래는 작업을 설명하는 명령어입니다. 명령어에 따른 요청을 적절히 완료하는 응답을 작성하세요.\n\n"
    "### 명령어:\n{instruction}\n\n### 응답:\n",
    response_split="### 응답:",
    name="koalpaca",
)

# Stanford Alpaca's templates (as alpaca-lora ships them, with the newline after "### Response:").
ALPACA = InstructTemplate(
    prompt_input="Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    prompt_no_input="Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
    response_split="### Response:",
    name="alpaca",
)

TEMPLATES = {"koalpaca": KOALPACA, "alpaca": ALPACA}
CHAT = "chat"


def get_template(template: str | Path | InstructTemplate) -> InstructTemplate | str:
    """A built-in name ("koalpaca", "alpaca"), "chat", a YAML file, or a template object."""
    if isinstance(template, InstructTemplate) or template == CHAT:
        return template
    if str(template) in TEMPLATES:
        return TEMPLATES[str(template)]
    if Path(template).is_file():
        return InstructTemplate.from_yaml(template)
    raise ConfigError(f"unknown template {template!r} (no such built-in, no such file): use one of "
                      f"{', '.join([*TEMPLATES, CHAT])} or a YAML file with prompt_input, prompt_no_input and "
                      "response_split")


def load_instructions(path: str | Path) -> list[Any]:
    """Records from an Alpaca-style JSON list or a JSONL file (one object per line)."""
    path = Path(path)
    from groundtune.fileio import read_text

    text = read_text(path, what="instruction file")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the file must be "
                            'a list of {"instruction", "input", "output"} objects') from e
        return records
    return [record for _, record in jsonl_lines(text.splitlines(), path, '{"instruction", "input", "output"}',
                                                DataError)]


def _chat_prompt(tokenizer, instruction: str, input: str, system: str | None) -> str:
    user = f"{instruction}\n\n{input}" if input else instruction
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def instruction_samples(records: str | Path | Sequence[Any], template: str | Path | InstructTemplate = "koalpaca",
                        tokenizer=None, system: str | None = None,
                        source: str = "") -> tuple[list[Sample], DropReport]:
    """Samples from instruction records (or a file of them). Records whose instruction or output is missing or
    empty, or that are not objects, are dropped and counted; "input" may be absent or empty."""
    if isinstance(records, (str, Path)):
        source = source or str(records)
        records = load_instructions(records)
    template = get_template(template)
    if template == CHAT and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
        raise DataError("template='chat' needs a tokenizer that has a chat template (an instruct model's)")
    name = template if template == CHAT else template.name
    prefix = Path(source).stem if source else "record"
    report = DropReport(source)
    samples = []
    for i, record in enumerate(records):
        where = f"{prefix}:{i}"
        if not isinstance(record, dict):
            report.drop("not_an_object", where)
            continue
        fields = {}
        for key in ("instruction", "input", "output"):
            value = record.get(key)
            if value is None and key != "input":
                report.drop(f"missing_{key}", where)
                break
            if not isinstance(value, (str, type(None))):
                report.drop(f"bad_{key}", where)
                break
            fields[key] = (value or "").strip()
            if key != "input" and not fields[key]:
                report.drop(f"empty_{key}", where)
                break
        else:
            if template == CHAT:
                prompt = _chat_prompt(tokenizer, fields["instruction"], fields["input"], system)
            else:
                prompt = template.prompt(fields["instruction"], fields["input"])
            samples.append(Sample(str(record.get("id", where)), prompt, fields["output"], None,
                                  {"index": i, "has_input": bool(fields["input"]), "template": name}))
            report.keep()
    return samples, report


def split_response(text: str, template: str | Path | InstructTemplate = "koalpaca") -> str:
    """The response part of a full generated text (what follows the template's response_split)."""
    template = get_template(template)
    if template == CHAT:
        return text.strip()
    return text.split(template.response_split, 1)[-1].strip()
