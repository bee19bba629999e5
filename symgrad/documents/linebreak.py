"""Long formulas broken into lines, as a textbook sets them, for the page widths of PDF and HTML.

A formula is cut before a top-level `=`, `+`, `-` or `\\odot` (outside every `{...}` group
and environment), so that each line stays within a width budget. Stretchy fences cannot span
lines, so `\\left( ... \\right)` becomes `\\bigl( ... \\bigr)` in LaTeX (and plain parentheses in
HTML), which may. Widths are estimated from the LaTeX source: visible characters, a command
such as `\\sigma` as one, a subscript at two thirds, a fraction as its wider part.
"""
from __future__ import annotations

import re

_COMMAND = re.compile(r"\\([A-Za-z]+)")
_FENCES_TEX = ((r"\left(", r"\bigl("), (r"\right)", r"\bigr)"), (r"\left[", r"\bigl["),
               (r"\right]", r"\bigr]"), (r"\left\{", r"\bigl\{"), (r"\right\}", r"\bigr\}"),
               (r"\left|", r"\bigl|"), (r"\right|", r"\bigr|"), (r"\middle|", r"\bigm|"),
               (r"\left\vert", r"\bigl|"), (r"\right\vert", r"\bigr|"), (r"\left.", ""),
               (r"\right.", ""))
_SILENT = {"left", "right", "bigl", "bigr", "bigm", "mathrm", "operatorname", "text", "mathbb", "boxed",
           "displaystyle", "limits", "quad", "qquad", "top", "middle", "begin", "end"}


def unfenced(latex: str) -> str:
    """`\\left( ... \\right)` -> `\\bigl( ... \\bigr)`: fences that a line break may separate."""
    for old, new in _FENCES_TEX:
        latex = latex.replace(old, new)
    return latex


def width(latex: str) -> float:
    """An estimate of the printed width in characters of the upright text size."""
    total, depth_scale, i = 0.0, [1.0], 0
    script_next = False
    while i < len(latex):
        c = latex[i]
        if c == "\\":
            m = _COMMAND.match(latex, i)
            if m is None:
                i += 2
                total += depth_scale[-1]
                continue
            name = m.group(1)
            i = m.end()
            if name == "frac":
                a, i = _group(latex, i)
                b, i = _group(latex, i)
                total += max(width(a), width(b)) * depth_scale[-1] * 0.9
            elif name in ("begin", "end"):
                _, i = _group(latex, i)
            elif name not in _SILENT:
                total += depth_scale[-1] * (1.6 if name == "odot" else 1.0)
            continue
        if c in "^_":
            script_next = True
            i += 1
            continue
        if c == "{":
            depth_scale.append(depth_scale[-1] * (0.7 if script_next else 1.0))
            script_next = False
        elif c == "}":
            if len(depth_scale) > 1:
                depth_scale.pop()
        elif c != " ":
            total += depth_scale[-1] * (0.7 if script_next else 1.0) * (1.8 if c in "+-=" else 1.0)
            script_next = False
        i += 1
    return total


def _group(latex: str, i: int) -> tuple[str, int]:
    while i < len(latex) and latex[i] == " ":
        i += 1
    if i >= len(latex) or latex[i] != "{":
        return (latex[i:i + 1], i + 1)
    depth = 0
    for j in range(i, len(latex)):
        if latex[j] == "{":
            depth += 1
        elif latex[j] == "}":
            depth -= 1
            if depth == 0:
                return latex[i + 1:j], j + 1
    return latex[i + 1:], len(latex)


def breakpoints(latex: str) -> list[int]:
    """Positions before a top-level `=`, `+`, `-` or `\\odot` (outside braces and environments)."""
    out, depth, env, i = [], 0, 0, 0
    while i < len(latex):
        c = latex[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "\\":
            m = _COMMAND.match(latex, i)
            if m is not None:
                if m.group(1) == "begin":
                    env += 1
                elif m.group(1) == "end":
                    env -= 1
                elif m.group(1) == "odot" and depth == 0 and env == 0:
                    out.append(i)
                i = m.end() if m is not None else i + 2
                continue
            i += 2
            continue
        elif c in "=+-" and depth == 0 and env == 0 and i > 0 and latex[i - 1] == " " \
                and i + 1 < len(latex) and latex[i + 1] == " " and latex[:i].strip():
            out.append(i)
        i += 1
    return out


def lines(latex: str, budget: float) -> list[str]:
    """`latex` cut at breakpoints into lines of at most `budget` (estimated) where it can be."""
    if width(latex) <= budget:
        return [latex]
    cuts = breakpoints(latex)
    out, start, last_ok = [], 0, None
    for cut in [*cuts, len(latex)]:
        if width(latex[start:cut]) > budget and last_ok is not None and last_ok > start:
            out.append(latex[start:last_ok].strip())
            start = last_ok
        last_ok = cut
    out.append(latex[start:].strip())
    return [line for line in out if line]
