"""A reader for collectd.conf syntax, so a pushed config is checked without running it.

It follows collectd's own lexer and grammar (liboconfig): ``#`` comments, a
backslash before a line end continues the line, quoted strings (``\\x`` escapes,
may span lines), unquoted words, numbers and booleans; a statement is
``Key value...`` on one line; a block is ``<Key value...>`` ... ``</Key>``, each
tag on a line of its own, the closing key spelled exactly like the opening one.

It is deliberately a little more lenient than collectd about unquoted words
(``collectd -T`` still judges them later); what it must never do is see a
structure collectd would not see. ``Include`` is not followed: only the text
itself is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collectd_monitor.errors import MonitorError

Value = str | float | bool

_UNQUOTED = re.compile(r"[A-Za-z0-9_+\-.:]+")
_QUOTED = re.compile(r'"((?:[^\\"]|\\.)*)"', re.DOTALL)
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


class ConfSyntaxError(MonitorError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"syntax error in line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    """``word``, ``string``, ``<``, ``>``, ``/`` or ``eol``."""
    text: str
    line: int


@dataclass
class Node:
    """One statement (``children`` empty) or block of a collectd.conf."""

    key: str
    values: list[Value]
    line: int
    children: list[Node] = field(default_factory=list)
    block: bool = False
    tag: str = ""
    """A block's opening tag as written, for messages."""

    def find(self, key: str) -> list[Node]:
        """Children whose key is ``key`` (case-insensitive, as collectd compares keys)."""
        return [child for child in self.children if child.key.lower() == key.lower()]

    @property
    def first(self) -> Value | None:
        return self.values[0] if self.values else None


def tokens(text: str) -> list[Token]:
    found: list[Token] = []
    pos, line, end = 0, 1, len(text)
    while pos < end:
        char = text[pos]
        if char in " \t\b\r":
            pos += 1
        elif char == "#":
            newline = text.find("\n", pos)
            pos = end if newline < 0 else newline
        elif char == "\\" and text.startswith("\n", pos + 1):
            pos, line = pos + 2, line + 1
        elif char == "\\" and text.startswith("\r\n", pos + 1):
            pos, line = pos + 3, line + 1
        elif char == "\n":
            found.append(Token("eol", "\n", line))
            pos, line = pos + 1, line + 1
        elif char in "<>/":
            found.append(Token(char, char, line))
            pos += 1
        elif char == '"':
            match = _QUOTED.match(text, pos)
            if match is None:
                raise ConfSyntaxError(line, "a quoted string is never closed")
            inner = re.sub(r"\\\r?\n", "", match.group(1))  # a continued line
            found.append(Token("string", re.sub(r"\\(.)", r"\1", inner, flags=re.S), line))
            line += match.group(0).count("\n")
            pos = match.end()
        elif match := _UNQUOTED.match(text, pos):
            found.append(Token("word", match.group(0), line))
            pos = match.end()
        else:
            raise ConfSyntaxError(line, f"unexpected character {char!r} (quote the value)")
    return found


def _value(token: Token) -> Value:
    if token.kind == "string":
        return token.text
    lower = token.text.lower()
    if lower in _TRUE:
        return True
    if lower in _FALSE:
        return False
    try:
        return float(token.text)
    except ValueError:
        return token.text


def parse(text: str) -> Node:
    """The config as a tree under a root node; raises :class:`ConfSyntaxError`."""
    root = Node("", [], 0, block=True)
    stack = [root]
    last = text.count("\n") + 1
    items = [*tokens(text), Token("eol", "\n", last), Token("eol", "\n", last)]
    index = 0

    def line_end(at: int) -> int:
        if items[at].kind != "eol":
            raise ConfSyntaxError(
                items[at].line, f"unexpected {items[at].text!r} (values with it must be quoted)"
            )
        return at + 1

    while index < len(items):
        token = items[index]
        if token.kind == "eol":
            index += 1
            continue
        if token.kind == "word":
            values: list[Value] = []
            index += 1
            while items[index].kind in ("word", "string"):
                values.append(_value(items[index]))
                index += 1
            if not values and items[index].kind == "eol":
                raise ConfSyntaxError(token.line, f"{token.text} needs a value")
            stack[-1].children.append(Node(token.text, values, token.line))
            index = line_end(index)
            continue
        if token.kind != "<":
            raise ConfSyntaxError(token.line, f"unexpected {token.text!r}")
        closing = items[index + 1].kind == "/"
        index += 2 if closing else 1
        key = items[index]
        if key.kind != "word":
            raise ConfSyntaxError(token.line, "a block tag needs a name")
        index += 1
        values = []
        shown = [key.text]
        while items[index].kind in ("word", "string"):
            values.append(_value(items[index]))
            shown.append(_show(items[index]))
            index += 1
        if items[index].kind != ">":
            raise ConfSyntaxError(token.line, f"the tag <{key.text} ...> is not closed with '>'")
        index = line_end(index + 1)
        if not closing:
            node = Node(key.text, values, token.line, block=True, tag=" ".join(shown))
            stack[-1].children.append(node)
            stack.append(node)
            continue
        if values:
            raise ConfSyntaxError(token.line, f"</{key.text}> takes no values")
        if len(stack) == 1:
            raise ConfSyntaxError(token.line, f"</{key.text}> closes no open block")
        if stack[-1].key != key.text:
            raise ConfSyntaxError(
                token.line,
                f"</{key.text}> closes <{stack[-1].key}> opened in line {stack[-1].line}",
            )
        stack.pop()
    if len(stack) > 1:
        open_block = stack[-1]
        raise ConfSyntaxError(
            open_block.line, f"<{open_block.tag}> is never closed (no </{open_block.key}>)"
        )
    return root


def _show(token: Token) -> str:
    return f'"{token.text}"' if token.kind == "string" else token.text
