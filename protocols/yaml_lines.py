"""Safe YAML loading that keeps the line of every key and value and refuses duplicate keys.

``load_with_lines(text)`` returns ``(data, lines)`` where ``lines`` maps a path tuple such as
``("decision_rules", "regime_wins", "margin")`` or ``("groups", 3)`` to its 1-based line. Only the
YAML safe subset is constructed: no Python object tags, no other tags on mappings or lists, no
recursive aliases, at most ``MAX_NODES`` values and ``MAX_SCALAR_CHARS`` characters of scalar text
after alias expansion (an alias of one long string must not blow up the canonical JSON), and
``MAX_DEPTH`` levels.

Lines are physical lines: 1 + the number of ``"\\n"`` before the position. PyYAML's own
``mark.line`` also breaks at U+0085, U+2028 and U+2029, which editors and ``grep -n`` do not.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import yaml

Path = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """The safe loader, reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 and PyYAML's
    default make it the string "1e-3", which would reach a job's params as text)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class YamlProblem(Exception):
    """A YAML-level problem (syntax, duplicate key, non-string key) with its line."""

    def __init__(self, line: int | None, path: Path, message: str) -> None:
        self.line = line
        self.path = path
        self.message = message
        super().__init__(message)


MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_SCALAR_CHARS = 4_000_000
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _Walk:
    """Bookkeeping of one conversion: values produced and the collections being expanded."""

    def __init__(self, text: str) -> None:
        self.count = 0
        self.chars = 0
        self.active: set[int] = set()
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, mark: yaml.Mark) -> int:
        """Physical 1-based line of ``mark`` (counts only ``"\\n"``)."""
        return bisect.bisect_left(self.newlines, mark.index) + 1


def _convert(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int], walk: _Walk
) -> Any:
    line = walk.line(node.start_mark)
    lines.setdefault(path, line)
    walk.count += 1
    if isinstance(node, yaml.ScalarNode):
        walk.chars += len(node.value)
        if walk.chars > MAX_SCALAR_CHARS:
            raise YamlProblem(
                lines.get(path[:1], line),
                path[:1],
                f"the document expands to more than {MAX_SCALAR_CHARS} characters of values "
                "(through aliases?)",
            )
    if walk.count > MAX_NODES:
        # aliases can expand a small file exponentially ("billion laughs"): name the top-level
        # entry being expanded, the alias's own position is lost by the composer
        raise YamlProblem(
            lines.get(path[:1], line),
            path[:1],
            f"the document expands to more than {MAX_NODES} values (through aliases?)",
        )
    if len(path) > MAX_DEPTH:
        raise YamlProblem(line, path[:3], f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        expected = _MAP_TAG if isinstance(node, yaml.MappingNode) else _SEQ_TAG
        if node.tag != expected:
            raise YamlProblem(line, path, f"unsupported YAML tag {node.tag!r}; use plain YAML")
        if id(node) in walk.active:
            raise YamlProblem(line, path, "recursive alias: a value contains itself")
        walk.active.add(id(node))
        try:
            return _convert_collection(loader, node, path, lines, walk)
        finally:
            walk.active.discard(id(node))
    return loader.construct_object(node, deep=True)


def _convert_collection(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int], walk: _Walk
) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(loader, item, path + (i,), lines, walk) for i, item in enumerate(node.value)
        ]
    loader.flatten_mapping(node)  # resolves YAML merge keys (<<) like the safe loader does
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key_line = walk.line(key_node.start_mark)
        if not isinstance(key_node, yaml.ScalarNode):
            raise YamlProblem(key_line, path, "mapping keys must be plain scalars")
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            raise YamlProblem(key_line, path, f"mapping keys must be plain scalars, found {key!r}")
        key = str(key) if not isinstance(key, str) else key
        if key in result:
            first = lines.get(path + (key,))
            raise YamlProblem(
                key_line,
                path + (key,),
                f"duplicate key {key!r} (first defined on line {first}); "
                "each key may appear once per mapping",
            )
        lines[path + (key,)] = key_line
        result[key] = _convert(loader, value_node, path + (key,), lines, walk)
        lines[path + (key,)] = key_line
    return result


def load_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document safely; raise :class:`YamlProblem` on any YAML-level problem."""
    try:
        loader = _Loader(text)  # checks every character is printable
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YamlProblem(
            line,
            (),
            f"control character {exc.character:#04x} is not allowed in YAML; "
            "expected a UTF-8 YAML text file",
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        return _convert(loader, node, (), lines, _Walk(text)), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = text.count("\n", 0, mark.index) + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context else ""
        raise YamlProblem(line, (), f"invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(None, (), f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlProblem(None, (), f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """Line of the longest prefix of ``path`` that was seen in the document."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
