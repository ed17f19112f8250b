"""The two expression languages the WorkflowTemplate uses, as Argo v4 evaluates them.

- ``when`` (govaluate, ``workflow/controller/steps.go: shouldExecute``): evaluated after substitution; bare
  words become strings (``false`` and ``true`` stay booleans), so ``true == true`` is true and ``yes == true``
  is false (a string never equals a boolean).
- ``depends`` and ``retryStrategy.expression`` (expr-lang, ``util/expr``): identifiers with member access,
  string/number/boolean literals, arrays, ``in``/``not in``, comparisons, ``&&``/``and``, ``||``/``or``,
  ``!``/``not`` and the functions Argo adds that a retry expression needs (``asInt``, ``asFloat``, ``string``).

Anything else raises :class:`Unsupported`: the harness must never guess what Argo would do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


class Unsupported(NotImplementedError):
    """An expression the harness does not implement (the template uses something new: implement it)."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<number>\d+(?:\.\d+)?)
    |(?P<op>==|!=|>=|<=|&&|\|\||[()\[\],!<>.])
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise Unsupported(f"cannot tokenize {text[position:]!r} in expression {text!r}")
        position = match.end()
        kind = match.lastgroup
        value = match.group(kind or "")
        if kind == "string":
            tokens.append(("literal", bytes(value[1:-1], "utf-8").decode("unicode_escape")))
        elif kind == "number":
            tokens.append(("literal", float(value) if "." in value else int(value)))
        else:
            tokens.append((kind or "", value))
    return tokens


def _equal(a: Any, b: Any) -> bool:
    """Go's equality: values of different kinds (a string and a boolean, a boolean and a number) differ."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _as_int(value: Any) -> int:
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


FUNCTIONS: dict[str, Callable[[Any], Any]] = {"asInt": _as_int, "asFloat": float, "string": str}


class _Parser:
    """Precedence climbing over the token list; ``words_are_strings`` gives govaluate's ``when`` rule."""

    def __init__(self, text: str, scope: dict[str, Any], words_are_strings: bool) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0
        self.scope = scope
        self.words_are_strings = words_are_strings

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise Unsupported(f"unexpected end of expression {self.text!r}")
        self.position += 1
        return token

    def expect(self, value: str) -> None:
        token = self.take()
        if token[1] != value:
            raise Unsupported(f"expected {value!r}, got {token[1]!r} in {self.text!r}")

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("op", "word") and token[1] in values

    def parse(self) -> Any:
        value = self.disjunction()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r} in {self.text!r}")
        return value

    def disjunction(self) -> Any:
        return self._chain(("||", "or"), self.conjunction, lambda a, b: bool(a) or bool(b))

    def conjunction(self) -> Any:
        return self._chain(("&&", "and"), self.comparison, lambda a, b: bool(a) and bool(b))

    def _chain(self, ops: tuple[str, ...], operand: Callable[[], Any], combine: Callable[[Any, Any], Any]) -> Any:
        value = operand()
        while self.at(*ops):
            self.take()
            value = combine(value, operand())
        return value

    def comparison(self) -> Any:
        left = self.unary()
        while True:
            if self.at("==", "!=", "<", ">", "<=", ">="):
                op = self.take()[1]
                right = self.unary()
                if op == "==":
                    left = _equal(left, right)
                elif op == "!=":
                    left = not _equal(left, right)
                else:
                    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (left, right))
                    if not numbers and not (isinstance(left, str) and isinstance(right, str)):
                        raise Unsupported(f"cannot order {left!r} and {right!r} in {self.text!r}")
                    left = {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
            elif self.at("in") or (self.at("not") and self._next_is("in")):
                negate = self.take()[1] == "not"
                if negate:
                    self.take()
                right = self.unary()
                if not isinstance(right, list):
                    raise Unsupported(f"'in' needs an array in {self.text!r}")
                found = any(_equal(left, item) for item in right)
                left = not found if negate else found
            else:
                return left

    def _next_is(self, value: str) -> bool:
        return self.position + 1 < len(self.tokens) and self.tokens[self.position + 1][1] == value

    def unary(self) -> Any:
        if self.at("!") or (self.at("not") and not self.words_are_strings):
            self.take()
            value = self.unary()
            if not isinstance(value, bool):
                raise Unsupported(f"negation of a non-boolean {value!r} in {self.text!r}")
            return not value
        return self.primary()

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "literal":
            return value
        if value == "(":
            inner = self.disjunction()
            self.expect(")")
            return inner
        if value == "[" and not self.words_are_strings:
            items = []
            while not self.at("]"):
                items.append(self.disjunction())
                if not self.at("]"):
                    self.expect(",")
            self.take()
            return items
        if kind != "word":
            raise Unsupported(f"unexpected {value!r} in {self.text!r}")
        if value in ("true", "false"):
            return value == "true"
        if self.words_are_strings:
            return value
        if self.at("("):
            if value not in FUNCTIONS:
                raise Unsupported(f"function {value}() in {self.text!r}")
            self.take()
            argument = self.disjunction()
            self.expect(")")
            return FUNCTIONS[value](argument)
        current: Any = self.scope
        path = value
        while True:
            if not isinstance(current, dict) or value not in current:
                raise Unsupported(f"unknown name {path!r} in {self.text!r}")
            current = current[value]
            if not self.at("."):
                return current
            self.take()
            value = self.take()[1]
            path += f".{value}"


def evaluate_when(text: str) -> bool:
    """govaluate's verdict on a substituted ``when``; a non-boolean result is an error, as in Argo."""
    if not text.strip():
        return True
    result = _Parser(text, {}, words_are_strings=True).parse()
    if not isinstance(result, bool):
        raise Unsupported(f"'when' {text!r} is not boolean (Argo fails the task)")
    return result


def evaluate_expr(text: str, scope: dict[str, Any]) -> bool:
    """expr-lang's verdict on ``depends`` logic or a retry expression."""
    result = _Parser(text, scope, words_are_strings=False).parse()
    if not isinstance(result, bool):
        raise Unsupported(f"expression {text!r} is not boolean")
    return result
