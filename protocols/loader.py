"""Reading a protocol file: safe YAML with lines -> schema -> cross-references.

Every problem found is reported at once as ``FILE:LINE: field.path: what was expected, what was
found`` (:class:`protocols.errors.ProtocolErrors`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .canonical import canonical_json, protocol_sha256
from .crosscheck import cross_check
from .errors import ProtocolError, ProtocolErrors, did_you_mean
from .reading import FileRefused, read_bounded
from .schema import Protocol
from .yaml_lines import YamlProblem, line_for, load_with_lines

MAX_BYTES = 2_000_000


@dataclass(frozen=True)
class LoadedProtocol:
    """A validated protocol with its source text, canonical JSON and sha256."""

    protocol: Protocol
    source: str
    yaml_text: str
    canonical: str
    sha256: str


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    return sorted(model.model_fields) if model is not None else []


_KINDS = "regime_wins, threshold, non_inferiority, all_of, any_of"


def _describe_type(value: Any) -> str:
    if value is None:
        return "nothing (the file holds no YAML value, only comments or ~)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string {_found(value)}"
    return f"{type(value).__name__} {_found(value)}"


def _non_finite(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Paths of every NaN or infinite number (YAML .nan / .inf) in the parsed document."""
    if isinstance(data, float):
        return [] if math.isfinite(data) else [path]
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _non_finite(value, path + (key,))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _non_finite(value, path + (i,))]
    return []


def _by_line(errors: list[ProtocolError]) -> list[ProtocolError]:
    return sorted(errors, key=lambda e: e.line if e.line is not None else 0)


