"""Safe YAML loading that keeps the line of every key and value and refuses duplicate keys.

``load_with_lines(text)`` returns ``(data, lines)`` where ``lines`` maps a path tuple such as
``("decision_rules", "regime_wins", "margin")`` or ``("groups", 3)`` to its 1-based line. Only the
YAML safe subset is constructed (no Python object tags).
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlProblem(Exception):
    """A YAML-level problem (syntax, duplicate key, non-string key) with its line."""

    def __init__(self, line: int | None, path: Path, message: str) -> None:
        self.line = line
        self.path = path
        self.message = message
        super().__init__(message)


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<) like the safe loader does
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool):
                raise YamlProblem(
                    key_line, path, f"mapping keys must be plain scalars, found {key!r}"
                )
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
            result[key] = _convert(loader, value_node, path + (key,), lines)
            lines[path + (key,)] = key_line
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, path + (i,), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document safely; raise :class:`YamlProblem` on any YAML-level problem."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[Path, int] = {}
        return _convert(loader, node, (), lines), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        context = f" ({exc.context})" if exc.context else ""
        raise YamlProblem(line, (), f"invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(None, (), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """Line of the longest prefix of ``path`` that was seen in the document."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
