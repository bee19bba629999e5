"""Short formulas for models that name few intermediates: repeated or long parts get names.

A gradient printed from a graph in which nothing is named repeats whole layers (a GAN's
discriminator appears once per use). Walking the graph bottom-up, every unnamed value that is
used more than once, or whose formula alone is long, gets a fresh name; the formula is then
printed with those names and the names are defined once, in order, as a textbook's "where"
list does. Forward values are named u_1, u_2, ..., backward ones delta_1, delta_2, ....
"""
from __future__ import annotations

from collections import Counter

from symgrad.symbolic.graph import Node, topological
from symgrad.symbolic.printing import Printer

REPEATED = 12  # a value used twice is named when its formula is longer than this (LaTeX chars)
LONG = 110  # any value whose formula is longer than this is named


def trivial(n: Node) -> bool:
    return n.is_leaf or n.op == "const" or (n.op == "broadcast_to" and n.args[0].op == "const")


def view_of_leaf(n: Node) -> bool:
    return n.op in ("transpose", "reshape", "concat") and all(a.is_leaf for a in n.args)


def fresh_name(kind: str, letter: str, count: int, taken: set[str]) -> tuple[int, tuple[str, str]]:
    """The first numbered name after `count` whose LaTeX (`letter`_k) `taken` does not hold:
    (k, (text name, LaTeX name))."""
    while True:
        count += 1
        latex = f"{letter}_{{{count}}}"
        if latex not in taken:
            return count, (f"{kind}{count}", latex)


def shorten(printer: Printer, roots: list[Node], forward: set[Node], taken: set[str],
            defined: set[Node] = frozenset()) -> tuple[Printer, list[tuple[str, Node]]]:
    """A printer that names the repeated and long parts of `roots`, and the definitions a
    reader needs (LaTeX name, node) in an order in which each is defined before it is used:
    the new names and the names the printer had for values not in `defined` (which the
    document defines elsewhere, such as its forward equations)."""
    names = dict(printer.names)
    order = topological(roots)
    uses = Counter(a for n in order for a in set(n.args))
    letters = {"u": "u", "d": r"\delta"}
    counts = {"u": 0, "d": 0}
    added: list[tuple[str, Node]] = []
    current = Printer(names)
    for n in order:
        if trivial(n) or n in roots or view_of_leaf(n):
            continue
        if n in names:
            if n not in defined:
                added.append((names[n][1], n))
            continue
        length = len(current.latex(n, expand=True))
        if (uses[n] >= 2 and length > REPEATED) or length > LONG:
            kind = "u" if n in forward else "d"
            counts[kind], names[n] = fresh_name(kind, letters[kind], counts[kind], taken)
            added.append((names[n][1], n))
            current = Printer(names)
    return current, added
