"""The generated module, cut into blocks that each carry the equation numbers they implement.

The code generator cites an equation as a comment `# (N) text` before the first line that
computes it. Reading those comments back (rather than asking the code generator again) means
the document shows exactly the module that `symgrad derive` writes, citations included.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

_CITE = re.compile(r"^# \((\d+)\) ")
_CONTINUED = re.compile(r"^#     ")
_CALL = re.compile(r"\b(_[A-Za-z]\w*)\(")


@dataclass(frozen=True)
class Block:
    numbers: tuple[int, ...]  # cited equations; () for setup lines and the return statement
    comments: tuple[str, ...]  # the citing comments, as written in the module
    code: str


def function_body(source: str, name: str) -> list[str]:
    """The dedented body lines of the top-level function `name` (its docstring dropped)."""
    lines = source.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
    except StopIteration:
        raise ValueError(f"the generated module has no function {name!r}") from None
    i = start
    while not lines[i].rstrip().endswith(":"):  # the signature may span several lines
        i += 1
    body = []
    for line in lines[i + 1:]:
        if line and not line.startswith((" ", "\t")):
            break
        body.append(line)
    while body and not body[-1].strip():
        body.pop()
    body = textwrap.dedent("\n".join(body)).splitlines()
    if body and body[0].startswith('"""'):  # the docstring, on one line or several
        end = 0 if body[0].count('"""') >= 2 else next(
            (i for i, line in enumerate(body[1:], 1) if '"""' in line), 0)
        body = body[end + 1:]
    return body


def blocks(body: list[str]) -> list[Block]:
    """Cut a body at its citing comments; consecutive citations form one block."""
    out: list[Block] = []
    numbers: list[int] = []
    comments: list[str] = []
    code: list[str] = []

    def close() -> None:
        if code or numbers:
            out.append(Block(tuple(numbers), tuple(comments), "\n".join(code)))

    for line in body:
        cited = _CITE.match(line)
        if cited or (_CONTINUED.match(line) and comments and not code):
            if cited and code:
                close()
                numbers, comments, code = [], [], []
            if cited:
                numbers.append(int(cited.group(1)))
                comments.append(line)
            else:
                comments[-1] += "\n" + line
            continue
        if line.startswith("return") and code:
            close()
            numbers, comments, code = [], [], []
        code.append(line)
    close()
    return out


def helpers(source: str, code: str) -> list[tuple[str, str]]:
    """(name, source) of the module's private functions that `code` calls, and those that they
    call in turn, in module order."""
    bodies = {}
    for m in re.finditer(r"^def (_\w+)\(", source, flags=re.M):
        first_line_end = source.index("\n", m.start()) + 1
        # the next top-level line; a signature's closing `) -> ...:` is still the function's
        end = re.compile(r"^(?!\))\S", flags=re.M).search(source, first_line_end)
        bodies[m.group(1)] = source[m.start(): end.start() if end else len(source)].rstrip()
    wanted, todo = set(), set(_CALL.findall(code))
    while todo:
        name = todo.pop()
        if name in bodies and name not in wanted:
            wanted.add(name)
            todo |= set(_CALL.findall(bodies[name]))
    return [(name, body) for name, body in bodies.items() if name in wanted]


def cited_equations(source: str) -> dict[int, str]:
    """Equation number -> the comment text citing it, for every citation in the module."""
    out: dict[int, str] = {}
    lines = source.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*# \((\d+)\) (.*)$", line)
        if not m:
            continue
        text = m.group(2)
        j = i + 1
        while j < len(lines) and re.match(r"^\s*#     \S", lines[j]):
            text += " " + lines[j].strip()[1:].strip()
            j += 1
        out.setdefault(int(m.group(1)), text)
    return out
