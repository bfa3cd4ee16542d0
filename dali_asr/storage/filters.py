"""Omnilingual's ``fragment_streaming.partition_filters``, parsed without ``eval``.

The reference (fairseq2's ``process_filter``) ``eval``s each string with ``pa``/``pc`` in scope,
so a config file can run any code. Here the string is read with :mod:`ast` and only a whitelist
of pyarrow-expression constructs is rebuilt from it: configs written for the reference keep
working, anything else is refused with a message that quotes it. The filter then selects files
by their partition values with pyarrow itself, so the semantics stay pyarrow's.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from dali_asr.storage.discovery import PARTITION_KEYS

T = TypeVar("T")

ACCEPTED = (
    "accepted: pc.field(name) (also pa.compute., pyarrow.compute., ds. or bare field), "
    "str/int/float/bool literals and lists/tuples of them, == != < <= > >=, .isin([...]), "
    ".is_null(), .is_valid(), & | ~, and/or/not, parentheses, pc.is_in/equal/not_equal/less/"
    "less_equal/greater/greater_equal/and_/or_/invert/is_null/is_valid(...), pa.array([...]), "
    "pc.scalar(value)"
)
_FIELD_MODULES = {"pc", "pa.compute", "pyarrow.compute", "ds", "pa.dataset", "pyarrow.dataset"}
_PC_MODULES = {"pc", "pa.compute", "pyarrow.compute"}
# The pc functions found in reference configs and docs; the real ones are called, so a config
# means here what it means there.
_PC_FUNCTIONS = {
    "is_in",
    "equal",
    "not_equal",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "and_",
    "and_kleene",
    "or_",
    "or_kleene",
    "invert",
    "is_null",
    "is_valid",
}
_METHODS = {"isin", "is_null", "is_valid"}
# What each refused kind of node is called in error messages.
_REFUSED = {
    ast.Name: "names are not accepted",
    ast.Attribute: "attribute access is not accepted",
    ast.Subscript: "subscripts are not accepted",
    ast.Lambda: "lambdas are not accepted",
    ast.JoinedStr: "f-strings are not accepted",
    ast.Constant: "only str, int, float and bool literals are accepted",
}
_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class _Parser:
    """Rebuilds one filter string; every refusal quotes the offending fragment."""

    def __init__(self, text: str, fields: Sequence[str] | None) -> None:
        self.text = text
        self.fields = fields

    def fail(self, node: ast.AST, why: str) -> ValueError:
        fragment = ast.get_source_segment(self.text, node) or ast.dump(node)
        return ValueError(f"partition filter {self.text!r}: {why} in {fragment!r}; {ACCEPTED}")

    def literal(self, node: ast.AST, flat: bool = False) -> Any:
        """A str/int/float/bool constant, or a list or tuple of them unless ``flat``."""
        if isinstance(node, ast.Constant) and type(node.value) in (str, int, float, bool):
            return node.value
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)
        ):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        if isinstance(node, (ast.List, ast.Tuple)) and not flat:
            items = [self.literal(e, flat=True) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, (ast.List, ast.Tuple)):
            raise self.fail(node, "nested lists are not accepted")
        raise self.fail(node, _REFUSED.get(type(node), f"{type(node).__name__} is not accepted"))

    def expr(self, node: ast.AST, hint: str = "") -> pc.Expression:
        """A node that must come out as an expression over a field, not a plain value."""
        value = self.value(node)
        if not isinstance(value, pc.Expression):
            raise self.fail(node, f"expected an expression over a field, got {value!r}{hint}")
        return value

    def value(self, node: ast.AST) -> Any:
        """An expression, a literal, a list of literals or a ``pa.array``."""
        if isinstance(node, ast.BoolOp):
            op = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            return reduce(op, [self.expr(v) for v in node.values])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            op = operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_
            # & and | bind tighter than ==: a literal here is almost always missing parentheses.
            hint = " (put parentheses around comparisons joined by & or |)"
            return op(self.expr(node.left, hint), self.expr(node.right, hint))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
            return ~self.expr(node.operand)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.literal(node)

    def compare(self, node: ast.Compare) -> pc.Expression:
        for op in node.ops:
            if type(op) not in _COMPARISONS:
                raise self.fail(
                    node,
                    f"operator {type(op).__name__} is not accepted (for "
                    "membership use .isin([...]))",
                )
        # a < b < c means (a < b) & (b < c), as in Python.
        operands = [self.value(n) for n in (node.left, *node.comparators)]
        parts = []
        for i, op in enumerate(node.ops):
            left, right = operands[i], operands[i + 1]
            if any(isinstance(v, (list, tuple, pa.Array)) for v in (left, right)):
                raise self.fail(node, "a list cannot be compared (use .isin([...]))")
            if not isinstance(left, pc.Expression) and not isinstance(right, pc.Expression):
                raise self.fail(node, "a comparison needs a field on one side")
            if not isinstance(left, pc.Expression):
                left = pc.scalar(left)
            parts.append(_COMPARISONS[type(op)](left, right))
        return reduce(operator.and_, parts)

    def call(self, node: ast.Call) -> Any:
        name = _dotted(node.func)
        module, _, attr = (name or "").rpartition(".")
        if (
            name is not None
            and (name == "field" or module in _FIELD_MODULES)
            and attr in ("field", "scalar")
        ):
            if len(node.args) != 1 or node.keywords:
                raise self.fail(node, f"{name}() takes exactly one argument")
            if attr == "scalar":
                return pc.scalar(self.literal(node.args[0], flat=True))
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise self.fail(node, "a field name must be a string literal")
            if self.fields is not None and arg.value not in self.fields:
                raise self.fail(node, _unknown_field(arg.value, self.fields))
            return pc.field(arg.value)
        if name in ("pa.array", "pyarrow.array") and len(node.args) == 1 and not node.keywords:
            return pa.array(self.literal(node.args[0]))
        if module in _PC_MODULES and attr in _PC_FUNCTIONS:
            if any(k.arg != "value_set" for k in node.keywords):
                raise self.fail(node, f"{name}() accepts no keyword but value_set")
            args = [self.value(a) for a in node.args]
            kwargs = {k.arg: self.value(k.value) for k in node.keywords if k.arg}
            if attr == "is_in":  # pyarrow wants an array; a plain list reads the same in YAML
                args[1:2] = [_array(a) for a in args[1:2]]
                kwargs = {k: _array(v) for k, v in kwargs.items()}
            # pyarrow registers no "and_"/"or_" kernel for expressions; without nulls (partition
            # values have none) the Kleene versions give the same answers.
            function = getattr(pc, {"and_": "and_kleene", "or_": "or_kleene"}.get(attr, attr))
            try:
                result = function(*args, **kwargs)
            except (TypeError, pa.ArrowException) as exc:
                raise self.fail(node, str(exc)) from exc
            if not isinstance(result, pc.Expression):
                raise self.fail(node, "the call involves no field")
            return result
        if name is None and isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS:
            receiver = self.expr(node.func.value)
            if node.func.attr == "isin" and len(node.args) == 1 and not node.keywords:
                values = self.value(node.args[0])
                if not isinstance(values, (list, tuple, pa.Array)):
                    raise self.fail(node, ".isin() takes a list of values")
                return receiver.isin(_array(values))
            if node.func.attr != "isin" and not node.args and not node.keywords:
                return getattr(receiver, node.func.attr)()
            raise self.fail(node, f"wrong arguments to .{node.func.attr}()")
        callee = name or ast.get_source_segment(self.text, node.func)
        raise self.fail(node, f"calling {callee} is not accepted")


def _dotted(node: ast.AST) -> str | None:
    """``pa.compute.field`` for a chain of names, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _unknown_field(name: str, fields: Sequence[str]) -> str:
    return f"unknown partition field {name!r} (the fields are {', '.join(fields)})"


