"""Derived-metric expressions parsed into a whitelisted AST and evaluated without ``eval``.

Allowed: numbers, names, unary minus/plus, ``+ - * /`` and ``**``, parentheses, and the
functions ``min``, ``max``, ``abs``, ``log`` (natural), ``exp``, ``sqrt``. Anything else is refused.
An expression is at most ``MAX_EXPR_CHARS`` characters and ``MAX_EXPR_DEPTH`` nodes deep
(``a+a+...`` with n terms is n deep), so parsing, checking, evaluating and ``ast.unparse``
(the canonical spelling) never exhaust Python's recursion limit.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass

_FUNCS = {
    "min": min,
    "max": max,
    "abs": abs,
    "log": math.log,
    "exp": math.exp,
    "sqrt": math.sqrt,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


MAX_EXPR_CHARS = 10_000
MAX_EXPR_DEPTH = 100


class ExprError(ValueError):
    """An expression that is not in the whitelist, or that cannot be evaluated."""


@dataclass(frozen=True)
class Expr:
    source: str
    tree: ast.expr
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        """Value of the expression for ``values`` (every name must be given)."""
        missing = self.names - set(values)
        if missing:
            raise ExprError(f"no value for {', '.join(sorted(missing))} in {self.source!r}")
        try:
            return float(_eval(self.tree, values))
        except (ZeroDivisionError, ValueError, OverflowError) as exc:
            raise ExprError(f"cannot evaluate {self.source!r}: {exc}") from None


def _check(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExprError(f"only numbers are allowed as constants, found {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id in _FUNCS:
            raise ExprError(f"{node.id} is a function; call it as {node.id}(...)")
        names.add(node.id)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
            raise ExprError(
                "only calls to "
                + ", ".join(sorted(_FUNCS))
                + " are allowed, found "
                + ast.unparse(node.func)
            )
        if not node.args:
            raise ExprError(f"{node.func.id}() needs arguments")
        for arg in node.args:
            _check(arg, names)
    else:
        raise ExprError(f"not allowed in a metric expression: {ast.unparse(node)!r}")


def _eval(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, values)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCS[node.func.id](*[_eval(a, values) for a in node.args])
    raise ExprError(f"unexpected node {ast.dump(node)}")  # unreachable after _check


def _depth(tree: ast.AST) -> int:
    """Nesting depth of ``tree`` (iterative: safe on any tree ``ast.parse`` returns)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_expr(source: str) -> Expr:
    """Parse and whitelist-check ``source``; raise :class:`ExprError` naming what is refused."""
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(
            f"expression is {len(source)} characters long; at most {MAX_EXPR_CHARS} are allowed"
        )
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExprError(f"not a valid expression: {source!r:.80} ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression nested more than {MAX_EXPR_DEPTH} levels deep") from None
    # each level of the tree costs several stack frames in ast.unparse; bound it
    if _depth(tree) > MAX_EXPR_DEPTH:
        raise ExprError(
            f"expression nested more than {MAX_EXPR_DEPTH} levels deep (a chain of n terms is "
            "n levels); split it into several metrics"
        )
    names: set[str] = set()
    _check(tree, names)
    return Expr(source, tree, frozenset(names))
