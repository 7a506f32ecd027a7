"""Hugging Face transformers checkpoints from a local directory (``model: "hf:PATH"``).

Contract of :func:`load_hf`:

* ``PATH`` must be an existing local directory holding ``config.json``; nothing is fetched
  (``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` are set before transformers is imported).
* The config must describe a causal LM (``AutoModelForCausalLM`` knows its ``model_type``, or the
  config's ``architectures`` names a ``*ForCausalLM`` class).
* Remote code (``auto_map`` in the config) is refused unless ``trust_remote_code=True``.
* ``sha256`` is the SHA-256 over the weight files, sorted by name (``*.safetensors``, else
  ``*.bin``): for each file, its name (UTF-8), a NUL byte, then its bytes. Renaming or editing a
  shard changes it; the config and tokenizer files do not enter it.
* Tokenizer: the checkpoint's own (``AutoTokenizer``) when a tokenizer file is present
  (``tokenizer.json``, ``tokenizer_config.json``, ``tokenizer.model``, ``vocab.json``); else the
  byte-level fallback :class:`ByteTokenizer` (token id = UTF-8 byte value, no BOS, no EOS),
  which needs ``vocab_size >= 256``.

Every refusal is an :class:`HFModelError` naming the path and what is
missing (exit code 2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docketml.extras import import_extra

PREFIX = "hf:"


class HFModelError(ValueError):
    """An ``hf:`` checkpoint cannot serve the job: the message names the path and what is
    missing. A job raising it fails before recording any result; the executor's pre-flight
    (``runners.execute.executor``) turns it into a ``UserError`` (exit code 2)."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_hf_ref(model: Any) -> bool:
    """True when a ``model`` param is an ``hf:PATH`` reference."""
    return isinstance(model, str) and model.startswith(PREFIX)


def hf_path(model: str) -> Path:
    """The directory of an ``hf:PATH`` reference (``~`` expanded)."""
    return Path(model[len(PREFIX) :]).expanduser()


class ByteTokenizer:
    """Fallback tokenizer: ids are the UTF-8 bytes of the text; no special tokens."""

    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class _HFTokenizer:
    """Adapter over a transformers tokenizer: ``encode`` adds the checkpoint's special tokens."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.bos_token_id = tok.bos_token_id
        self.eos_token_id = tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=True))


@dataclass
class HFModel:
    """A loaded checkpoint: the torch module, its tokenizer, config and weight hash."""

    path: Path
    model: Any  # transformers PreTrainedModel (causal LM), eval mode
    tokenizer: ByteTokenizer | _HFTokenizer
    config: Any
    sha256: str
    weight_files: list[str] = field(default_factory=list)
    tokenizer_kind: str = "checkpoint"  # "checkpoint" | "bytes"

    def record(self) -> dict[str, Any]:
        """JSON-able description kept with the run (``JobResult.extra["hf_checkpoint"]``)."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "weight_files": self.weight_files,
            "model_type": getattr(self.config, "model_type", None),
            "tokenizer": self.tokenizer_kind,
        }


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files, sorted: ``*.safetensors``, else ``*.bin``."""
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return [f for f in files if f.is_file()]


def weights_sha256(files: Sequence[Path]) -> str:
    """SHA-256 over ``name NUL bytes`` of each file in the given order (see the module doc)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode("utf-8") + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_kwarg(module: Any) -> str:
    """The forward's KV-cache argument of a transformers module: ``cache`` (transformers >= 5.2x)
    or ``past_key_values`` (earlier releases)."""
    import inspect

    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_of(out: Any) -> Any:
    """The KV cache a transformers forward returned (``cache`` or ``past_key_values``)."""
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def check_boundaries(boundaries: Any, num_layers: int, where: str) -> tuple[int, ...]:
    """Validate stage ``boundaries`` (layer counts at which stages end) against a decoder of
    ``num_layers`` layers: a non-empty list of ints, strictly increasing, each within
    ``1..num_layers`` (the last may equal ``num_layers``). ``where`` names the job for the
    message; raises :class:`HFModelError` (exit 2) otherwise."""
    ok = (
        isinstance(boundaries, list | tuple)
        and len(boundaries) > 0
        and all(isinstance(b, int) and not isinstance(b, bool) for b in boundaries)
    )
    if ok:
        ok = all(1 <= b <= num_layers for b in boundaries) and all(
            a < b for a, b in zip(boundaries, boundaries[1:], strict=False)
        )
    if not ok:
        raise HFModelError(
            f"{where}: field 'boundaries' is {boundaries!r}; expected a non-empty list of "
            f"strictly increasing layer counts within 1..{num_layers} (the checkpoint's "
            "num_hidden_layers), e.g. [3, 5, 7]"
        )
    return tuple(int(b) for b in boundaries)


def _transformers() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import_extra("safetensors", "an hf: model")
    return import_extra("transformers", "an hf: model")


def check_hf(path: Path, trust_remote_code: bool = False) -> Any:
    """Validate a checkpoint directory without loading weights; returns its config.

    Raises :class:`UserError` for a missing directory, no ``config.json``, remote code without
    ``trust_remote_code``, a config that is not a causal LM, or no weight files."""
    if not path.is_dir():
        raise HFModelError(f"hf:{path}: no such local directory (hf: loads local paths only)")
    if not (path / "config.json").is_file():
        raise HFModelError(f"hf:{path}: no config.json in the checkpoint directory")
    tr = _transformers()
    try:
        config = tr.AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except ValueError as exc:  # unknown model_type, or remote code refused
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise HFModelError(
                f"hf:{path}: the checkpoint needs remote code; set trust_remote_code: true "
                "in the job's params to allow it"
            ) from exc
        raise HFModelError(f"hf:{path}: config.json is not a known model config ({exc})") from exc
    if getattr(config, "auto_map", None) and not trust_remote_code:
        raise HFModelError(
            f"hf:{path}: the checkpoint needs remote code (auto_map in config.json); set "
            "trust_remote_code: true in the job's params to allow it"
        )
    mapping = tr.AutoModelForCausalLM._model_mapping
    archs = getattr(config, "architectures", None) or []
    causal = type(config) in mapping or any(a.endswith("ForCausalLM") for a in archs)
    if not causal:
        raise HFModelError(
            f"hf:{path}: config model_type {config.model_type!r} is not a causal LM "
            "(AutoModelForCausalLM has no class for it)"
        )
    if not weight_files(path):
        raise HFModelError(f"hf:{path}: no weight files (*.safetensors or *.bin)")
    return config


def load_hf(path: str | Path, trust_remote_code: bool = False, device: str = "cpu") -> HFModel:
    """Load a local causal-LM checkpoint (see the module docstring for the contract)."""
    path = Path(str(path)[len(PREFIX) :] if str(path).startswith(PREFIX) else path).expanduser()
    config = check_hf(path, trust_remote_code)
    tr = _transformers()
    files = weight_files(path)
    sha = weights_sha256(files)
    model = tr.AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=trust_remote_code
    )
    model.to(device).eval()
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        tok: ByteTokenizer | _HFTokenizer = _HFTokenizer(
            tr.AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=trust_remote_code
            )
        )
        kind = "checkpoint"
    else:
        if int(config.vocab_size) < 256:
            raise HFModelError(
                f"hf:{path}: no tokenizer files and vocab_size {config.vocab_size} < 256, so the "
                "byte-level fallback tokenizer cannot be used"
            )
        tok, kind = ByteTokenizer(), "bytes"
    return HFModel(path, model, tok, config, sha, [f.name for f in files], kind)