def _array(value: Any) -> Any:
    # An empty list would make a null-typed set that string columns cannot be looked up in.
    if isinstance(value, (list, tuple)):
        return pa.array(value, type=None if value else pa.string())
    return value


def parse_partition_filter(
    text: str | pc.Expression | Sequence[str | pc.Expression] | None,
    fields: Sequence[str] | None = PARTITION_KEYS,
) -> pc.Expression | None:
    """The expression of a ``partition_filters`` value; a list is AND-ed, None/empty → None.

    ``fields`` are the field names allowed (None: any). Raises ValueError quoting what it refuses.
    """
    if text is None or isinstance(text, pc.Expression):
        return text
    if isinstance(text, (list, tuple)):
        parts = [parse_partition_filter(t, fields) for t in text]
        exprs = [p for p in parts if p is not None]
        return reduce(operator.and_, exprs) if exprs else None
    if not isinstance(text, str):
        raise ValueError(
            f"partition_filters must be a string or a list of strings, "
            f"got {type(text).__name__}: {text!r}"
        )
    text = text.strip()
    if not text:
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(
            f"partition filter {text!r} is not valid Python syntax ({exc.msg}); {ACCEPTED}"
        ) from exc
    try:
        return _Parser(text, fields).expr(tree)
    except (TypeError, pa.ArrowException) as exc:  # e.g. pa.array(["a", 1])
        raise ValueError(f"partition filter {text!r}: {exc}") from exc


def filter_files(files: Sequence[T], expression: pc.Expression | str | list[str] | None) -> list[T]:
    """The files whose (corpus, split, language) match, in their original order."""
    expression = parse_partition_filter(expression)
    if expression is None or not files:
        return list(files)
    columns = {k: pa.array([getattr(f, k) for f in files], pa.string()) for k in PARTITION_KEYS}
    # A row number to restore the order: pyarrow's filter may run threaded.
    table = pa.table({**columns, "__row__": pa.array(range(len(files)), pa.int64())})
    try:
        rows = table.filter(expression).column("__row__").to_pylist()
    except (pa.ArrowException, TypeError) as exc:
        # An expression built in code skips the parser's field check; pyarrow names the field.
        match = re.search(r"No match for FieldRef\.Name\((.*?)\)", str(exc))
        why = (
            _unknown_field(match.group(1), PARTITION_KEYS)
            if match
            else f"cannot be applied to the partition values (all strings): {exc}"
        )
        raise ValueError(f"partition filter {describe(expression)}: {why}") from exc
    return [files[i] for i in sorted(rows)]


def describe(expression: pc.Expression | None) -> str:
    """One line for logs (pyarrow prints value sets over several lines)."""
    if expression is None:
        return "no partition filter"
    return re.sub(r"\s*\n\s*", " ", str(expression))