def _model_at(path: tuple[str | int, ...], data: Any) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``path`` (best effort)."""
    from typing import get_args, get_origin

    from . import schema

    model: Any = Protocol
    node = data
    for part in path:
        if model is None:
            return None
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return None
            model = field.annotation
            node = node.get(part) if isinstance(node, dict) else None
            continue
        # containers: unwrap list[...] / dict[..., X] / unions / Annotated
        origin = get_origin(model)
        args = [a for a in get_args(model) if a is not type(None)]
        if origin in (list, dict) and args:
            model = args[-1]
            node = node[part] if isinstance(node, list | dict) and _has(node, part) else None
        else:
            return None
        model = _unwrap(model, node, schema)
    model = _unwrap(model, node, schema)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return part in node


def _unwrap(model: Any, node: Any, schema: Any) -> Any:
    from typing import Annotated, Union, get_args, get_origin

    for _ in range(5):
        origin = get_origin(model)
        if origin is Annotated:
            model = get_args(model)[0]
        elif origin is Union or str(origin) == "<class 'types.UnionType'>":
            options = [a for a in get_args(model) if a is not type(None)]
            if isinstance(node, dict) and "kind" in node:
                for option in options:
                    if isinstance(option, type) and issubclass(option, BaseModel):
                        kind = option.model_fields.get("kind")
                        if kind is not None and node["kind"] in get_args(kind.annotation):
                            return option
            models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
            model = models[0] if len(models) == 1 else (options[0] if len(options) == 1 else None)
        else:
            break
    return model


def _format_validation(
    exc: ValidationError, data: Any, lines: dict, source: str
) -> list[ProtocolError]:
    errors: list[ProtocolError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # drop discriminator tags pydantic inserts into locations ("regime_wins", "function-after")
        clean: list[str | int] = []
        node = data
        for part in loc:
            if isinstance(node, dict) and part in node:
                clean.append(part)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                clean.append(part)
                node = node[part]
            elif err["type"] in ("missing", "extra_forbidden") and part == loc[-1]:
                clean.append(part)
        path = tuple(clean)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(_model_at(path[:-1], data))
            message = (
                f"unknown key {path[-1]!r}{did_you_mean(str(path[-1]), allowed)}; "
                f"expected one of: {', '.join(allowed)}"
            )
        elif kind == "missing":
            message = f"required field {path[-1]!r} is missing"
        elif kind == "union_tag_invalid":
            # point at the `kind:` line, not at the rule's name
            given = err.get("input", {}).get("kind") if isinstance(err.get("input"), dict) else None
            path = path + ("kind",)
            message = (
                f"unknown rule kind{did_you_mean(str(given), _KINDS.split(', '))}; "
                f"expected one of: {_KINDS}; found {_found(given)}"
            )
        elif kind == "union_tag_not_found":
            message = f"required field 'kind' is missing; expected one of: {_KINDS}"
        else:
            message = f"{err['msg']}; found {_found(err.get('input'))}"
        errors.append(ProtocolError(source, line_for(lines, path), _dotted(path), message))
    return errors


def load_protocol_text(
    text: str,
    source: str = "<protocol>",
    *,
    job_kinds: Collection[str] | None = None,
    hardware: Collection[str] | None = None,
    admission: bool = True,
) -> LoadedProtocol:
    """Validate protocol YAML text; raise :class:`ProtocolErrors` listing every problem.

    ``job_kinds`` / ``hardware``: names the runners know, checked when given (see
    :func:`protocols.crosscheck.cross_check`). ``admission=False`` re-reads text the ledger
    already holds: numbers are read leniently (a quoted ``"0.02"`` registered by docket 0.1 is
    still 0.02; NaN/inf stay refused) and the could-never-run checks are skipped."""
    if not text.strip():
        raise ProtocolErrors(
            [ProtocolError(source, 1, "", "the file is empty; expected a protocol mapping")]
        )
    try:
        data, lines = load_with_lines(text)
    except YamlProblem as problem:
        raise ProtocolErrors(
            [ProtocolError(source, problem.line, _dotted(problem.path), problem.message)]
        ) from None
    if not isinstance(data, dict):
        raise ProtocolErrors(
            [
                ProtocolError(
                    source,
                    1,
                    "",
                    f"expected a mapping of protocol fields (docket: 1, id: ...), "
                    f"found {_describe_type(data)}",
                )
            ]
        )
    # NaN / infinity would make verdicts and the canonical hash meaningless: refuse them anywhere.
    bad_numbers = _non_finite(data)
    errors = [
        ProtocolError(
            source, line_for(lines, path), _dotted(path), "expected a finite number, found NaN/inf"
        )
        for path in bad_numbers
    ]
    try:
        protocol = Protocol.model_validate(data, strict=None if admission else False)
    except ValidationError as exc:
        shown = {e.path for e in errors}
        errors += [e for e in _format_validation(exc, data, lines, source) if e.path not in shown]
        raise ProtocolErrors(_by_line(errors)) from None
    if errors:
        raise ProtocolErrors(_by_line(errors))
    problems = cross_check(protocol, job_kinds=job_kinds, hardware=hardware, admission=admission)
    if problems:
        raise ProtocolErrors(
            _by_line(
                [
                    ProtocolError(source, line_for(lines, path), _dotted(path), msg)
                    for path, msg in problems
                ]
            )
        )
    return LoadedProtocol(
        protocol, source, text, canonical_json(protocol), protocol_sha256(protocol)
    )


def load_protocol_file(
    path: str | Path,
    *,
    job_kinds: Collection[str] | None = None,
    hardware: Collection[str] | None = None,
) -> LoadedProtocol:
    """Read and validate a protocol file; unreadable, binary or huge files are clear errors."""
    path = Path(path)
    source = str(path)
    try:
        raw = read_bounded(path, MAX_BYTES, "protocol YAML file")
    except FileRefused as exc:
        raise ProtocolErrors([ProtocolError(source, None, "", str(exc))]) from None
    if b"\x00" in raw:
        raise ProtocolErrors(
            [
                ProtocolError(
                    source, 1, "", "binary data (NUL bytes); expected a UTF-8 YAML text file"
                )
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProtocolErrors(
            [
                ProtocolError(
                    source,
                    line,
                    "",
                    f"not valid UTF-8 at byte {exc.start}; expected a UTF-8 YAML text file",
                )
            ]
        ) from None
    return load_protocol_text(text, source, job_kinds=job_kinds, hardware=hardware)
