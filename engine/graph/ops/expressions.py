"""The expression language: our own tokenizer and recursive-descent parser.

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?     # no chaining
                | sum ("in" | "not" "in") "[" literal ("," literal)* ","? "]"
    sum        := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "//" | "%") unary)*
    unary      := ("-" | "+") unary | power
    power      := atom ("**" unary)?                                    # right-assoc, like Python
    atom       := NUMBER | TEXT | NAME ("." NAME)* | FUNCTION "(" expr ("," expr)* ")" | "(" expr ")"
    literal    := NUMBER | "-" NUMBER | TEXT

Precedence and associativity follow Python. Names are references (``inputs.x``,
``node``, ``node.tensor``, or a bare graph input name); the only calls are the
whitelisted functions in ``FUNCTIONS``. TEXT is a quoted literal (``"eu"`` or ``'eu'``;
``\\`` and the quote itself may be escaped with a backslash), compared with BYTES tensors
as UTF-8 bytes; a list of literals appears only after ``in``/``not in``. There are no
attributes, subscripts, lambdas or keywords beyond ``and``/``or``/``not``/``in``: anything
else is a syntax error with its column. Nothing is ever handed to ``eval``.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from engine.graph.values.diagnostics import did_you_mean

FUNCTIONS: dict[str, int] = {  # name -> number of arguments
    "abs": 1, "exp": 1, "log": 1, "log1p": 1, "sqrt": 1, "sigmoid": 1, "tanh": 1,
    "floor": 1, "ceil": 1, "round": 1, "minimum": 2, "maximum": 2, "clip": 3, "where": 3,
}  # fmt: skip
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
MAX_LENGTH = 4000
MAX_DEPTH = 60


class ExprError(Exception):
    """A problem in an expression; ``col`` is 1-based within the expression text."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    col: int


@dataclass(frozen=True, slots=True)
class Name:
    text: str  # "inputs.amount", "x", "ip_risk.prob"
    col: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" | "+" | "not"
    operand: Expr
    col: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # arithmetic, comparison, "and", "or"
    left: Expr
    right: Expr
    col: int


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    col: int


@dataclass(frozen=True, slots=True)
class Text:
    value: str
    col: int


@dataclass(frozen=True, slots=True)
class Member:
    """``operand in [values]`` (``negated``: ``not in``); values are all numbers or all text."""

    operand: Expr
    values: tuple[int | float | str, ...]
    negated: bool
    col: int


Expr = Num | Text | Name | Unary | Binary | Call | Member


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "num" | "str" | "name" | "op" | "end" | "bad" (text is the problem)
    text: str
    col: int


_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"""|(?P<str>"(?:[^"\\\n]|\\["'\\])*"|'(?:[^'\\\n]|\\["'\\])*')"""
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|<=|>=|==|!=|[-+*/%<>(),.\[\]])"
)


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is too long ({len(text)} characters; the limit is {MAX_LENGTH})", 1)
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # reported when the parser reaches it, so earlier problems come first
            tokens.append(Token("bad", _unexpected(text[pos]), pos + 1))
            break
        kind = match.lastgroup
        assert kind is not None
        if kind == "str":
            body = match.group()[1:-1]
            tokens.append(Token(kind, re.sub(r"\\(.)", r"\1", body), pos + 1))
        elif kind != "space":
            tokens.append(Token(kind, match.group(), pos + 1))
        pos = match.end()
    else:
        tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _unexpected(char: str) -> str:
    if char in "'\"":
        return "this text is never closed (end it with the same quote on the same line)"
    if char in "{}":
        return f"'{char}' is not supported in expressions (no mappings)"
    if char == "=":
        return "'=' is not an operator here; compare with '=='"
    if char in "&|~^":
        return f"'{char}' is not supported; use 'and', 'or', 'not'"
    return f"unexpected character '{char}'"


