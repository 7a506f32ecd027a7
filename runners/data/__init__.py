"""Data of the routed-LM study, shipped with the project (built by ``build_data.py``).

Files (UTF-8, generated deterministically; licence and attribution in SOURCES.md, probe
construction in PROBES.md):

* ``corpus.txt``          English prose about ~220 countries (pretraining text)
* ``chat_train.jsonl``    ``{"question", "answer", "country", "attribute"}`` chat SFT pairs
* ``chat_heldout.jsonl``  150 held-out pairs of the same form (never trained on)
* ``ood_train.jsonl``     ``{"question", "answer": "I don't know.", "kind"}`` abstain-SFT targets
* ``probe_210.jsonl``     ``{"group", "item", "prompt", "question", "expected", ...}`` 7 x 30
* ``countries.json``      the fact table everything above is generated from

Chat framing: ``USER: {question}\\nASSISTANT: {answer}`` (see :func:`chat_prompt`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

REFUSAL = "I don't know."  # the refusal template
GROUPS = (
    "in_domain",
    "ood_topic",
    "ood_style",
    "long_input",
    "gibberish",
    "factual_misleading",
    "neo_false_inability",
)
ANSWER_GROUPS = frozenset({"in_domain", "ood_style", "long_input", "neo_false_inability"})
REFUSE_GROUPS = frozenset({"ood_topic", "gibberish", "factual_misleading"})
DATA_DIR = Path(__file__).resolve().parent
PROBE_FILE = DATA_DIR / "probe_210.jsonl"

__all__ = [
    "ANSWER_GROUPS",
    "DATA_DIR",
    "GROUPS",
    "PROBE_FILE",
    "REFUSAL",
    "REFUSE_GROUPS",
    "chat_prompt",
    "chat_transcript",
    "load_chat",
    "load_corpus",
    "load_countries",
    "load_jsonl",
    "load_ood_train",
    "load_probe",
]


def chat_prompt(question: str) -> str:
    """The model input for a question: ``USER: {question}\\nASSISTANT:``."""
    return f"USER: {question}\nASSISTANT:"


def chat_transcript(question: str, answer: str) -> str:
    """A full chat exchange (the answer follows the prompt after one space)."""
    return f"{chat_prompt(question)} {answer}"


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@lru_cache(maxsize=1)
def load_corpus() -> str:
    """The pretraining corpus as text (paragraphs separated by blank lines)."""
    return (DATA_DIR / "corpus.txt").read_text(encoding="utf-8")


def load_chat(split: str = "train") -> list[dict[str, Any]]:
    """Chat Q/A pairs: ``split`` is ``train`` or ``heldout``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return load_jsonl(DATA_DIR / f"chat_{split}.jsonl")


def load_ood_train() -> list[dict[str, Any]]:
    """Out-of-domain questions with the refusal answer (abstain SFT / joint finetune)."""
    return load_jsonl(DATA_DIR / "ood_train.jsonl")


def load_probe(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The probe set (default: the shipped 210 prompts), in file order."""
    rows = load_jsonl(path or PROBE_FILE)
    for row in rows:
        missing = {"group", "item", "prompt"} - set(row)
        if missing:
            raise ValueError(f"probe row {row.get('item')!r} lacks {sorted(missing)}")
    return rows


def load_countries() -> list[dict[str, Any]]:
    """The fact table (one dict per country)."""
    return json.loads((DATA_DIR / "countries.json").read_text(encoding="utf-8"))
