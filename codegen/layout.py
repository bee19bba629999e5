"""Keep generated lines short: break a long call or literal at its top-level commas.

Generated modules are read by people and checked by ruff with the project's line length, so a
long call is laid out the way a formatter would: one argument per line, hanging indent.
"""
from __future__ import annotations

import textwrap

WIDTH = 100


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and strings."""
    parts, depth, quote, start, escaped = [], 0, None, 0, False
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote and not escaped else quote
            escaped = ch == "\\" and not escaped
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _outer_bracket(line: str) -> int | None:
    """Index of the opening bracket whose partner closes the line."""
    end = len(line) - 1
    if end < 0 or line[end] not in ")]}":
        return None
    depth, quote = 0, None
    for i in range(end, -1, -1):
        ch = line[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in ")]}":
            depth += 1
        elif ch in "([{":
            depth -= 1
            if depth == 0:
                return i
    return None


def fit(line: str, indent: str = "") -> list[str]:
    """`line` (without `indent`) as one or more lines no wider than WIDTH: a call, literal or
    header that is too long is broken at its top-level commas, one item per line."""
    if len(indent) + len(line) <= WIDTH:
        return [indent + line]
    own = len(line) - len(line.lstrip())
    indent, line = indent + line[:own], line[own:]
    if line.startswith("#"):
        return [indent + p for p in textwrap.wrap(line, WIDTH - len(indent), subsequent_indent="#     ")]
    body = line.rstrip(",:")
    tail = line[len(body):]
    at = _outer_bracket(body)
    if at is None:
        return [indent + line]
    out = [indent + body[: at + 1]]
    parts = _split_top(body[at + 1: -1])
    comma = len(parts) > 1 or _comma_keeps_meaning(body, at) and " for " not in parts[0]  # f(x for x in y,)
    for part in parts:
        out += fit(part + ("," if comma else ""), indent + "    ")
    out.append(indent + body[-1] + tail)
    return out


def _comma_keeps_meaning(text: str, at: int) -> bool:
    """May a lone item inside the bracket at `at` take a trailing comma? In a call, a list, a
    dict or a set it may; in a subscript (`params["W"]` -> `params["W",]`, a tuple key) or a
    parenthesised expression (`(a)` -> `(a,)`, a tuple) it would change what the line means."""
    follows_value = at > 0 and (text[at - 1].isalnum() or text[at - 1] in "_)]")
    return {"(": follows_value, "[": not follows_value, "{": True}[text[at]]


def fit_all(lines: list[str], indent: str = "") -> list[str]:
    """fit() every line; the results carry no indent of their own beyond nested hanging ones."""
    out = []
    for line in lines:
        out += [x[len(indent):] for x in fit(line, indent)]
    return out


def string_literal(text: str, indent: str, width: int = WIDTH) -> str:
    """A Python string literal, split into adjacent literals if it is long."""
    if len(indent) + len(text) + 2 <= width:
        return f'"{text}"'
    pieces = textwrap.wrap(text, width - len(indent) - 4, drop_whitespace=False, break_on_hyphens=False)
    return ("\n" + indent).join(f'"{p}"' for p in pieces)


def def_lines(name: str, params: list[str], returns: str) -> str:
    """A `def` header: on one line if it fits, else one parameter per line."""
    one = f"def {name}({', '.join(params)}) -> {returns}:"
    if len(one) <= WIDTH:
        return one
    return "\n".join([f"def {name}("] + [f"    {p}," for p in params] + [f") -> {returns}:"])