def parse(text: str) -> Expr:
    """The syntax tree of ``text``; ExprError (with a column) when it is not an expression."""
    if not text.strip():
        raise ExprError("expression is empty", 1)
    parser = _Parser(tokenize(text))
    tree = parser.expr()
    token = parser.peek()
    if token.kind != "end":
        raise ExprError(f"unexpected '{token.text}' after a complete expression", token.col)
    return tree


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def peek(self) -> Token:
        token = self.tokens[self.at]
        if token.kind == "bad":
            raise ExprError(token.text, token.col)
        return token

    def take(self) -> Token:
        token = self.tokens[self.at]
        if token.kind == "bad":
            raise ExprError(token.text, token.col)
        self.at += 1
        return token

    def accept(self, *texts: str) -> Token | None:
        token = self.peek()
        if token.kind in ("op", "name") and token.text in texts:
            return self.take()
        return None

    def expect(self, text: str, why: str) -> Token:
        token = self.peek()
        if token.text != text or token.kind != "op":
            found = "the end of the expression" if token.kind == "end" else f"'{token.text}'"
            raise ExprError(f"expected '{text}' {why}, found {found}", token.col)
        return self.take()

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression is nested too deeply (the limit is {MAX_DEPTH})", self.peek().col)
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Expr:
        left = self.and_()
        while token := self.accept("or"):
            left = Binary("or", left, self.and_(), token.col)
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while token := self.accept("and"):
            left = Binary("and", left, self.not_(), token.col)
        return left

    def not_(self) -> Expr:
        if token := self.accept("not"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExprError(f"expression is nested too deeply (the limit is {MAX_DEPTH})", token.col)
            try:
                return Unary("not", self.not_(), token.col)
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.sum()
        if token := self.accept("in"):
            return self.member(left, token, negated=False)
        here = self.tokens[self.at]
        if here.kind == "name" and here.text == "not" and self.tokens[self.at + 1].text == "in":
            self.take()
            self.take()
            return self.member(left, here, negated=True)
        if token := self.accept(*COMPARISONS):
            left = Binary(token.text, left, self.sum(), token.col)
            if again := self.accept(*COMPARISONS):
                raise ExprError(
                    f"chained comparisons are not supported; write (a {token.text} b) and (b {again.text} c)",
                    again.col,
                )
        return left

    def member(self, operand: Expr, token: Token, *, negated: bool) -> Expr:
        word = "not in" if negated else "in"
        self.expect("[", f'after \'{word}\' (a list of values such as ["eu", "uk"])')
        values: list[int | float | str] = []
        while True:
            values.append(self.literal(word))
            if not self.accept(","):
                break
            if self.peek().text == "]" and self.peek().kind == "op":
                break  # a trailing comma
        self.expect("]", "to close the list")
        kinds = {isinstance(v, str) for v in values}
        if len(kinds) > 1:
            raise ExprError(f"the list after '{word}' mixes text and numbers; use one kind", token.col)
        return Member(operand, tuple(values), negated, token.col)

    def literal(self, word: str) -> int | float | str:
        token = self.take()
        sign = 1
        if token.kind == "op" and token.text == "-":
            sign, token = -1, self.take()
        if token.kind == "str" and sign == 1:
            return token.text
        if token.kind == "num":
            value = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
            return sign * value
        found = "the end of the expression" if token.kind == "end" else f"'{token.text}'"
        raise ExprError(
            f"the list after '{word}' holds numbers or quoted text only, found {found}", token.col
        )

    def sum(self) -> Expr:
        left = self.term()
        while token := self.accept("+", "-"):
            left = Binary(token.text, left, self.term(), token.col)
        return left

    def term(self) -> Expr:
        left = self.unary()
        while token := self.accept("*", "/", "//", "%"):
            left = Binary(token.text, left, self.unary(), token.col)
        return left

    def unary(self) -> Expr:
        if token := self.accept("-", "+"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExprError(f"expression is nested too deeply (the limit is {MAX_DEPTH})", token.col)
            try:
                return Unary(token.text, self.unary(), token.col)
            finally:
                self.depth -= 1
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        if token := self.accept("**"):
            return Binary("**", base, self.unary(), token.col)
        return base

    def atom(self) -> Expr:
        token = self.take()
        if token.kind == "num":
            value = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
            return Num(value, token.col)
        if token.kind == "str":
            return Text(token.text, token.col)
        if token.kind == "op" and token.text == "[":
            raise ExprError("a list of values may only follow 'in' or 'not in'", token.col)
        if token.kind == "op" and token.text == "(":
            inner = self.expr()
            self.expect(")", "to close the '(' at column " + str(token.col))
            return inner
        if token.kind == "name":
            return self.name_or_call(token)
        if token.kind == "end":
            raise ExprError("expression ends too early: expected a value", token.col)
        raise ExprError(f"expected a value, found '{token.text}'", token.col)

    def name_or_call(self, token: Token) -> Expr:
        if token.text in ("and", "or", "not", "in"):
            raise ExprError(f"expected a value before '{token.text}'", token.col)
        if keyword.iskeyword(token.text) or keyword.issoftkeyword(token.text):
            raise ExprError(f"'{token.text}' is not part of the expression language", token.col)
        if self.peek().text == "(" and self.peek().kind == "op":
            return self.call(token)
        parts = [token.text]
        while self.accept("."):
            part = self.take()
            if part.kind != "name":
                raise ExprError(f"expected a tensor name after '{'.'.join(parts)}.'", part.col)
            parts.append(part.text)
            if len(parts) > 2:
                raise ExprError(f"'{'.'.join(parts)}' is not a reference (use node.tensor)", token.col)
            if self.peek().text == "(" and self.peek().kind == "op":
                raise ExprError(
                    f"'{'.'.join(parts)}' cannot be called; the only functions are {', '.join(FUNCTIONS)}",
                    part.col,
                )
        after = self.peek()
        if after.kind == "op" and after.text == "[":
            raise ExprError(
                "'[' is not supported after a name (no indexing); a list of values may only follow 'in'",
                after.col,
            )
        return Name(".".join(parts), token.col)

    def call(self, token: Token) -> Expr:
        if token.text not in FUNCTIONS:
            hint = did_you_mean(token.text, FUNCTIONS)
            raise ExprError(
                f"unknown function '{token.text}'{hint or '; the functions are ' + ', '.join(FUNCTIONS)}",
                token.col,
            )
        self.expect("(", "after the function name")
        args: list[Expr] = []
        if not self.accept(")"):
            args.append(self.expr())
            while self.accept(","):
                args.append(self.expr())
            self.expect(")", f"to close the call of {token.text}()")
        want = FUNCTIONS[token.text]
        if len(args) != want:
            raise ExprError(
                f"{token.text}() takes {want} argument{'s' if want > 1 else ''}, got {len(args)}", token.col
            )
        return Call(token.text, tuple(args), token.col)


def references(tree: Expr) -> list[Name]:
    """Every name the expression reads, in reading order (repeats included)."""
    if isinstance(tree, Name):
        return [tree]
    if isinstance(tree, Unary):
        return references(tree.operand)
    if isinstance(tree, Binary):
        return references(tree.left) + references(tree.right)
    if isinstance(tree, Call):
        return [name for arg in tree.args for name in references(arg)]
    if isinstance(tree, Member):
        return references(tree.operand)
    return []
